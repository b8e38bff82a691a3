"""RunConfig, the whole experiment YAML as one typed model, and the specs cut from it: the sections one step
reads (TrainSpec, EvalSpec) and the registered model a run's adapter goes to (ModelVersionSpec)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, Field, model_validator

from llm_trainer.config.base import Section
from llm_trainer.config.data import DataConfig
from llm_trainer.config.evaluation import EvaluationConfig, RegistryConfig, ScoringSpec
from llm_trainer.config.model import LoraSettings, ModelConfig
from llm_trainer.config.pipeline import HardwareEstimate, ZenMLConfig
from llm_trainer.config.training import TrainingConfig


class RunConfig(Section):
    """The whole experiment YAML, validated: every section, plus checks that span sections."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Experiment name.")
    seed: int = 42
    output_dir: str = "outputs"
    data: DataConfig
    model: ModelConfig
    lora: LoraSettings = LoraSettings()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    registry: RegistryConfig = RegistryConfig()
    zenml: ZenMLConfig = ZenMLConfig()
    hardware: HardwareEstimate = HardwareEstimate()

    @model_validator(mode="after")
    def _promotion_metric_exists(self) -> RunConfig:
        evaluation = self.evaluation
        named = [("promotion_metric", self.registry.promotion_metric)]
        for key, metric in named + [("guard_metrics", guard) for guard in self.registry.guard_metrics]:
            task = metric.split(".")[1] if metric.startswith("benchmark.") and metric.count(".") >= 2 else None
            if task is not None:
                if task not in evaluation.benchmarks:
                    raise ValueError(f"registry.{key}: '{metric}' needs '{task}' in evaluation.benchmarks "
                                     f"(have: {', '.join(evaluation.benchmarks) or 'none'})")
            elif not evaluation.produces(metric):
                known = ", ".join((*evaluation.metric_names(), *evaluation.metric_families()))
                raise ValueError(f"registry.{key}: '{metric}' is not a metric of the {evaluation.evaluator} "
                                 f"evaluator ({known}, or benchmark.<task>.<metric>)")
        return self

    @model_validator(mode="after")
    def _vllm_needs_a_full_precision_base(self) -> RunConfig:
        # TRL merges LoRA into the 4-bit layers and sends vLLM packed weights without their quantization state
        # (trl/generation/vllm_generation.py; TRL issues #3654, #4973)
        if self.training.grpo.use_vllm and self.model.load_in_4bit:
            raise ValueError("training.grpo.use_vllm: TRL's vLLM generation does not work on a 4-bit base; set "
                             "model.load_in_4bit: false (LoRA on the bf16 base) or use_vllm: false")
        return self

    def section_hash(self, *sections: str) -> str:
        """A short hash of some sections, for cache keys that must change when (only) they change."""
        return section_hash(self, *sections)

    def train_spec(self) -> TrainSpec:
        """The train step's input: the sections training reads (and the scoring settings under GRPO)."""
        sections = {name: getattr(self, name) for name in TrainSpec.model_fields if name != "scoring"}
        # Only a trainer that judges answers reads them: editing them must not re-train an SFT run.
        return TrainSpec(**sections, scoring=self.evaluation.scoring() if self.training.trainer == "grpo" else None)

    def eval_spec(self) -> EvalSpec:
        """The evaluate steps' input: the sections evaluation reads."""
        return EvalSpec(**{name: getattr(self, name) for name in EvalSpec.model_fields})

    def model_version_spec(self) -> ModelVersionSpec:
        """The registered model this run's adapter goes to, keyed by the sections that make it."""
        return ModelVersionSpec(
            name=self.registry.model_name or self.name, tags=self.zenml.tags,
            config_key=f"{self.section_hash('data', 'model', 'lora', 'training', 'evaluation', 'registry')}-{self.seed}",
            description=f"QLoRA adapter for {self.model.base_model} ({self.name})", made_from=self.train_spec(),
            max_new_tokens=self.evaluation.max_new_tokens, batch_size=self.evaluation.batch_size)


def section_hash(spec: BaseModel, *sections: str) -> str:
    """A 16-hex-digit hash of the named sections of ``spec``, for keys that change when they change."""
    payload = {name: _dumped(getattr(spec, name)) for name in sections}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _dumped(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


class TrainSpec(Section):
    """The sections training reads, and nothing else: the train step's one typed input (so that editing
    evaluation, registry or zenml settings neither re-trains nor changes the run folder)."""

    name: str
    seed: int
    output_dir: str
    data: DataConfig
    model: ModelConfig
    lora: LoraSettings
    training: TrainingConfig
    scoring: ScoringSpec | None = None  # the evaluation's judging settings, for GRPO's rewards

    def section_hash(self, *sections: str) -> str:
        """A short hash of some sections, for the run folder's key (as RunConfig.section_hash)."""
        return section_hash(self, *sections)


class ModelVersionSpec(Section):
    """The registered model a run's adapter goes to. The version is named when the run runs, from ``config_key``
    and the fingerprint of the data that run read: an unchanged run lands on its earlier version, changed data
    (a scheduled run on new data, say) on a new one."""

    name: str
    config_key: str
    tags: list[str] = []
    description: str = ""
    made_from: TrainSpec | None = None  # the sections that made the adapter: its model card, the served settings
    max_new_tokens: int = 256  # what the registered (served) model generates per answer, at most
    batch_size: int = 8

    def version_name(self, source_fingerprint: str) -> str:
        """The model version's name: the config key, then the first 8 digits of the data fingerprint."""
        return f"{self.config_key}-{source_fingerprint[:8]}"


class EvalSpec(Section):
    """The sections evaluation reads: the evaluate steps' one typed input."""

    name: str
    seed: int
    data: DataConfig
    model: ModelConfig
    evaluation: EvaluationConfig
