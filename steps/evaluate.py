from typing import Annotated, Any

import datasets
from transformers import PreTrainedTokenizerBase
from zenml import log_metadata, step
from zenml.types import HTMLString

from llm_trainer.base_model import BaseModelRef
from llm_trainer.config import EvalSpec
from llm_trainer.evaluation import evaluate_model_on_test
from llm_trainer.evaluation.report import evaluation_html
from llm_trainer.training import LoraAdapter
from materializers import HFDatasetMaterializer
from steps import tracking


@step(experiment_tracker=True, output_materializers={"evaluation_examples": HFDatasetMaterializer})
def evaluate_model(
    processed_dataset: datasets.DatasetDict,
    tokenized_dataset: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    base_model: BaseModelRef,
    spec: EvalSpec,
    label: str,
    adapter: LoraAdapter | None = None,
) -> tuple[
    Annotated[dict[str, Any], "evaluation_metrics"],
    Annotated[datasets.Dataset, "evaluation_examples"],
    Annotated[HTMLString, "evaluation_report"],
]:
    """Generate on the test split and score; ``adapter=None`` evaluates the base model."""
    result = evaluate_model_on_test(spec, tokenizer, base_model.name_or_path, adapter.path if adapter else None,
                                    processed_dataset["test"], tokenized_dataset["test"])
    metrics = {**result.metrics, "model": label}
    tracking.log_metrics({f"{label}.{k}": v for k, v in result.metrics.items()})
    log_metadata(metadata=result.metrics)
    examples = datasets.Dataset.from_list(result.examples) if result.examples else datasets.Dataset.from_dict({})
    html = evaluation_html(f"{spec.name}: {label}", result.metrics, result.examples)
    return metrics, examples, HTMLString(html)
