"""The whole experiment YAML as one typed pydantic model, validated before any heavy work starts.

Field names follow the libraries users know: transformers' TrainingArguments, peft's LoraConfig and
BitsAndBytesConfig. Unknown keys and wrong types are errors that name the key path.

This module only hands names on: one module per section (data, model, training, evaluation, pipeline), RunConfig
and the specs in run.py, reading and ``--set`` in loading.py, key paths and error messages in keys.py.
"""

from llm_trainer.config.base import TINY_MODEL_NAME, Section
from llm_trainer.config.data import DataConfig, SplitFractions
from llm_trainer.config.evaluation import EvaluationConfig, JudgeConfig, RegistryConfig, ScoringSpec
from llm_trainer.config.keys import config_keys, format_validation_error, nearest_key
from llm_trainer.config.loading import apply_overrides, load_config, merge_sections
from llm_trainer.config.model import LoraSettings, ModelConfig, TinyModelConfig
from llm_trainer.config.pipeline import DockerConfig, HardwareEstimate, StepResources, StepResourcesByStep, ZenMLConfig
from llm_trainer.config.run import EvalSpec, ModelVersionSpec, RunConfig, TrainSpec, section_hash
from llm_trainer.config.training import GRPO_LOSS_TYPES, DistributedConfig, GrpoConfig, TrainingConfig

__all__ = [
    "TINY_MODEL_NAME", "Section", "DataConfig", "SplitFractions", "EvaluationConfig", "JudgeConfig", "RegistryConfig",
    "ScoringSpec", "config_keys", "format_validation_error", "nearest_key", "apply_overrides", "load_config",
    "merge_sections", "LoraSettings", "ModelConfig", "TinyModelConfig", "DockerConfig", "HardwareEstimate",
    "StepResources", "StepResourcesByStep", "ZenMLConfig", "EvalSpec", "ModelVersionSpec", "RunConfig", "TrainSpec",
    "section_hash", "GRPO_LOSS_TYPES", "DistributedConfig", "GrpoConfig", "TrainingConfig",
]
