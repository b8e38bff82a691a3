from typing import Annotated, Any

import datasets
from transformers import PreTrainedTokenizerBase
from zenml import log_metadata, step

from llm_trainer.config import DataConfig, ModelConfig
from llm_trainer.data import build_processor
from llm_trainer.modeling import prepare_tokenizer
from materializers import HFDatasetMaterializer, HFTokenizerMaterializer


@step(output_materializers={"tokenized_dataset": HFDatasetMaterializer, "tokenizer": HFTokenizerMaterializer})
def tokenize(
    processed_dataset: datasets.DatasetDict, data: DataConfig, model: ModelConfig
) -> tuple[
    Annotated[datasets.DatasetDict, "tokenized_dataset"],
    Annotated[PreTrainedTokenizerBase, "tokenizer"],
    Annotated[dict[str, Any], "tokenize_report"],
]:
    """Apply the chat template, mask the prompt, drop or truncate over-long rows, pack."""
    tokenizer = prepare_tokenizer(model, processed_dataset["train"])
    tokenized, report = build_processor(data).tokenize(processed_dataset, tokenizer)
    log_metadata(metadata=report)
    return tokenized, tokenizer, report
