from zenml import pipeline

from llm_trainer.config import RunConfig
from pipelines.process import process_pipeline
from steps import evaluate_model, load_adapter
from steps.check_splits import check_splits


@pipeline
def evaluate_pipeline(config: RunConfig, adapter_path: str | None = None):
    """process (cached) -> check the test split -> evaluate the adapter, or the base model when no adapter is given."""
    processed_dataset, tokenized_dataset, tokenizer = process_pipeline(
        data=config.data, model=config.model)
    check_splits(processed_dataset, tokenized_dataset, data=config.data, needed=["test"], purpose="evaluate")
    if adapter_path is None:
        evaluate_model(processed_dataset, tokenized_dataset, tokenizer, config=config, label="base",
                       id="evaluate_base", after="check_splits")
    else:
        adapter = load_adapter(adapter_path=adapter_path)
        evaluate_model(processed_dataset, tokenized_dataset, tokenizer, config=config, label="fine-tuned",
                       adapter=adapter, id="evaluate_finetuned", after="check_splits")
