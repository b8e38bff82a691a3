from typing import Annotated, Any

import datasets
from transformers import PreTrainedTokenizerBase
from zenml import get_step_context, log_metadata, step
from zenml.types import HTMLString

from llm_trainer.base_model import BaseModelRef
from llm_trainer.config import TrainSpec
from llm_trainer.reporting import flatten, git_commit, loss_curve_png, png_html
from llm_trainer.training import LoraAdapter, run_folder, run_training
from llm_trainer.training.distributed import machine_rank
from materializers import LoraAdapterMaterializer
from steps import tracking


@step(experiment_tracker=True, output_materializers={"adapter": LoraAdapterMaterializer})
def train_model(
    processed_dataset: datasets.DatasetDict,
    tokenized_dataset: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    base_model: BaseModelRef,
    spec: TrainSpec,
) -> tuple[
    Annotated[LoraAdapter, "adapter"],
    Annotated[dict[str, Any], "training_metrics"],
    Annotated[HTMLString, "loss_curve"],
]:
    """QLoRA training (on the tokenized blocks; GRPO on the processed rows); checkpoints in a run folder keyed by
    config and data, so a re-run resumes."""
    data_fingerprint = tokenized_dataset["train"]._fingerprint
    run_dir = run_folder(spec, data_fingerprint)
    context = get_step_context()
    primary = machine_rank(spec) == 0  # another machine of a multi-machine run trains its share; machine 0 logs
    if primary:
        tracking.start(params=flatten(spec.model_dump(mode="json")),
                       tags={"git_commit": git_commit(), "data_fingerprint": data_fingerprint, "run_dir": str(run_dir),
                             "zenml_run_id": str(context.pipeline_run.id), "zenml_pipeline": context.pipeline.name})

    result = run_training(spec, tokenized_dataset, tokenizer, run_dir, on_metrics=tracking.log_metrics if primary
                          else None, base_model=base_model.name_or_path, processed=processed_dataset)
    if not result.primary:
        return result.adapter, {"run_dir": str(run_dir), "machine_rank": machine_rank(spec)}, HTMLString("")

    png = loss_curve_png(result.history, title=f"{spec.name}: loss")
    (run_dir / "loss_curve.png").write_bytes(png)
    tracking.log_final_metrics(result.metrics)  # at the last step, not step 0
    tracking.log_artifact(run_dir / "loss_curve.png")
    log_metadata(metadata={**result.metrics, "run_dir": str(run_dir)})
    metrics = {**result.metrics, "run_dir": str(run_dir), "base_model": result.adapter.base_model}
    return result.adapter, metrics, HTMLString(png_html(png, f"{spec.name}: loss, and memory per logging step"))
