from zenml import pipeline

from llm_trainer.config import RunConfig
from pipelines.process import process_pipeline
from steps import train_model
from steps.names import TRAIN


@pipeline
def train_pipeline(config: RunConfig):
    """process (cached when data and tokenizer settings are unchanged) -> train (SFT, or GRPO by config)."""
    processed_dataset, tokenized_dataset, tokenizer, base_model, _ = process_pipeline(
        data=config.data, model=config.model, seed=config.seed)
    adapter, training_metrics, _ = train_model(processed_dataset, tokenized_dataset, tokenizer, base_model,
                                               spec=config.train_spec(), id=TRAIN)
    return adapter, training_metrics
