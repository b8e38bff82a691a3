from zenml import pipeline

from llm_trainer.config import DataConfig, ModelConfig
from steps import fingerprint_source, load_data, preprocess, tokenize


@pipeline
def process_pipeline(data: DataConfig, model: ModelConfig):
    """fingerprint the source -> load (cached while the fingerprint is unchanged) -> preprocess -> tokenize."""
    raw_dataset = load_data(data=data, source_fingerprint=fingerprint_source(data=data))
    processed_dataset, _, _ = preprocess(raw_dataset, data=data)
    tokenized_dataset, tokenizer, _, _ = tokenize(processed_dataset, data=data, model=model)
    return processed_dataset, tokenized_dataset, tokenizer
