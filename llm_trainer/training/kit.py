"""The trainer kit: what every trainer of the project does around its own training loop.

A trainer (QLoRA/SFT, GRPO, ...) is a short ``BaseTrainer.train``: it loads the policy (``load_policy``: the 4-bit
or full-precision base, prepared for training, with the LoRA adapter to train), builds its arguments from
``shared_arguments`` plus its own, resumes from ``resume_checkpoint``, and saves with ``save_adapter``. Its
transformers (or TRL) Trainer takes ``RunFolderTrainerMixin`` (one-line storage errors, the rank-0 metrics hook) and
the ``MarkCompleteCheckpoints`` callback (what resume trusts). The mixin also adds the system figures (CPU, host and
GPU memory, GPU utilisation: llm_trainer/system_metrics.py) to every training logging step's logs.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from llm_trainer.adapter_folder import ADAPTER_INFO_FILE, ADAPTER_WEIGHTS
from llm_trainer.errors import ConfigError, DataError, UserError
from llm_trainer.evaluation.answer_types import VERIFIABLE, answer_type
from llm_trainer.fsutil import is_inside, storage_failure, write_dir_atomically
from llm_trainer.modeling import compute_dtype, load_model, lora_config
from llm_trainer.model_card import card_from_config, write_model_card
from llm_trainer.training.base import LoraAdapter, MetricsHook

COMPLETE_MARKER = "CHECKPOINT_COMPLETE"
PROMPT_COLUMNS = ("messages", "reference_answer")
logger = logging.getLogger(__name__)


def load_policy(cfg: Any, base_model: str, fsdp: bool = False) -> Any:
    """The model a trainer trains: the base (4-bit unless ``model.load_in_4bit: false``) on this process's GPU,
    prepared for training, with a fresh LoRA adapter or ``model.init_adapter`` attached."""
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", "-1"))
    # Each process loads (and quantizes) on its own GPU; the default device map in one process.
    device_map = {"": local_rank} if local_rank >= 0 and torch.cuda.is_available() else None
    model = load_model(base_model, cfg.model, device_map=device_map, fsdp=fsdp)
    model.config.use_cache = False  # a KV cache would also disable the packed-sequence attention mask
    return attach_lora(prepare_for_training(model, cfg, fsdp), cfg, base_model, fsdp)


def prepare_for_training(model: Any, cfg: Any, fsdp: bool = False) -> Any:
    """Gradient checkpointing (non-reentrant), and for a 4-bit base peft's k-bit preparation, which upcasts every
    weight that is not 4-bit to fp32. Under FSDP that preparation is skipped, as in peft's FSDP-QLoRA guide and
    TRL: FSDP (``use_orig_params: false``) flattens each wrapped layer into one tensor of one dtype, and the
    4-bit weights are stored in the compute dtype, like the rest of the model."""
    from peft import prepare_model_for_kbit_training

    keep_4bit_encoding_stable(model)
    gc_kwargs = {"use_reentrant": False}
    if cfg.model.load_in_4bit and not fsdp:
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.training.gradient_checkpointing,
                                               gradient_checkpointing_kwargs=gc_kwargs)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if cfg.training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        model.enable_input_require_grads()
    return model


def attach_lora(model: Any, cfg: Any, base_model: str, fsdp: bool = False) -> Any:
    """A fresh LoRA adapter (``lora``), or the adapter in ``model.init_adapter`` to go on training (with its own
    LoRA settings), which must belong to this base model. Under FSDP the adapter keeps the model's dtype (peft
    would upcast it to fp32), as TRL does for sharded QLoRA."""
    from peft import PeftModel, get_peft_model

    if cfg.model.init_adapter is None:
        return get_peft_model(model, lora_config(cfg.lora), autocast_adapter_dtype=not fsdp)
    folder = Path(cfg.model.init_adapter).expanduser()
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise ConfigError(f"model.init_adapter: '{cfg.model.init_adapter}' is no adapter folder (no "
                          f"{ADAPTER_WEIGHTS}); a registered version such as 'production' is resolved to its folder "
                          "by the runner")
    trained_on = LoraAdapter.from_folder(folder).base_model
    if trained_on != base_model and Path(trained_on).name != Path(base_model).name:  # a built base may move
        raise ConfigError(f"model.init_adapter: '{folder}' was trained on '{trained_on}', not on this run's base "
                          f"model '{base_model}'")
    return PeftModel.from_pretrained(model, str(folder), is_trainable=True, autocast_adapter_dtype=not fsdp)


def keep_4bit_encoding_stable(model: Any) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes re-encodes 4-bit weights (absmax in bf16) at the first
    inference pass, e.g. the first evaluation. That changes the numbers mid-training and makes a resumed
    run differ from an uninterrupted one, so training keeps the original encoding."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def shared_arguments(cfg: Any, output_dir: Path) -> dict[str, Any]:
    """The TrainingArguments every trainer takes from ``training.*`` and the seed (TRL's configs subclass
    TrainingArguments): schedule, batch sizes, optimizer, logging, checkpointing, precision and device."""
    import torch

    t, on_gpu, compute = cfg.training, torch.cuda.is_available(), compute_dtype(cfg.model)
    return dict(
        output_dir=str(output_dir), learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps, optim=t.optim, logging_steps=t.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        seed=cfg.seed, data_seed=cfg.seed,
        bf16=on_gpu and compute == "bfloat16", fp16=on_gpu and compute == "float16", use_cpu=not on_gpu,
        report_to="none", remove_unused_columns=False, dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # LoRA leaves the frozen base out of the graph on purpose
        disable_tqdm=True,
    )


def one_gpu_per_process(arguments: Any) -> Any:
    """One process on a machine with several GPUs: the Trainer would count them all (batch x GPUs on GPU 0,
    where the 4-bit model sits). One process uses one GPU; more GPUs: ``training.num_processes``."""
    import torch

    if torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        arguments._n_gpu = 1
    return arguments


def resume_checkpoint(training: Any, checkpoints: Path) -> str | None:
    """The newest checkpoint that finished saving; half-written ones (a crash mid-save) are removed.
    ``training.resume`` may instead name a checkpoint folder (validated with the config)."""
    if training.resume not in ("auto", "never"):
        return training.resume
    if not checkpoints.exists():
        return None
    complete = []
    for folder in checkpoints.glob("checkpoint-*"):
        if folder.is_symlink() or not is_inside(folder, checkpoints.parent):  # checkpoints hold pickles
            logger.warning("ignoring %s: resume reads checkpoints from inside %s only, not through links",
                           folder, checkpoints.parent)
        elif (folder / COMPLETE_MARKER).exists():
            complete.append(folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    if training.resume != "auto" or not complete:
        return None
    return str(max(complete, key=lambda p: int(p.name.rsplit("-", 1)[1])))


def timed_train(trainer: Any, training: Any, checkpoints: Path) -> float:
    """Train from the newest complete checkpoint in ``checkpoints`` (resume_checkpoint), with the GPU's peak memory
    (peak_memory_mb) counted from here; the wall time in seconds."""
    import time

    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    trainer.train(resume_from_checkpoint=resume_checkpoint(training, checkpoints))
    return time.time() - started


def save_adapter(trainer: Any, model: Any, tokenizer: Any, cfg: Any, base_model: str, run_dir: Path,
                 **save_kwargs: Any) -> Path:
    """The trained adapter, its tokenizer, its base model's name and its model card in ``run_dir/adapter``,
    written by process 0 into a staging folder and renamed into place (a crash leaves the previous adapter)."""

    def save(folder: str) -> None:
        model.save_pretrained(folder, **save_kwargs)  # safetensors
        tokenizer.save_pretrained(folder)
        (Path(folder) / ADAPTER_INFO_FILE).write_text(json.dumps({"base_model": base_model}))
        write_model_card(folder, card_from_config(cfg))  # replaces peft's placeholder card

    adapter_dir = run_dir / "adapter"
    try:
        if trainer.is_world_process_zero():  # one adapter, whatever the number of processes
            adapter_dir = write_dir_atomically(adapter_dir, save, replace=True)
    except Exception as exc:  # safetensors' SafetensorError is no OSError
        if (cause := storage_failure(exc, run_dir)) is None:
            raise
        raise UserError(f"cannot save the adapter to {run_dir / 'adapter'}: {cause}; "
                        "the previous adapter there (if any) is untouched") from exc
    return adapter_dir


class RunFolderTrainerMixin:
    """What every trainer of the project does on top of transformers' (or TRL's) Trainer: a checkpoint that cannot
    be saved (full disk, unwritable folder) is removed and reported in one line, each training logging step carries
    the system figures (rank 0), and logged numbers go to the metrics hook once (rank 0)."""

    on_metrics: MetricsHook | None = None
    system_sampler: Any = None

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's train, with CPU use measured from its start."""
        from llm_trainer.system_metrics import SystemSampler

        if self.is_world_process_zero():
            self.system_sampler = SystemSampler()
        return super().train(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """A training logging step (one with ``loss``) gets the ``system/*`` figures before it is recorded."""
        if "loss" in logs and self.system_sampler is not None:
            try:
                logs.update(self.system_sampler.sample())
            except Exception:  # noqa: BLE001 - a figure that cannot be read must not stop training
                logger.debug("system figures unavailable", exc_info=True)
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        try:
            super()._save_checkpoint(model, trial)
        except Exception as exc:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            if (cause := storage_failure(exc, folder)) is None:
                raise
            shutil.rmtree(folder, ignore_errors=True)  # gives back the space; it was never marked complete
            raise UserError(f"cannot save the checkpoint {folder}: {cause}; a re-run resumes from the last "
                            "complete checkpoint") from exc

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """TRL writes a Hub model card into the checkpoints folder at every save; the run folder has none."""

    def report_metrics(self, logs: dict[str, float]) -> None:
        """Hand the numeric values of logged metrics to the metrics hook, on rank 0."""
        if self.on_metrics is not None and self.is_world_process_zero():
            self.on_metrics({k: float(v) for k, v in logs.items() if isinstance(v, int | float)},
                            self.state.global_step)


class MarkCompleteCheckpoints(TrainerCallback):
    """on_save runs after the Trainer has written the whole checkpoint: mark it usable for resume."""

    def on_save(self, args, state, control, **kwargs):
        """Write the complete-marker into the checkpoint just saved, on rank 0."""
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.exists():
                (folder / COMPLETE_MARKER).write_text(str(state.global_step))


def peak_memory_mb() -> float:
    """The process's peak memory: reserved GPU memory on a GPU (what the card must hold, the allocator's cache
    too), else the peak resident set size."""
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def sum_over_ranks(value: int) -> int:
    """A count summed over the processes of a data-parallel run (itself in one process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    total = torch.tensor([value], dtype=torch.long, device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(total)
    return int(total.item())


def verifiable_prompts(processed: Any, cfg: Any, trainer: str = "grpo", short_references: bool = True,
                       with_answer: bool = False) -> tuple[Any, dict[str, int]]:
    """The train rows whose reference answer can be verified (single word or short, when ``short_references``: the
    rewards compare answers; else any non-empty reference, e.g. a test suite), as TRL's prompt data set: ``prompt``
    (the chat turns before the answer) and ``reference_answer``, plus the data's own answer turn as ``answer`` when
    ``with_answer``; and how many rows were left out."""
    split = processed["train"] if hasattr(processed, "keys") else processed
    missing = [c for c in PROMPT_COLUMNS if c not in split.column_names]
    if missing:
        raise UserError(f"training.trainer {trainer}: trains on processed rows ({', '.join(PROMPT_COLUMNS)}), but the "
                        f"train split has no {', '.join(missing)} (columns: {', '.join(split.column_names)}); "
                        "pass the processed splits, not the tokenized ones")
    from llm_trainer.training.rewards import scoring_settings

    short_max = scoring_settings(cfg).short_max_words  # the reward's (and the evaluation's) line for "long"
    references = list(split["reference_answer"])  # through the indices mapping of a selected split
    if short_references:
        keep = np.flatnonzero(np.isin([answer_type(r, short_max) for r in references], VERIFIABLE))
    else:
        keep = np.flatnonzero([bool(r and r.strip()) for r in references])
    counts = {f"{trainer}_rows": len(keep), f"{trainer}_rows_without_verifiable_reference": len(references) - len(keep)}
    if not len(keep):
        what = "verifiable (single-word or short) reference answer" if short_references else "reference"
        raise DataError(f"training.trainer {trainer}: none of the {len(references)} train rows has a {what} to "
                        "reward")
    rows = split.select(keep).select_columns(list(PROMPT_COLUMNS))

    def split_turns(batch: dict[str, list]) -> dict[str, list]:
        columns = {"prompt": [m[:-1] for m in batch["messages"]]}
        if with_answer:
            columns["answer"] = [m[-1]["content"] for m in batch["messages"]]
        return columns

    prompts = rows.map(split_turns, batched=True, remove_columns=["messages"], desc="prompts")
    return prompts, counts


def lora_weights_in_float32(model: Any) -> None:
    """TRL stores a 4-bit model's trainable LoRA weights in bfloat16 (GRPO, DPO); the project's LoRA path keeps them in
    float32 (as QLoraTrainer does), so an adapter goes on from SFT without losing precision. Before the optimizer
    exists, so it holds these tensors."""
    import torch

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
