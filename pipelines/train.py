from zenml import pipeline

from llm_trainer.config import RunConfig
from pipelines.process import process_pipeline
from steps import train_model


@pipeline
def train_pipeline(config: RunConfig):
    """process (cached when data and tokenizer settings are unchanged) -> train."""
    _, tokenized_dataset, tokenizer = process_pipeline(data=config.data, model=config.model)
    adapter, training_metrics, _ = train_model(
        tokenized_dataset, tokenizer, name=config.name, seed=config.seed, output_dir=config.output_dir,
        data=config.data, model=config.model, lora=config.lora, training=config.training)
    return adapter, training_metrics
