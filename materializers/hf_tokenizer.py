"""Tokenizers <-> save_pretrained folders."""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import AutoTokenizer, PreTrainedTokenizerBase
from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer

from materializers._folders import local_folder, save_folder


class HFTokenizerMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (PreTrainedTokenizerBase,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def load(self, data_type: type[Any]) -> PreTrainedTokenizerBase:
        return AutoTokenizer.from_pretrained(local_folder(self.uri))

    def save(self, data: PreTrainedTokenizerBase) -> None:
        save_folder(self.uri, data.save_pretrained)

    def extract_metadata(self, data: PreTrainedTokenizerBase) -> dict[str, Any]:
        return {"vocab_size": len(data), "name_or_path": str(data.name_or_path),
                "eos_token": str(data.eos_token), "pad_token": str(data.pad_token)}
