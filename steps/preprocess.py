from typing import Annotated, Any

import datasets
from zenml import log_metadata, step

from llm_trainer.config import DataConfig
from llm_trainer.data import build_processor
from materializers import HFDatasetMaterializer


@step(output_materializers={"processed_dataset": HFDatasetMaterializer})
def preprocess(
    raw_dataset: datasets.Dataset, data: DataConfig
) -> tuple[Annotated[datasets.DatasetDict, "processed_dataset"], Annotated[dict[str, Any], "preprocess_report"]]:
    """Clean, format into chat messages, drop and count bad rows, de-duplicate, split."""
    processed, report = build_processor(data).preprocess(raw_dataset)
    log_metadata(metadata=report)
    return processed, report
