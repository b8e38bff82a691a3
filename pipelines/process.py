from zenml import pipeline

from llm_trainer.config import DataConfig, ModelConfig
from steps import fingerprint_source, load_data, prepare_base_model, preprocess, tokenize
from steps.names import BASE_MODEL, FINGERPRINT_SOURCE, LOAD_DATA, PREPROCESS, TOKENIZE


@pipeline
def process_pipeline(data: DataConfig, model: ModelConfig, seed: int):
    """fingerprint the source -> load (cached while the fingerprint is unchanged) -> preprocess -> tokenize ->
    resolve the base model (the tiny model is built here, from the train split, and travels as an artifact)."""
    source_fingerprint = fingerprint_source(data=data, id=FINGERPRINT_SOURCE)
    raw_dataset = load_data(data=data, source_fingerprint=source_fingerprint, id=LOAD_DATA)
    processed_dataset, _, _ = preprocess(raw_dataset, data=data, id=PREPROCESS)
    tokenized_dataset, tokenizer, _, _ = tokenize(processed_dataset, data=data, model=model, id=TOKENIZE)
    base_model = prepare_base_model(processed_dataset, tokenizer, model=model, seed=seed, id=BASE_MODEL)
    return processed_dataset, tokenized_dataset, tokenizer, base_model, source_fingerprint
