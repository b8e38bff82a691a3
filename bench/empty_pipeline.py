"""A ZenML pipeline with the full pipeline's shape and trivial step bodies: the orchestration baseline.

Same eight steps (fingerprint_source, never cached; load_data, preprocess, tokenize, train_model,
evaluate_base, evaluate_finetuned, register_model), the same outputs per step and the same wiring as
pipelines/full.py and pipelines/process.py, but each body returns small constants and there is no
experiment tracker or model version. Run it as ``python -m bench.empty_pipeline``; it prints one JSON line
with the run's status and its wall time inside Python (after imports).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from bench.common import ROOT  # noqa: F401 - sets up the benchmark's isolated state before zenml loads
from zenml import pipeline, step


@step(enable_cache=False)
def fingerprint_source(source: str) -> Annotated[str, "source_fingerprint"]:
    return source[::-1]  # never cached, like the project's step: it decides whether load_data re-runs


@step
def load_data(source_fingerprint: str) -> Annotated[int, "raw_dataset"]:
    return len(source_fingerprint)


@step
def preprocess(raw_dataset: int) -> tuple[Annotated[int, "processed_dataset"],
                                          Annotated[dict[str, Any], "preprocess_report"],
                                          Annotated[str, "drop_counts"]]:
    return raw_dataset, {"rows": raw_dataset}, "<p>drops</p>"


@step
def tokenize(processed_dataset: int) -> tuple[Annotated[int, "tokenized_dataset"], Annotated[str, "tokenizer"],
                                             Annotated[dict[str, Any], "tokenize_report"],
                                             Annotated[str, "token_lengths"]]:
    return processed_dataset, "tokenizer", {"tokens": processed_dataset}, "<p>lengths</p>"


@step
def train_model(tokenized_dataset: int, tokenizer: str, seed: int) -> tuple[
        Annotated[str, "adapter"], Annotated[dict[str, Any], "training_metrics"], Annotated[str, "loss_curve"]]:
    return f"adapter-{seed}", {"loss": 0.0}, "<p>curve</p>"


@step
def evaluate_model(processed_dataset: int, tokenized_dataset: int, tokenizer: str, label: str,
                   adapter: str | None = None) -> tuple[Annotated[dict[str, Any], "evaluation_metrics"],
                                                        Annotated[list[int], "evaluation_examples"],
                                                        Annotated[str, "evaluation_report"]]:
    return {"model": label, "eval_loss": 1.0}, [processed_dataset], "<p>report</p>"


@step
def register_model(adapter: str, finetuned_metrics: dict[str, Any], base_metrics: dict[str, Any]) -> tuple[
        Annotated[dict[str, Any], "promotion_decision"], Annotated[str, "promotion_report"],
        Annotated[str, "versions_comparison"]]:
    return {"promote": finetuned_metrics["eval_loss"] <= base_metrics["eval_loss"]}, "<p>decision</p>", "<table/>"


@pipeline
def empty_full_pipeline(source: str, seed: int):
    raw_dataset = load_data(source_fingerprint=fingerprint_source(source=source))
    processed_dataset, _, _ = preprocess(raw_dataset)
    tokenized_dataset, tokenizer, _, _ = tokenize(processed_dataset)
    adapter, _, _ = train_model(tokenized_dataset, tokenizer, seed=seed)
    base_metrics, _, _ = evaluate_model(processed_dataset, tokenized_dataset, tokenizer, label="base",
                                        id="evaluate_base")
    finetuned_metrics, _, _ = evaluate_model(processed_dataset, tokenized_dataset, tokenizer, label="fine-tuned",
                                             adapter=adapter, id="evaluate_finetuned")
    register_model(adapter, finetuned_metrics, base_metrics)


def main() -> None:
    started = time.perf_counter()
    run = empty_full_pipeline.with_options(enable_cache=True, run_name="bench-empty-{date}-{time}")(
        source="data/sample/natural_reasoning_sample.jsonl", seed=42)
    seconds = time.perf_counter() - started
    from zenml.client import Client

    run = Client().get_pipeline_run(run.id)
    steps = {name: str(step_run.status.value) for name, step_run in run.steps.items()}
    print(json.dumps({"status": str(run.status.value), "seconds": round(seconds, 3), "steps": steps}), flush=True)


if __name__ == "__main__":
    main()
