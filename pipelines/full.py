from zenml import pipeline

from llm_trainer.config import RunConfig
from pipelines.process import process_pipeline
from steps import evaluate_model, register_model, train_model
from steps.check_splits import check_splits


@pipeline
def full_pipeline(config: RunConfig):
    """process -> check splits -> train -> evaluate(base), evaluate(fine-tuned) on the same test rows -> register."""
    processed_dataset, tokenized_dataset, tokenizer = process_pipeline(
        data=config.data, model=config.model)
    check_splits(processed_dataset, tokenized_dataset, data=config.data, needed=["train", "test"], purpose="full")
    adapter, _, _ = train_model(
        tokenized_dataset, tokenizer, name=config.name, seed=config.seed, output_dir=config.output_dir,
        data=config.data, model=config.model, lora=config.lora, training=config.training, after="check_splits")
    base_metrics, _, _ = evaluate_model(processed_dataset, tokenized_dataset, tokenizer, config=config,
                                        label="base", id="evaluate_base", after="check_splits")
    finetuned_metrics, _, _ = evaluate_model(processed_dataset, tokenized_dataset, tokenizer, config=config,
                                             label="fine-tuned", adapter=adapter, id="evaluate_finetuned")
    register_model(adapter, finetuned_metrics, base_metrics, registry=config.registry)
