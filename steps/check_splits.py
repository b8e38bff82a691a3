import datasets
from zenml import step

from llm_trainer.config import DataConfig
from llm_trainer.data.base import check_needed_splits


@step
def check_splits(processed_dataset: datasets.DatasetDict, tokenized_dataset: datasets.DatasetDict, data: DataConfig,
                 needed: list[str], purpose: str) -> None:
    """Stop before the heavy steps, in one line, when a split they need is empty (e.g. data.splits.test: 0)."""
    check_needed_splits(processed_dataset, tokenized_dataset, data, needed, purpose)
