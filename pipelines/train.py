from zenml import pipeline

from llm_trainer.config import DataConfig, LoraSettings, ModelConfig, TrainingConfig
from pipelines.process import process_pipeline
from steps import train_model


@pipeline
def train_pipeline(name: str, seed: int, output_dir: str, data: DataConfig, model: ModelConfig,
                   lora: LoraSettings, training: TrainingConfig, source_fingerprint: str):
    """process (cached when data and tokenizer settings are unchanged) -> train."""
    tokenized_dataset, tokenizer = process_pipeline(data=data, model=model, source_fingerprint=source_fingerprint)
    train_model(tokenized_dataset, tokenizer, name=name, seed=seed, output_dir=output_dir, data=data, model=model,
                lora=lora, training=training)
