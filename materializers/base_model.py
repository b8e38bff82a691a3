"""BaseModelRef <-> a JSON file, plus the model's files when this project built it (the tiny model): a train or
evaluate step on another machine loads the base model from the artifact store, not from a local cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer

from llm_trainer.base_model import BaseModelRef
from materializers._folders import folder_content_hash, local_folder, save_folder

REF_FILE = "base_model.json"
MODEL_FOLDER = "model"


class BaseModelMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (BaseModelRef,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def load(self, data_type: type[Any]) -> BaseModelRef:
        folder = Path(local_folder(self.uri))
        ref = json.loads((folder / REF_FILE).read_text())
        if ref["built"]:
            return BaseModelRef(str(folder / MODEL_FOLDER), built=True)
        return BaseModelRef(ref["name_or_path"], revision=ref["revision"])

    def save(self, data: BaseModelRef) -> None:
        def write(folder: str) -> None:
            if data.built:
                shutil.copytree(data.name_or_path, Path(folder) / MODEL_FOLDER, dirs_exist_ok=True)
            (Path(folder) / REF_FILE).write_text(json.dumps({"name_or_path": data.name_or_path,
                                                             "revision": data.revision, "built": data.built}))

        save_folder(self.uri, write)

    def compute_content_hash(self, data: BaseModelRef) -> str | None:
        return folder_content_hash(self.uri)

    def extract_metadata(self, data: BaseModelRef) -> dict[str, Any]:
        metadata: dict[str, Any] = {"base_model": data.name_or_path if not data.built else "built (tiny model)",
                                    "revision": str(data.revision), "built": data.built}
        if data.built:
            metadata["bytes"] = sum(f.stat().st_size for f in Path(data.name_or_path).rglob("*") if f.is_file())
        return metadata
