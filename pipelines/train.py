from zenml import pipeline

from llm_trainer.config import RunConfig
from pipelines.process import process_pipeline
from pipelines.training_rows import rows_to_train_on
from steps import train_model
from steps.names import TRAIN


@pipeline
def train_pipeline(config: RunConfig):
    """process (cached when data and tokenizer settings are unchanged) -> train (SFT, GRPO or DPO by config)."""
    processed_dataset, tokenized_dataset, tokenizer, base_model, _ = process_pipeline(
        data=config.data, model=config.model, seed=config.seed)
    rows = rows_to_train_on(config, processed_dataset, tokenizer, base_model)  # DPO: the verifier's pairs
    adapter, training_metrics, _ = train_model(rows, tokenized_dataset, tokenizer, base_model,
                                               spec=config.train_spec(), id=TRAIN)
    return adapter, training_metrics
