from typing import Annotated

import datasets
from transformers import PreTrainedTokenizerBase
from zenml import step

from llm_trainer.base_model import BaseModelRef, resolve_base_model
from llm_trainer.config import ModelConfig
from materializers import BaseModelMaterializer


@step(output_materializers={"base_model": BaseModelMaterializer})
def prepare_base_model(processed_dataset: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase,
                       model: ModelConfig, seed: int) -> Annotated[BaseModelRef, "base_model"]:
    """Resolve the base model once, as an artifact: the Hub id and revision, or the built tiny model's files."""
    return resolve_base_model(model, tokenizer, seed, processed_dataset["train"])
