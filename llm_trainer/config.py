"""The whole experiment YAML as one typed pydantic model, validated before any heavy work starts.

Field names follow the libraries users know: transformers' TrainingArguments, peft's LoraConfig and
BitsAndBytesConfig. Unknown keys and wrong types are errors that name the key path.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm_trainer.errors import ConfigError
from llm_trainer.evaluation.answer_types import metric_names
from llm_trainer.registry import EVALUATORS, PROCESSORS, REWARDS, TRAINERS

TINY_MODEL_NAME = "tiny-llama"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitFractions(Section):
    """Fractions of the cleaned rows per split; assignment is by a stable hash of the question."""

    train: float = Field(0.9, gt=0, le=1)
    validation: float = Field(0.05, ge=0, lt=1)
    test: float = Field(0.05, ge=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must sum to 1 (got {total:g})")
        return self


class DataConfig(Section):
    processor: str = Field("reasoning", description="Data processor name (registry) or 'module:Class'.")
    source: str = Field(description="Hub data set id, or a local .jsonl/.json/.parquet/.csv file or folder.")
    split: str = Field("train", description="Split of a Hub data set to read.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for reproducibility.")
    max_samples: int | None = Field(None, gt=0, description="Read only the first N rows of the source.")
    num_proc: int = Field(1, gt=0, description="Worker processes for the batched map steps.")
    map_batch_size: int = Field(1000, gt=0, description="Rows per batch in the batched map steps.")
    system_prompt: str = "You are a careful assistant. Reason step by step, then end with a line 'Final answer: <answer>'."
    target: Literal["reference_answer", "response", "response_with_answer"] = Field(
        "response_with_answer",
        description="What the assistant learns: the reference answer, the first response, or the response "
        "followed by a final-answer line built from the reference answer (falls back to whichever exists).",
    )
    final_answer_template: str = Field("Final answer: {answer}", description="Must contain '{answer}'.")
    response_model: str | None = Field(None, description="Use the response of this model; default: the first.")
    max_chars: int = Field(100_000, gt=0, description="Rows whose question+target exceed this are dropped early.")
    max_seq_length: int = Field(2048, ge=16)
    overlength: Literal["drop", "truncate"] = "drop"
    packing: bool = True
    deduplicate: bool = True
    strict: bool = Field(False, description="Fail on the first malformed row instead of dropping it.")
    splits: SplitFractions = SplitFractions()
    # The chat processor (llm_trainer/data/conversations.py).
    format: Literal["auto", "messages", "alpaca", "sharegpt"] = Field(
        "auto", description="chat: the rows' shape; auto detects it from the columns and names it in the report.")
    alternating_turns: bool = Field(True, description="chat: drop conversations with two user (or assistant) "
                                    "turns in a row, which most chat templates forbid.")
    # The SQL processor (llm_trainer/data/sql.py).
    sql_dialect: str = Field("sqlite", description="sql: dialect of gold queries that SQLite rejects; they are "
                             "transpiled from it to SQLite with sqlglot (and counted).")
    sql_with_explanation: bool = Field(False, description="sql: the target is the explanation, then the SQL.")

    @field_validator("processor")
    @classmethod
    def _known_processor(cls, value: str) -> str:
        return PROCESSORS.check(value)

    @field_validator("sql_dialect")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        from sqlglot.dialects.dialect import Dialect

        try:
            Dialect.get_or_raise(value)
        except ValueError as exc:
            raise ValueError(f"unknown SQL dialect '{value}' (sqlglot: {' '.join(str(exc).split())[:120]})") from exc
        return value

    @field_validator("final_answer_template")
    @classmethod
    def _has_answer_field(cls, value: str) -> str:
        if "{answer}" not in value:
            raise ValueError("must contain '{answer}'")
        return value

    @field_validator("source")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class TinyModelConfig(Section):
    """Shape of the offline tiny Llama used when model.base_model is 'tiny-llama'."""

    vocab_size: int = Field(1024, ge=300)
    hidden_size: int = Field(64, gt=0)
    intermediate_size: int = Field(192, gt=0)
    num_hidden_layers: int = Field(2, gt=0)
    num_attention_heads: int = Field(4, gt=0)
    num_key_value_heads: int = Field(2, gt=0)
    max_position_embeddings: int = Field(2048, gt=0)
    tokenizer_max_chars: int = Field(1_000_000, gt=0, description="Text the BPE tokenizer trains on, at most: "
                                     "sampled by hash from the train split, so the build does not grow with the data.")
    pretrain_max_tokens: int = Field(300_000, gt=0, description="Tokens of plain-text pre-training, at most (all "
                                     "epochs together).")

    def architecture(self) -> dict[str, int]:
        """The LlamaConfig fields (the budgets are not part of the architecture)."""
        return self.model_dump(exclude={"vocab_size", "tokenizer_max_chars", "pretrain_max_tokens"})

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


class ModelConfig(Section):
    base_model: str = Field(description=f"Hub id, local path, or '{TINY_MODEL_NAME}' (built offline).")
    revision: str | None = None
    trust_remote_code: bool = False
    load_in_4bit: bool = True
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype when not loading in 4-bit."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    chat_template: str | None = Field(None, description="Jinja chat template overriding the tokenizer's.")
    allow_cpu: bool = Field(False, description="Run a model other than tiny-llama without a CUDA GPU (slow; an "
                            "error otherwise).")
    init_adapter: str | None = Field(None, description="Start training from this LoRA adapter (its own LoRA "
                                     "settings) instead of a fresh one: an adapter folder, or a registered version "
                                     "such as 'production', which the runner resolves to its folder.")
    tiny: TinyModelConfig = TinyModelConfig()

    @field_validator("base_model")
    @classmethod
    def _local_path_exists(cls, value: str) -> str:
        if value.startswith(("/", "./", "../", "~")) and not Path(value).expanduser().exists():
            raise ValueError(f"local path '{value}' does not exist")
        return value

    @property
    def is_tiny(self) -> bool:
        return self.base_model == TINY_MODEL_NAME


class LoraSettings(Section):
    """peft.LoraConfig fields."""

    r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    bias: Literal["none", "all", "lora_only"] = "none"


class DistributedConfig(Section):
    """accelerate's launcher settings for data-parallel runs on one machine or several; each unset value comes
    from the environment a multi-node platform sets (NODE_RANK, MASTER_ADDR, MASTER_PORT), else from the
    single-machine default (rank 0, 127.0.0.1, a free port)."""

    num_machines: int = Field(1, gt=0, description="Machines taking part; each runs training.num_processes.")
    machine_rank: int | None = Field(None, ge=0, description="This machine's rank (0 saves the adapter); "
                                     "default: $NODE_RANK or 0.")
    main_process_ip: str | None = Field(None, description="Address of machine 0; default: $MASTER_ADDR or "
                                        "127.0.0.1.")
    main_process_port: int | None = Field(None, gt=0, lt=65536, description="Rendezvous port on machine 0; "
                                          "default: $MASTER_PORT or a free port.")
    fsdp: bool = Field(False, description="Shard the 4-bit base and the adapter with FSDP (GPUs only) instead of "
                       "replicating the model in every process (DDP).")

    @model_validator(mode="after")
    def _rank_in_range(self) -> DistributedConfig:
        if self.machine_rank is not None and self.machine_rank >= self.num_machines:
            raise ValueError(f"machine_rank {self.machine_rank} must be below num_machines {self.num_machines}")
        return self


GRPO_LOSS_TYPES = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"]


class GrpoConfig(Section):
    """TRL GRPOConfig fields for ``training.trainer: grpo`` (``training.grpo``). Schedule, optimizer, logging and
    checkpointing (lr_scheduler_type, warmup_steps, optim, logging_steps, save_steps, ...) come from ``training``."""

    rewards: dict[str, float] = Field({"answer_correct": 1.0, "format": 0.2}, description="Reward name "
                                      "(answer_correct, format, length, or 'module:Class') -> weight.")
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt: one group.")
    per_device_train_batch_size: int = Field(8, gt=0, description="Completions per micro-batch; times "
                                             "gradient_accumulation_steps (and processes): whole groups.")
    gradient_accumulation_steps: int = Field(4, gt=0)
    max_completion_length: int = Field(512, gt=0, description="Tokens sampled per completion, at most.")
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.04, ge=0, description="KL penalty against the starting adapter; 0 loads no reference "
                        "and logs no KL.")
    loss_type: GRPO_LOSS_TYPES = "dapo"
    learning_rate: float = Field(1e-5, gt=0)
    max_steps: int = Field(200, gt=0)
    length_budget: int | None = Field(None, gt=0, description="length reward: 0 up to this many completion "
                                      "tokens, falling linearly to -1 at max_completion_length; default: 3/4 of it.")
    use_vllm: bool = Field(False, description="Generate with TRL's vLLM integration (a GPU with vllm installed).")
    vllm_mode: Literal["colocate", "server"] = "colocate"

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("name at least one reward, e.g. {answer_correct: 1.0, format: 0.2}")
        for name, weight in value.items():
            REWARDS.check(name)
            if not math.isfinite(weight):
                raise ValueError(f"weight of '{name}' must be a finite number")
        return value

    @model_validator(mode="after")
    def _whole_groups(self) -> GrpoConfig:
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise ValueError(f"per_device_train_batch_size x gradient_accumulation_steps ({batch}) must be a "
                             f"multiple of num_generations ({self.num_generations})")
        if self.length_budget is not None and self.length_budget > self.max_completion_length:
            raise ValueError(f"length_budget ({self.length_budget}) must not exceed max_completion_length "
                             f"({self.max_completion_length})")
        return self


class TrainingConfig(Section):
    """transformers.TrainingArguments fields, plus the trainer choice and resume policy."""

    trainer: str = "qlora"
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = Field(0.03, ge=0, description="Steps, or a fraction of all steps when < 1.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    per_device_train_batch_size: int = Field(4, gt=0)
    per_device_eval_batch_size: int = Field(4, gt=0)
    gradient_accumulation_steps: int = Field(4, gt=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="Overrides num_train_epochs when > 0.")
    optim: str = "paged_adamw_8bit"
    gradient_checkpointing: bool = True
    logging_steps: int = Field(10, gt=0)
    eval_steps: int | None = Field(100, gt=0)
    save_steps: int = Field(100, gt=0)
    save_total_limit: int | None = Field(2, gt=0)
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after this many evaluations without improving eval_loss; the best "
                                "checkpoint is loaded at the end. The evaluation before the first step is no baseline.")
    early_stopping_threshold: float = Field(0.0, ge=0, description="Least eval_loss decrease that counts as improving.")
    resume: str = Field("auto", description="auto: from the newest complete checkpoint of this run's folder; "
                        "never; or a checkpoint folder (e.g. outputs/<name>/<run key>/checkpoints/checkpoint-200).")
    num_processes: int | Literal["auto"] = Field(1, description="Data-parallel processes on this machine; 'auto': "
                                                 "one per visible GPU (1 without a GPU).")
    max_eval_blocks: int | None = Field(None, gt=0, description="Validation loss on at most this many packed "
                                        "blocks (the first ones); all when null.")
    chunked_loss: bool | Literal["auto"] = Field(
        "auto", description="Causal-LM loss from the last hidden states in chunks of tokens, never the whole "
        "logits; 'auto': for vocabularies of 32,000 entries and more (README, 'Long context in little memory').")
    loss_chunk_size: int = Field(256, gt=0, description="Labelled tokens per chunk of the chunked loss "
                                 "(at a 128k vocabulary: 128 MB of fp32 logits, three such tensors at a time).")
    use_liger_kernel: bool | Literal["auto"] = Field(
        "auto", description="liger-kernel's fused kernels (linear cross-entropy included); 'auto': on a CUDA GPU "
        "when liger-kernel is installed. Replaces the chunked loss when on.")
    offload_activations: bool = Field(False, description="Keep activations saved for backward (with gradient "
                                      "checkpointing: each layer's input) in pinned CPU memory until backward.")
    distributed: DistributedConfig = DistributedConfig()
    grpo: GrpoConfig = Field(GrpoConfig(), description="GRPO settings (training.trainer: grpo).")

    @field_validator("num_processes")
    @classmethod
    def _positive_processes(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1, or 'auto'")
        return value

    @field_validator("resume")
    @classmethod
    def _resume_policy_or_checkpoint(cls, value: str) -> str:
        if value in ("auto", "never"):
            return value
        if not (Path(value).expanduser() / "trainer_state.json").is_file():
            raise ValueError(f"'{value}' is neither auto, never nor a checkpoint folder (one with trainer_state.json)")
        return str(Path(value).expanduser())

    @field_validator("trainer")
    @classmethod
    def _known_trainer(cls, value: str) -> str:
        return TRAINERS.check(value)


class JudgeConfig(Section):
    """A local LLM that judges long and prose references with a one-token yes/no verdict."""

    model: str = Field(description=f"Hub id, local path, or '{TINY_MODEL_NAME}' (the run's own tiny base model).")
    revision: str | None = None
    load_in_4bit: bool = True
    batch_size: int = Field(8, gt=0)


class EvaluationConfig(Section):
    evaluator: str = "reasoning"
    max_samples: int | None = Field(200, gt=0)
    batch_size: int = Field(8, gt=0)
    max_new_tokens: int = Field(512, gt=0)
    numeric_tolerance: float = Field(0.0, ge=0, description="Relative tolerance for numbers; 0 accepts only "
                                     "exact values (a rounded 0.3333 is not 1/3).")
    verify_timeout_seconds: int = Field(3, gt=0, description="Limit for each math-verify parse or comparison; "
                                        "an answer over it is wrong and counted as verify_timeout.")
    short_answer_max_words: int = Field(20, gt=0, description="References with more words are 'long': scored "
                                        "by token F1 and ROUGE-L rather than as correct or wrong.")
    judge: JudgeConfig | None = Field(None, description="Optional LLM judge for long and prose references.")
    benchmarks: list[str] = Field([], description="lm-eval-harness tasks run on each evaluated model, e.g. [gsm8k].")
    benchmark_limit: int | None = Field(None, gt=0, description="Examples per benchmark task (all when null).")
    benchmark_include_path: str | None = Field(None, description="Folder of extra lm-eval task YAMLs.")
    sql_timeout_seconds: float = Field(2.0, gt=0, description="sql: deadline for each predicted query; over it "
                                       "the query is wrong and counted as timeout.")
    sql_max_rows: int = Field(10_000, gt=0, description="sql: result rows read at most; a longer result is wrong.")

    @field_validator("evaluator")
    @classmethod
    def _known_evaluator(cls, value: str) -> str:
        return EVALUATORS.check(value)

    def metric_names(self) -> tuple[str, ...]:
        """Every metric name the evaluation produces (benchmark metrics as ``benchmark.<task>.*``)."""
        if self.evaluator == "reasoning":
            return metric_names(judge=self.judge is not None)
        try:  # other evaluators declare theirs (BaseEvaluator.metric_names); their modules import nothing heavy
            return tuple(getattr(EVALUATORS.resolve(self.evaluator), "metric_names", ()))
        except ConfigError:
            return ()


class RegistryConfig(Section):
    model_name: str | None = Field(None, description="ZenML/MLflow model name; default: the run name.")
    promotion_metric: str = "accuracy"
    promotion_margin: float = Field(0.0, ge=0)


class StepResources(Section):
    """ZenML ResourceSettings for one step; the stack's orchestrator or step operator applies them."""

    cpu_count: float | None = Field(None, gt=0)
    gpu_count: int | None = Field(None, ge=0)
    memory: str | None = Field(None, pattern=r"^[0-9]+(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB|PB|PiB)$",
                               description="e.g. 32GB")


