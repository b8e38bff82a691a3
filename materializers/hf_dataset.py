"""datasets.Dataset / DatasetDict <-> Arrow files (save_to_disk), memory-mapped when loaded."""

from __future__ import annotations

from typing import Any, ClassVar

import datasets
from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer

from materializers._folders import folder_content_hash, local_folder, save_folder


class HFDatasetMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (datasets.Dataset, datasets.DatasetDict)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def load(self, data_type: type[Any]) -> datasets.Dataset | datasets.DatasetDict:
        return datasets.load_from_disk(local_folder(self.uri))

    def save(self, data: datasets.Dataset | datasets.DatasetDict) -> None:
        def write(folder: str) -> None:
            shown = datasets.utils.logging.is_progress_bar_enabled()
            datasets.disable_progress_bars()  # one "Saving the dataset" bar per split and step says nothing
            try:
                data.save_to_disk(folder, num_shards=_shards_for_empty(data))
            finally:
                if shown:
                    datasets.enable_progress_bars()

        save_folder(self.uri, write)

    def compute_content_hash(self, data: datasets.Dataset | datasets.DatasetDict) -> str | None:
        return folder_content_hash(self.uri)

    def extract_metadata(self, data: datasets.Dataset | datasets.DatasetDict) -> dict[str, Any]:
        if isinstance(data, datasets.DatasetDict):
            return {"rows": {name: len(split) for name, split in data.items()},
                    "columns": sorted({c for split in data.values() for c in split.column_names})}
        return {"rows": len(data), "columns": list(data.column_names)}


def _shards_for_empty(data: datasets.Dataset | datasets.DatasetDict) -> Any:
    """datasets writes an empty split as zero Arrow files, which load_from_disk cannot read back: one file."""
    if isinstance(data, datasets.DatasetDict):
        return {name: 1 if len(split) == 0 else None for name, split in data.items()}
    return 1 if len(data) == 0 else None
