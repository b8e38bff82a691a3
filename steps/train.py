import hashlib
from pathlib import Path
from typing import Annotated, Any

import datasets
from transformers import PreTrainedTokenizerBase
from zenml import get_step_context, log_metadata, step
from zenml.types import HTMLString

from llm_trainer.config import DataConfig, LoraSettings, ModelConfig, RunConfig, TrainingConfig
from llm_trainer.reporting import flatten, git_commit, loss_curve_png, png_html
from llm_trainer.training import LoraAdapter, run_training
from materializers import LoraAdapterMaterializer
from steps import tracking


@step(experiment_tracker=True, output_materializers={"adapter": LoraAdapterMaterializer})
def train_model(
    tokenized_dataset: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    seed: int,
    output_dir: str,
    data: DataConfig,
    model: ModelConfig,
    lora: LoraSettings,
    training: TrainingConfig,
) -> tuple[
    Annotated[LoraAdapter, "adapter"],
    Annotated[dict[str, Any], "training_metrics"],
    Annotated[HTMLString, "loss_curve"],
]:
    """QLoRA training; checkpoints in a run folder keyed by config and data, so a re-run resumes."""
    cfg = RunConfig(name=name, seed=seed, output_dir=output_dir, data=data, model=model, lora=lora, training=training)
    data_fingerprint = tokenized_dataset["train"]._fingerprint
    run_key = hashlib.sha256(f"{cfg.section_hash('data', 'model', 'lora', 'training')}|{data_fingerprint}|{seed}"
                             .encode()).hexdigest()[:12]
    run_dir = Path(output_dir) / name / run_key
    context = get_step_context()
    tracking.start(params=flatten(cfg.model_dump(mode="json", exclude={"evaluation", "registry", "zenml"})),
                   tags={"git_commit": git_commit(), "data_fingerprint": data_fingerprint, "run_dir": str(run_dir),
                         "zenml_run_id": str(context.pipeline_run.id), "zenml_pipeline": context.pipeline.name})

    result = run_training(cfg, tokenized_dataset, tokenizer, run_dir, on_metrics=tracking.log_metrics)

    png = loss_curve_png(result.history, title=f"{name}: loss")
    (run_dir / "loss_curve.png").write_bytes(png)
    tracking.log_final_metrics(result.metrics)  # at the last step, not step 0
    tracking.log_artifact(run_dir / "loss_curve.png")
    log_metadata(metadata={**result.metrics, "run_dir": str(run_dir)})
    metrics = {**result.metrics, "run_dir": str(run_dir), "base_model": result.adapter.base_model}
    return result.adapter, metrics, HTMLString(png_html(png, f"{name}: training and validation loss"))
