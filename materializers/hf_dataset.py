"""datasets.Dataset / DatasetDict <-> Arrow files (save_to_disk), memory-mapped when loaded."""

from __future__ import annotations

from typing import Any, ClassVar

import datasets
from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer

from materializers._folders import local_folder, save_folder


class HFDatasetMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (datasets.Dataset, datasets.DatasetDict)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def load(self, data_type: type[Any]) -> datasets.Dataset | datasets.DatasetDict:
        return datasets.load_from_disk(local_folder(self.uri))

    def save(self, data: datasets.Dataset | datasets.DatasetDict) -> None:
        save_folder(self.uri, lambda folder: data.save_to_disk(folder))

    def extract_metadata(self, data: datasets.Dataset | datasets.DatasetDict) -> dict[str, Any]:
        if isinstance(data, datasets.DatasetDict):
            return {"rows": {name: len(split) for name, split in data.items()},
                    "columns": sorted({c for split in data.values() for c in split.column_names})}
        return {"rows": len(data), "columns": list(data.column_names)}
