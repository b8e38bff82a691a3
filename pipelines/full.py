from zenml import pipeline

from llm_trainer.config import RunConfig
from pipelines.process import process_pipeline
from pipelines.training_rows import rows_to_train_on
from steps import evaluate_model, register_model, train_model
from steps.check_splits import check_splits
from steps.names import CHECK_SPLITS, EVALUATE_BASE, EVALUATE_FINETUNED, REGISTER, TRAIN


@pipeline
def full_pipeline(config: RunConfig):
    """process -> check splits -> (DPO: pairs from the starting adapter) -> train -> evaluate(base),
    evaluate(fine-tuned) on the same test rows -> register. Each step gets the config sections it reads and nothing else, so that its cache key is honest."""
    processed_dataset, tokenized_dataset, tokenizer, base_model, source_fingerprint = process_pipeline(
        data=config.data, model=config.model, seed=config.seed)
    check_splits(processed_dataset, tokenized_dataset, data=config.data, needed=["train", "test"], purpose="full",
                 id=CHECK_SPLITS)
    rows = rows_to_train_on(config, processed_dataset, tokenizer, base_model)  # DPO: the verifier's pairs
    adapter, _, _ = train_model(rows, tokenized_dataset, tokenizer, base_model,
                                spec=config.train_spec(), id=TRAIN, after=CHECK_SPLITS)
    spec = config.eval_spec()
    base_metrics, _, _ = evaluate_model(processed_dataset, tokenized_dataset, tokenizer, base_model, spec=spec,
                                        label="base", id=EVALUATE_BASE, after=CHECK_SPLITS)
    finetuned_metrics, _, _ = evaluate_model(processed_dataset, tokenized_dataset, tokenizer, base_model, spec=spec,
                                             label="fine-tuned", adapter=adapter, id=EVALUATE_FINETUNED)
    register_model(adapter, finetuned_metrics, base_metrics, source_fingerprint, registry=config.registry,
                   version=config.model_version_spec(), id=REGISTER)
