from zenml import pipeline

from llm_trainer.config import RunConfig
from pipelines.process import process_pipeline
from steps import evaluate_model, load_adapter
from steps.check_splits import check_splits
from steps.names import CHECK_SPLITS, EVALUATE_BASE, EVALUATE_FINETUNED, LOAD_ADAPTER


@pipeline
def evaluate_pipeline(config: RunConfig, adapter_path: str | None = None):
    """process (cached) -> check the test split -> evaluate the adapter, or the base model when no adapter is given."""
    processed_dataset, tokenized_dataset, tokenizer, base_model, _ = process_pipeline(
        data=config.data, model=config.model, seed=config.seed)
    check_splits(processed_dataset, tokenized_dataset, data=config.data, needed=["test"], purpose="evaluate",
                 id=CHECK_SPLITS)
    spec = config.eval_spec()
    if adapter_path is None:
        evaluate_model(processed_dataset, tokenized_dataset, tokenizer, base_model, spec=spec, label="base",
                       id=EVALUATE_BASE, after=CHECK_SPLITS)
    else:
        adapter = load_adapter(adapter_path=adapter_path, id=LOAD_ADAPTER)
        evaluate_model(processed_dataset, tokenized_dataset, tokenizer, base_model, spec=spec, label="fine-tuned",
                       adapter=adapter, id=EVALUATE_FINETUNED, after=CHECK_SPLITS)
