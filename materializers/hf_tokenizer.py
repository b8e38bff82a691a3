"""Tokenizers <-> save_pretrained folders, with the config's trust_remote_code recorded beside them: a tokenizer
with custom code reloads only if the user allowed remote code, and never more than that."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from transformers import AutoTokenizer, PreTrainedTokenizerBase
from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer

from materializers._folders import folder_content_hash, local_folder, save_folder


TRUST_FILE = "llm_trainer_tokenizer.json"


class HFTokenizerMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (PreTrainedTokenizerBase,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def load(self, data_type: type[Any]) -> PreTrainedTokenizerBase:
        folder = Path(local_folder(self.uri))
        marker = folder / TRUST_FILE
        trust = json.loads(marker.read_text()).get("trust_remote_code", False) if marker.is_file() else False
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)
        tokenizer.llm_trainer_trust_remote_code = trust
        return tokenizer

    def save(self, data: PreTrainedTokenizerBase) -> None:
        trust = bool(getattr(data, "llm_trainer_trust_remote_code", False))

        def write(folder: str) -> None:
            data.save_pretrained(folder)
            (Path(folder) / TRUST_FILE).write_text(json.dumps({"trust_remote_code": trust}))

        save_folder(self.uri, write)

    def compute_content_hash(self, data: PreTrainedTokenizerBase) -> str | None:
        return folder_content_hash(self.uri)

    def extract_metadata(self, data: PreTrainedTokenizerBase) -> dict[str, Any]:
        return {"vocab_size": len(data), "name_or_path": str(data.name_or_path),
                "eos_token": str(data.eos_token), "pad_token": str(data.pad_token)}
