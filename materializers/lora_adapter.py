"""LoraAdapter <-> its folder (adapter safetensors, adapter_config.json, tokenizer) plus the base model id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer

from llm_trainer.training import LoraAdapter
from llm_trainer.training.base import ADAPTER_INFO_FILE
from materializers._folders import folder_content_hash, local_folder, save_folder


class LoraAdapterMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (LoraAdapter,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def load(self, data_type: type[Any]) -> LoraAdapter:
        return LoraAdapter.from_folder(local_folder(self.uri))

    def save(self, data: LoraAdapter) -> None:
        def write(folder: str) -> None:
            shutil.copytree(data.path, folder, dirs_exist_ok=True)
            (Path(folder) / ADAPTER_INFO_FILE).write_text(json.dumps({"base_model": data.base_model}))

        save_folder(self.uri, write)

    def compute_content_hash(self, data: LoraAdapter) -> str | None:
        # Not the info file: it names where the base model artifact lies, which moves when processing runs again
        # (adapter_config.json, hashed, names the base model the adapter was trained on).
        return folder_content_hash(self.uri, ignore=(ADAPTER_INFO_FILE,))

    def extract_metadata(self, data: LoraAdapter) -> dict[str, Any]:
        config = json.loads((Path(data.path) / "adapter_config.json").read_text())
        size = sum(f.stat().st_size for f in Path(data.path).glob("*.safetensors"))
        return {"base_model": data.base_model, "r": config.get("r"), "lora_alpha": config.get("lora_alpha"),
                "adapter_bytes": size}
