from typing import Annotated, Any

import datasets
from transformers import PreTrainedTokenizerBase
from zenml import log_metadata, step
from zenml.types import HTMLString

from llm_trainer.config import DataConfig, ModelConfig
from llm_trainer.data import build_processor
from llm_trainer.base_model import prepare_tokenizer
from llm_trainer.reporting import png_html, token_length_png
from materializers import HFDatasetMaterializer, HFTokenizerMaterializer


@step(output_materializers={"tokenized_dataset": HFDatasetMaterializer, "tokenizer": HFTokenizerMaterializer})
def tokenize(
    processed_dataset: datasets.DatasetDict, data: DataConfig, model: ModelConfig
) -> tuple[
    Annotated[datasets.DatasetDict, "tokenized_dataset"],
    Annotated[PreTrainedTokenizerBase, "tokenizer"],
    Annotated[dict[str, Any], "tokenize_report"],
    Annotated[HTMLString, "token_lengths"],
]:
    """Apply the chat template, mask the prompt, drop or truncate over-long rows, pack."""
    tokenizer = prepare_tokenizer(model, processed_dataset["train"])
    tokenized, report = build_processor(data).tokenize(processed_dataset, tokenizer)
    histograms = {name: split.pop("length_histogram") for name, split in report["splits"].items()
                  if "length_histogram" in split}
    log_metadata(metadata=report)
    chart = token_length_png(histograms, data.max_seq_length)
    return tokenized, tokenizer, {**report, "length_histograms": histograms}, HTMLString(
        png_html(chart, "token lengths per split"))
