from typing import Annotated, Any

import datasets
from zenml import log_metadata, step
from zenml.types import HTMLString

from llm_trainer.config import DataConfig
from llm_trainer.data import build_processor
from llm_trainer.reporting import drop_counts_png, png_html
from materializers import HFDatasetMaterializer


@step(output_materializers={"processed_dataset": HFDatasetMaterializer})
def preprocess(
    raw_dataset: datasets.Dataset, data: DataConfig
) -> tuple[
    Annotated[datasets.DatasetDict, "processed_dataset"],
    Annotated[dict[str, Any], "preprocess_report"],
    Annotated[HTMLString, "drop_counts"],
]:
    """Clean, format into chat messages, drop and count bad rows, de-duplicate, split."""
    processed, report = build_processor(data).preprocess(raw_dataset)
    log_metadata(metadata=report)
    chart = drop_counts_png(report["rows_kept"], report["dropped"])
    return processed, report, HTMLString(png_html(chart, f"{report['rows_read']} rows read"))