class StepResourcesByStep(Section):
    train: StepResources = StepResources()
    evaluate: StepResources = StepResources()


class DockerConfig(Section):
    """ZenML DockerSettings for containerised stacks (ignored by the local orchestrator)."""

    parent_image: str | None = Field(None, description="e.g. a CUDA PyTorch image")
    requirements: str | list[str] | None = Field("requirements-runtime.txt", description="file or list of pins "
                                                 "(default: the runtime pins without torch, which the image has)")
    apt_packages: list[str] = []
    environment: dict[str, str] = {}


class ZenMLConfig(Section):
    """Where and how the pipelines run. Stack components are registered with ZenML's own CLI (README)."""

    enable_cache: bool = True
    tags: list[str] = []
    stack: str | None = Field(None, description="ZenML stack to run on; default: the project's local stack.")
    step_operator: str | None = Field(None, description="Step operator of the stack that runs the train and "
                                                        "evaluate steps (e.g. on a GPU machine).")
    resources: StepResourcesByStep = StepResourcesByStep()
    docker: DockerConfig | None = None
    secrets: list[str] = Field([], description="ZenML secrets whose keys become environment variables in every "
                               "step, e.g. [hf] after `zenml secret create hf --HF_TOKEN=...` (the gated model "
                               "needs it); only the name is in the config, never the value.")
    run_config: str | None = Field(None, description="A ZenML run-configuration YAML (its own format: settings, "
                                   "steps.<name>.settings, steps.<name>.step_operator, schedule...) applied as it "
                                   "is; the options above win where both set the same key.")

    @field_validator("run_config")
    @classmethod
    def _run_config_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"no such file: {value}")
        return value


