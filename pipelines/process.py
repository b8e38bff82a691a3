from zenml import pipeline

from llm_trainer.config import DataConfig, ModelConfig
from steps import load_data, preprocess, tokenize


@pipeline
def process_pipeline(data: DataConfig, model: ModelConfig, source_fingerprint: str):
    """load -> preprocess -> tokenize."""
    raw_dataset = load_data(data=data, source_fingerprint=source_fingerprint)
    processed_dataset, _ = preprocess(raw_dataset, data=data)
    tokenized_dataset, tokenizer, _ = tokenize(processed_dataset, data=data, model=model)
    return processed_dataset, tokenized_dataset, tokenizer
