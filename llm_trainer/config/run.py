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

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Experiment name: the MLflow "
                      "experiment, the run folder under output_dir, the default registered model name.")
    seed: int = Field(42, description="Seed of LoRA's initialisation, the data order and the tiny model; part "
                      "of the run folder's key.")
    output_dir: str = Field("outputs", description="Folder of the run folders: <output_dir>/<name>/<run key>.")
    data: DataConfig = Field(description="Where the rows come from, and how they are cleaned, split and tokenized.")
    model: ModelConfig = Field(description="The base model and how it loads.")
    lora: LoraSettings = Field(LoraSettings(), description="The LoRA adapter (peft's LoraConfig).")
    training: TrainingConfig = Field(TrainingConfig(), description="The trainer and its TrainingArguments.")
    evaluation: EvaluationConfig = Field(EvaluationConfig(), description="How the base and the fine-tuned model "
                                         "are scored.")
    registry: RegistryConfig = Field(RegistryConfig(), description="The registered model and its promotion gate.")
    zenml: ZenMLConfig = Field(ZenMLConfig(), description="Where and how the pipelines run.")
    hardware: HardwareEstimate = Field(HardwareEstimate(), description="The card the run is sized for (overlays in "
                                       "configs/cards/), for the estimate of training time.")

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
        t = self.training
        judges = t.trainer == "grpo" or (t.trainer == "dpo" and t.dpo.pairs == "verifier")
        return TrainSpec(**sections, scoring=self.evaluation.scoring() if judges else None)

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

    name: str = Field(description="RunConfig.name.")
    seed: int = Field(description="RunConfig.seed.")
    output_dir: str = Field(description="RunConfig.output_dir.")
    data: DataConfig = Field(description="RunConfig.data.")
    model: ModelConfig = Field(description="RunConfig.model.")
    lora: LoraSettings = Field(description="RunConfig.lora.")
    training: TrainingConfig = Field(description="RunConfig.training.")
    scoring: ScoringSpec | None = Field(None, description="The evaluation's judging settings, for GRPO's rewards "
                                        "(None for SFT).")

    def section_hash(self, *sections: str) -> str:
        """A short hash of some sections, for the run folder's key (as RunConfig.section_hash)."""
        return section_hash(self, *sections)


class ModelVersionSpec(Section):
    """The registered model a run's adapter goes to. The version is named when the run runs, from ``config_key``
    and the fingerprint of the data that run read: an unchanged run lands on its earlier version, changed data
    (a scheduled run on new data, say) on a new one."""

    name: str = Field(description="The registered model's name: registry.model_name, else the run name.")
    config_key: str = Field(description="Hash of the sections that make the adapter, and the seed.")
    tags: list[str] = Field([], description="zenml.tags.")
    description: str = Field("", description="The model version's description.")
    made_from: TrainSpec | None = Field(None, description="The sections that made the adapter: its model card, "
                                        "the served settings.")
    max_new_tokens: int = Field(256, description="What the registered (served) model generates per answer, at "
                                "most.")
    batch_size: int = Field(8, description="Prompts generated together when the registered model answers.")

    def version_name(self, source_fingerprint: str) -> str:
        """The model version's name: the config key, then the first 8 digits of the data fingerprint."""
        return f"{self.config_key}-{source_fingerprint[:8]}"


class EvalSpec(Section):
    """The sections evaluation reads: the evaluate steps' one typed input."""

    name: str = Field(description="RunConfig.name.")
    seed: int = Field(description="RunConfig.seed.")
    data: DataConfig = Field(description="RunConfig.data.")
    model: ModelConfig = Field(description="RunConfig.model.")
    evaluation: EvaluationConfig = Field(description="RunConfig.evaluation.")