class HardwareEstimate(Section):
    """The card a run is sized for (configs/cards/), for the training-time estimate that ``process`` prints."""

    card: str | None = Field(None, description="e.g. '24 GB'")
    train_tokens_per_second: float | None = Field(None, gt=0, description="Expected training throughput on this "
                                                  "card (an estimate until measured).")


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
        metric = self.registry.promotion_metric
        known = self.evaluation.metric_names()
        task = metric.split(".")[1] if metric.startswith("benchmark.") and metric.count(".") >= 2 else None
        if task is not None:
            if task not in self.evaluation.benchmarks:
                raise ValueError(f"registry.promotion_metric: '{metric}' needs '{task}' in evaluation.benchmarks "
                                 f"(have: {', '.join(self.evaluation.benchmarks) or 'none'})")
        elif known and metric not in known and not (self.evaluation.evaluator == "reasoning"
                                                    and re.fullmatch(r"accuracy_task_[a-z0-9_]+", metric)):
            raise ValueError(f"registry.promotion_metric: '{metric}' is not a metric of the "
                             f"{self.evaluation.evaluator} evaluator ({', '.join(known)}, "
                             "accuracy_task_<family> where the data has a task column, or benchmark.<task>.<metric>)")
        return self

    def section_hash(self, *sections: str) -> str:
        """A short hash of some sections, for cache keys that must change when (only) they change."""
        return section_hash(self, *sections)

    def train_spec(self) -> TrainSpec:
        return TrainSpec(**{name: getattr(self, name) for name in TrainSpec.model_fields})

    def eval_spec(self) -> EvalSpec:
        return EvalSpec(**{name: getattr(self, name) for name in EvalSpec.model_fields})

    def model_version_spec(self) -> ModelVersionSpec:
        return ModelVersionSpec(
            name=self.registry.model_name or self.name, tags=self.zenml.tags,
            config_key=f"{self.section_hash('data', 'model', 'lora', 'training', 'evaluation', 'registry')}-{self.seed}",
            description=f"QLoRA adapter for {self.model.base_model} ({self.name})")


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
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
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
