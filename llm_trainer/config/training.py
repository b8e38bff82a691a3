"""The training section: transformers.TrainingArguments fields, GRPO, and accelerate's launcher."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from llm_trainer.registry import REWARDS, TRAINERS

from llm_trainer.config.base import Section


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


# training.* keys GRPO reads as SFT does (training.grpo had its own copies once: refused there with a pointer)
SHARED_WITH_SFT = ("learning_rate", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps")
# training.* keys only SFT reads: set under trainer grpo, they are refused rather than silently ignored
SFT_ONLY = ("per_device_eval_batch_size", "eval_steps", "early_stopping_patience", "early_stopping_threshold",
            "max_eval_blocks", "chunked_loss", "loss_chunk_size", "use_liger_kernel", "offload_activations")

GRPO_LOSS_TYPES = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"]


class DataSftTerm(Section):
    """The SFT term GRPO and DPO can add to their own loss (llm_trainer/training/sft_term.py)."""

    data_sft_weight: float = Field(0.0, ge=0, description="Add this weight x the SFT loss (the next-token loss of "
                                   "the data's own answers, prompt masked) on data_sft_batch_size train rows to each "
                                   "micro-batch's loss (InstructGPT's PPO-ptx): GRPO and DPO learn only from the "
                                   "prompts they sample or pair; the term keeps learning from every row. Needs rows "
                                   "with chat messages (DPO: pairs verifier). Logged as data_sft_loss. 0: off.")
    data_sft_batch_size: int = Field(16, gt=0, description="With data_sft_weight: train rows in each micro-batch's "
                                     "SFT term.")


class GrpoConfig(DataSftTerm):
    """TRL GRPOConfig fields for ``training.trainer: grpo`` (``training.grpo``). Learning rate, steps, batch sizes
    (in completions), schedule, optimizer, logging and checkpointing come from ``training`` as for SFT."""

    rewards: dict[str, float] = Field({"answer_correct": 1.0, "format": 0.2}, description="Reward name "
                                      "(answer_correct, format, length, tests_pass, or 'module:Class') -> weight.")
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt: one group. "
                                 "training.per_device_train_batch_size counts completions.")
    max_completion_length: int = Field(512, gt=0, description="Tokens sampled per completion, at most.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the completions.")
    beta: float = Field(0.04, ge=0, description="KL penalty against the starting adapter; 0 loads no reference "
                        "and logs no KL.")
    loss_type: GRPO_LOSS_TYPES = Field("dapo", description="TRL's GRPO loss variant: how the per-token losses "
                                       "are averaged.")
    length_budget: int | None = Field(None, gt=0, description="length reward: 0 up to this many completion "
                                      "tokens, falling linearly to -1 at max_completion_length; default: 3/4 of it.")
    variance_filter_samples: int = Field(0, ge=0, description="Before training, answer each prompt this many times "
                                         "with the starting adapter and keep only prompts whose rewards vary (some "
                                         "answers better than others): the others teach nothing. 0: off.")
    variance_filter_max_prompts: int | None = Field(512, gt=0, description="Prompts the variance filter examines, "
                                                    "drawn by the seed; all when null.")
    variance_filter_min_mean_reward: float = Field(0.0, ge=0, description="With the variance filter: keep only "
                                                   "prompts whose answers' mean weighted reward is at least this (with "
                                                   "answer_correct alone: the share answered right), leaving out "
                                                   "prompts the model gets right only by a rare lucky sample "
                                                   "(online difficulty filtering). 0: any prompt that varies.")
    variance_filter_greedy_wrong: bool = Field(False, description="With the variance filter: keep only prompts "
                                               "whose greedy answer (what evaluation reads) scores below the best "
                                               "sampled one, where GRPO can change that answer; on the others it only "
                                               "sharpens what greedy decoding already says.")
    use_vllm: bool = Field(False, description="Generate with TRL's vLLM integration (a GPU with vllm installed).")
    vllm_mode: Literal["colocate", "server"] = Field("colocate", description="With use_vllm: vLLM in the training "
                                                     "process, or a separate `trl vllm-serve` server.")

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("name at least one reward, e.g. {answer_correct: 1.0, format: 0.2}")
        for name, weight in value.items():
            REWARDS.check(name)
            if not math.isfinite(weight):
                raise ValueError(f"weight of '{name}' must be a finite number")
        if not any(value.values()):
            raise ValueError("every reward weight is 0, so every completion scores 0 and nothing is learned; give at "
                             "least one reward a non-zero weight, e.g. {answer_correct: 1.0, format: 0.2}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _one_key_for_one_meaning(cls, value: Any) -> Any:
        moved = [key for key in SHARED_WITH_SFT if isinstance(value, dict) and key in value]
        if moved:
            raise ValueError(f"{', '.join(moved)}: set {' and '.join('training.' + k for k in moved)} instead (one key "
                             "for SFT and GRPO; under GRPO the batch sizes count completions)")
        return value

    @model_validator(mode="after")
    def _length_budget_fits(self) -> GrpoConfig:
        if self.variance_filter_samples == 1:
            raise ValueError("variance_filter_samples: one answer per prompt cannot vary; use 2 or more, or 0 (off)")
        if self.length_budget is not None and self.length_budget > self.max_completion_length:
            raise ValueError(f"length_budget ({self.length_budget}) must not exceed max_completion_length "
                             f"({self.max_completion_length})")
        return self


# TRL 1.16 DPOTrainer's losses that compare the policy with a reference (the starting adapter): sigmoid (DPO), ipo,
# hinge (SLiC), robust (label smoothing), and sigmoid_norm (length-normalised DPO). TRL's reference-free losses
# (ORPO, CPO/SimPO) are separate experimental trainers in TRL 1.16, not loss types of DPOTrainer.
DPO_LOSS_TYPES = Literal["sigmoid", "ipo", "hinge", "robust", "sigmoid_norm"]
# training.* keys DPO does not read (the loss is TRL's; no validation loss on packed blocks, no early stopping)
NOT_READ_BY_DPO = ("early_stopping_patience", "early_stopping_threshold", "max_eval_blocks", "chunked_loss",
                   "loss_chunk_size", "use_liger_kernel", "offload_activations")


class DpoConfig(DataSftTerm):
    """TRL DPOConfig fields for ``training.trainer: dpo`` (``training.dpo``), and how the preference pairs are made.
    Learning rate, steps, batch sizes (in pairs), schedule and checkpointing come from ``training`` as for SFT."""

    beta: float = Field(0.1, gt=0, description="How far the policy may move from the reference (the starting "
                        "adapter): higher keeps it closer. For ipo, the regularisation tau.")
    loss_type: DPO_LOSS_TYPES = Field("sigmoid", description="TRL's preference loss: sigmoid (DPO), ipo, hinge, "
                                      "robust or sigmoid_norm.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="robust: the share of preference labels assumed "
                                   "flipped.")
    sft_weight: float = Field(0.0, ge=0, description="Weight of a supervised loss on the chosen answers added to the "
                              "preference loss (RPO, as TRL's loss_type sft): keeps the chosen answers likely, where DPO "
                              "alone can lower both answers' likelihood and lose accuracy on reasoning. 0: off.")
    max_prompt_length: int = Field(512, gt=0, description="Pairs whose prompt is longer (in tokens) are dropped and "
                                   "counted, not truncated.")
    max_length: int = Field(1024, gt=0, description="Pairs whose prompt plus longer answer is longer (in tokens) are "
                            "dropped and counted, not truncated.")
    pairs: Literal["data", "verifier"] = Field(
        "data", description="data: the processed rows are preference pairs (data.processor: preference). verifier: "
        "the processed rows are questions with reference answers; the starting adapter answers each train question "
        "pairs_samples times and the verifier's correct and wrong answers make the pairs (on-policy).")
    verifier: str = Field("answer_correct", description="pairs verifier: the reward (registry: answer_correct, or "
                          "'module:Class') whose score of 1 marks an answer correct and 0 wrong.")
    pairs_samples: int = Field(8, ge=2, description="pairs verifier: answers sampled per train question.")
    pairs_per_question: int = Field(2, ge=1, description="pairs verifier: pairs kept per question at most, each "
                                    "with a different correct and a different wrong answer.")
    pairs_temperature: float = Field(1.0, gt=0, description="pairs verifier: the sampling temperature.")
    pairs_max_new_tokens: int = Field(256, gt=0, description="pairs verifier: tokens per sampled answer, at most.")
    pairs_max_questions: int | None = Field(1024, gt=0, description="pairs verifier: train questions answered "
                                            "(drawn by the seed); all when null.")
    pairs_gold_chosen: bool = Field(False, description="pairs verifier: a question with wrong answers but no correct "
                                    "one pairs the data's own answer (the SFT target) as chosen with one wrong answer "
                                    "(SPIN-style), instead of giving no pair; counted as pairs_gold_chosen.")
    pairs_min_pass_rate: float = Field(0.0, ge=0, le=1, description="pairs verifier: a question whose share of "
                                       "correct answers is under this gives no pair (the right answer was a rare "
                                       "lucky sample); counted as pairs_rarely_correct. 0: any question with both.")
    pairs_greedy_wrong: bool = Field(False, description="pairs verifier: also answer each question greedily (as "
                                     "evaluation does); a question answered right that way gives no pair (counted as "
                                     "pairs_greedy_right), and the others' greedy answer is the first one rejected.")
    validation_share: float = Field(0.1, ge=0, lt=1, description="Share of the pairs (by question) held out to "
                                    "measure reward accuracy and margin after training.")

    @field_validator("verifier")
    @classmethod
    def _known_verifier(cls, value: str) -> str:
        return REWARDS.check(value)


class TrainingConfig(Section):
    """transformers.TrainingArguments fields, plus the trainer choice and resume policy."""

    trainer: str = Field("qlora", description="Trainer name (registry: qlora, grpo, dpo) or 'module:Class'.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate of the adapter.")
    lr_scheduler_type: str = Field("cosine", description="transformers' schedule after warm-up (cosine, linear, "
                                   "constant, ...).")
    warmup_steps: float = Field(0.03, ge=0, description="Steps, or a fraction of all steps when < 1.")
    weight_decay: float = Field(0.0, ge=0, description="The optimizer's weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradients are clipped to this norm.")
    per_device_train_batch_size: int = Field(4, gt=0, description="Samples (packed blocks; GRPO: completions) per "
                                             "process per micro-batch.")
    per_device_eval_batch_size: int = Field(4, gt=0, description="Blocks per batch of the validation loss.")
    gradient_accumulation_steps: int = Field(4, gt=0, description="Micro-batches per optimizer step.")
    num_train_epochs: float = Field(1.0, gt=0, description="Passes over the train split (unless max_steps is set).")
    max_steps: int = Field(-1, description="Overrides num_train_epochs when > 0.")
    optim: str = Field("paged_adamw_8bit", description="transformers' optimizer name.")
    gradient_checkpointing: bool = Field(True, description="Recompute each layer's activations in backward "
                                         "(non-reentrant) instead of keeping them: less memory, one more forward "
                                         "pass a step.")
    logging_steps: int = Field(10, gt=0, description="Steps between logged loss, learning rate and throughput.")
    eval_steps: int | None = Field(100, gt=0, description="Steps between validation losses; null: save_steps.")
    save_steps: int = Field(100, gt=0, description="Steps between checkpoints (a re-run resumes from the newest).")
    save_total_limit: int | None = Field(2, gt=0, description="Checkpoints kept, the newest; all when null.")
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
    distributed: DistributedConfig = Field(DistributedConfig(), description="Several machines, and FSDP: "
                                           "accelerate's launcher settings.")
    grpo: GrpoConfig = Field(GrpoConfig(), description="GRPO settings (training.trainer: grpo).")
    dpo: DpoConfig = Field(DpoConfig(), description="DPO settings (training.trainer: dpo).")

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

    @model_validator(mode="after")
    def _settings_the_trainer_reads(self) -> TrainingConfig:
        """Every key set must reach the trainer: a key the chosen trainer would ignore is refused in one line. "Set"
        is "not its default", which survives a round trip through a dict (ZenML re-validates the step's spec)."""
        for name, default in (("grpo", GrpoConfig()), ("dpo", DpoConfig())):
            if self.trainer != name and self.trainer in TRAINERS.names() and getattr(self, name) != default:
                raise ValueError(f"training.{name} is read by trainer {name} only; remove it or set training.trainer: "
                                 f"{name}")
        fields = type(self).model_fields
        if self.trainer == "dpo":
            ignored = [f"training.{key}" for key in NOT_READ_BY_DPO if getattr(self, key) != fields[key].default]
            if self.distributed.fsdp:
                ignored.append("training.distributed.fsdp")
            if ignored:
                raise ValueError(f"{', '.join(ignored)}: not read by trainer dpo; remove them from the DPO config")
            return self
        if self.trainer != "grpo":
            return self
        ignored = [f"training.{key}" for key in SFT_ONLY if getattr(self, key) != fields[key].default]
        if self.distributed.fsdp:
            ignored.append("training.distributed.fsdp")
        if ignored:
            raise ValueError(f"{', '.join(ignored)}: not read by trainer grpo (supervised fine-tuning only); "
                             "remove them from the GRPO config")
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.grpo.num_generations:
            raise ValueError(f"per_device_train_batch_size x gradient_accumulation_steps ({batch} completions) must "
                             f"be a multiple of grpo.num_generations ({self.grpo.num_generations}): whole groups")
        return self
