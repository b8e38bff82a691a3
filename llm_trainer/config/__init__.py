"""The whole experiment YAML as one typed pydantic model, validated before any heavy work starts.

Field names follow the libraries users know: transformers' TrainingArguments, peft's LoraConfig and
BitsAndBytesConfig. Unknown keys and wrong types are errors that name the key path.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from llm_trainer.errors import ConfigError
from llm_trainer.fsutil import read_text_file

from llm_trainer.config.base import TINY_MODEL_NAME, Section  # noqa: F401
from llm_trainer.config.data import SplitFractions, DataConfig  # noqa: F401
from llm_trainer.config.model import TinyModelConfig, ModelConfig, LoraSettings  # noqa: F401
from llm_trainer.config.training import DistributedConfig, GRPO_LOSS_TYPES, GrpoConfig, TrainingConfig  # noqa: F401
from llm_trainer.config.evaluation import JudgeConfig, EvaluationConfig, RegistryConfig, ScoringSpec  # noqa: F401
from llm_trainer.config.pipeline import StepResources, StepResourcesByStep, DockerConfig, ZenMLConfig, HardwareEstimate  # noqa: F401


class RunConfig(Section):
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
        known = self.evaluation.metric_names()
        named = [("promotion_metric", self.registry.promotion_metric)]
        for key, metric in named + [("guard_metrics", guard) for guard in self.registry.guard_metrics]:
            task = metric.split(".")[1] if metric.startswith("benchmark.") and metric.count(".") >= 2 else None
            if task is not None:
                if task not in self.evaluation.benchmarks:
                    raise ValueError(f"registry.{key}: '{metric}' needs '{task}' in evaluation.benchmarks "
                                     f"(have: {', '.join(self.evaluation.benchmarks) or 'none'})")
            elif known and metric not in known and not (self.evaluation.evaluator == "reasoning"
                                                        and re.fullmatch(r"accuracy_task_[a-z0-9_]+", metric)):
                raise ValueError(f"registry.{key}: '{metric}' is not a metric of the "
                                 f"{self.evaluation.evaluator} evaluator ({', '.join(known)}, accuracy_task_<family> "
                                 "where the data has a task column, or benchmark.<task>.<metric>)")
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
        sections = {name: getattr(self, name) for name in TrainSpec.model_fields if name != "scoring"}
        # Only a trainer that judges answers reads them: editing them must not re-train an SFT run.
        return TrainSpec(**sections, scoring=self.evaluation.scoring() if self.training.trainer == "grpo" else None)

    def eval_spec(self) -> EvalSpec:
        return EvalSpec(**{name: getattr(self, name) for name in EvalSpec.model_fields})

    def model_version_spec(self) -> ModelVersionSpec:
        return ModelVersionSpec(
            name=self.registry.model_name or self.name, tags=self.zenml.tags,
            config_key=f"{self.section_hash('data', 'model', 'lora', 'training', 'evaluation', 'registry')}-{self.seed}",
            description=f"QLoRA adapter for {self.model.base_model} ({self.name})", made_from=self.train_spec(),
            max_new_tokens=self.evaluation.max_new_tokens, batch_size=self.evaluation.batch_size)


def section_hash(spec: BaseModel, *sections: str) -> str:
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
        return f"{self.config_key}-{source_fingerprint[:8]}"


class EvalSpec(Section):
    """The sections evaluation reads: the evaluate steps' one typed input."""

    name: str
    seed: int
    data: DataConfig
    model: ModelConfig
    evaluation: EvaluationConfig


def format_validation_error(error: ValidationError) -> str:
    """One line: the first error's key path and what was expected, plus how many more there are."""
    path, message = _first_error(error)
    return f"{path}: {message}" if path else message


def _first_error(error: ValidationError) -> tuple[str, str]:
    """The first error's key path, and what was expected (an unknown key: the nearest valid one)."""
    # An unknown key first: a misspelt required key is also reported as missing, and the typo is the news.
    errors = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    path = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        nearest = nearest_key(path)
        message = "unknown key" + (f"; did you mean {nearest}?" if nearest else "")
    elif first["type"] == "missing":
        message = "required key is missing"
    elif "input" in first and not isinstance(first["input"], dict | list):
        message += f" (got {first['input']!r})"
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return path, message + more


def config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every key path of the config (sections and their fields), e.g. 'training.learning_rate'."""
    from typing import get_args

    keys: list[str] = []
    for name, field in (model or RunConfig).model_fields.items():
        keys.append(prefix + name)
        for candidate in (field.annotation, *get_args(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys += config_keys(candidate, f"{prefix}{name}.")
                break
    return keys


def nearest_key(path: str) -> str | None:
    """The valid key an unknown one most likely meant: the same name in another section, else the closest
    spelling in its own section, else the closest key path anywhere."""
    import difflib

    keys = config_keys()
    parent, _, name = path.rpartition(".")
    same_name = [k for k in keys if k.rpartition(".")[2] == name]
    if same_name:
        return same_name[0]
    siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
    if close:
        return f"{parent}.{close[0]}" if parent else close[0]
    close = difflib.get_close_matches(path, keys, n=1, cutoff=0.75)
    return close[0] if close else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides; values are parsed as YAML scalars so types follow the model."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.learning_rate=1e-4")
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key.strip()}: the value {value!r} is not valid YAML "
                              f"({getattr(exc, 'problem', None) or 'syntax error'})") from None
    return raw


def merge_sections(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overlay`` into ``base``: mappings merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_sections(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    text = read_text_file(path, "a config file")  # a folder, unreadable or binary: one line
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        context = getattr(exc, "context", None)
        raise ConfigError(f"{where}: invalid YAML: {problem}" + (f" ({context})" if context else "")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def load_config(paths: str | Path | list[str | Path], overrides: list[str] | None = None) -> RunConfig:
    """Read one YAML, or several merged in order (an experiment, then overlays such as a stack's
    settings from configs/stacks/), apply ``--set`` overrides and validate the result."""
    paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    raw: dict[str, Any] = {}
    for path in paths:
        raw = merge_sections(raw, _read_yaml(path))
    raw = apply_overrides(raw, overrides or [])
    label = " + ".join(str(p) for p in paths)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        path, message = _first_error(exc)
        set_keys = [item.partition("=")[0].strip() for item in overrides or []]
        # An error in a key given with --set names the --set, not the YAML file.
        given = next((k for k in reversed(set_keys)
                      if path and (path == k or path.startswith(k + ".") or k.startswith(path + "."))), None)
        if given is not None:
            where = "" if path == given else f"{path}: "
            raise ConfigError(f"--set {given}: {where}{message}") from exc
        raise ConfigError(f"{label}: {path}: {message}" if path else f"{label}: {message}") from exc
