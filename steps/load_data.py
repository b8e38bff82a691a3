from typing import Annotated

import datasets
from zenml import log_metadata, step

from llm_trainer.config import DataConfig
from llm_trainer.data import build_processor
from materializers import HFDatasetMaterializer


@step(output_materializers=HFDatasetMaterializer)
def load_data(data: DataConfig, source_fingerprint: str) -> Annotated[datasets.Dataset, "raw_dataset"]:
    """Read the source. ``source_fingerprint`` (an artifact: content hash of local files, or Hub id and
    revision) is cached by value, so this step re-runs exactly when the data changed."""
    raw = build_processor(data).load()
    log_metadata(metadata={"source": data.source, "source_fingerprint": source_fingerprint, "rows": len(raw)})
    return raw
