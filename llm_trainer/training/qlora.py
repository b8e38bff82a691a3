"""QLoraTrainer: 4-bit NF4 base + LoRA adapter, trained with transformers' Trainer.

Reads top to bottom: load the base model (4-bit unless ``model.load_in_4bit: false``), prepare it for
k-bit training with non-reentrant gradient checkpointing, attach LoRA, build TrainingArguments straight
from the config, resume from the newest complete checkpoint, train, evaluate, save the adapter atomically.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, Trainer, TrainerCallback

from llm_trainer.adapter_folder import ADAPTER_WEIGHTS
from llm_trainer.data.collate import LengthGroupedSampler, collator_for, compute_efficiency
from llm_trainer.data.packing import sample_lengths
from llm_trainer.data.tokenization import IGNORE_INDEX
from llm_trainer.errors import ConfigError, UserError
from llm_trainer.fsutil import is_inside, storage_failure, write_dir_atomically
from llm_trainer.modeling import compute_dtype, load_model, lora_config
from llm_trainer.model_card import card_from_config, write_model_card
from llm_trainer.progress import TrainingProgress
from llm_trainer.training import losses
from llm_trainer.training.base import ADAPTER_INFO_FILE, BaseTrainer, LoraAdapter, MetricsHook, TrainResult

COMPLETE_MARKER = "CHECKPOINT_COMPLETE"
logger = logging.getLogger(__name__)


class QLoraTrainer(BaseTrainer):
    def train(self, tokenized: Any, tokenizer: Any, run_dir: Path, on_metrics: MetricsHook | None = None
              ) -> TrainResult:
        import torch
        from transformers import set_seed

        cfg = self.cfg
        set_seed(cfg.seed)  # before get_peft_model: LoRA's A matrices are initialised from the global RNG
        run_dir = Path(run_dir)
        base_model = self.base_model_for(tokenizer)
        local_rank = int(os.environ.get("LOCAL_RANK", "-1"))
        # Each process loads (and quantizes) on its own GPU; the default device map in one process.
        device_map = {"": local_rank} if local_rank >= 0 and torch.cuda.is_available() else None
        fsdp = cfg.training.distributed.fsdp and int(os.environ.get("WORLD_SIZE", "1")) > 1
        if fsdp:  # the process group before the model: transformers loads for FSDP only once it exists
            from accelerate import PartialState

            PartialState()
        model = load_model(base_model, cfg.model, device_map=device_map, fsdp=fsdp)
        model.config.use_cache = False  # a KV cache would also disable the packed-sequence attention mask
        model = attach_lora(prepare_for_training(model, cfg, fsdp), cfg, base_model, fsdp)
        trainable, total = model.get_nb_trainable_parameters()

        eval_dataset = tokenized["validation"] if len(tokenized.get("validation", [])) else None
        if eval_dataset is not None and cfg.training.max_eval_blocks is not None:
            eval_dataset = eval_dataset.select(range(min(cfg.training.max_eval_blocks, len(eval_dataset))))
        trainer = _TrackingTrainer(
            model=model,
            args=self._training_arguments(run_dir / "checkpoints", has_eval=eval_dataset is not None),
            train_dataset=tokenized["train"],
            eval_dataset=eval_dataset,
            data_collator=collator_for(cfg.data.packing, cfg.model.attn_implementation, tokenizer.pad_token_id),
            callbacks=self._callbacks(),
        )
        trainer.remove_callback(PrinterCallback)  # dicts of quoted numbers; TrainingProgress shows the run
        trainer.on_metrics = on_metrics
        # Micro-batches of rows of similar length: little padding (compute_efficiency) with SDPA and eager.
        t = cfg.training
        # One optimizer step's rows (all ranks) form a group: the same rows however they are split into micro-batches.
        group = t.per_device_train_batch_size * t.gradient_accumulation_steps * trainer.args.world_size
        trainer.train_sampler = LengthGroupedSampler(sample_lengths(tokenized["train"]), group, cfg.seed)
        trainer.configure_memory(cfg.training, vocab_size=model.config.vocab_size)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        started = time.time()
        trainer._last_log = (0, started)
        trainer.train(resume_from_checkpoint=self._resume_checkpoint(run_dir / "checkpoints"))
        wall_time = time.time() - started
        final_eval = trainer.evaluate() if eval_dataset is not None else {}

        trained_tokens = _sum_over_ranks(trainer.trained_tokens)

        # FSDP holds each rank's shard: every rank takes part in gathering the weights, rank 0 gets them
        state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped) if trainer.is_fsdp_enabled else None

        def save_adapter(folder: str) -> None:
            model.save_pretrained(folder, state_dict=state_dict)  # safetensors
            tokenizer.save_pretrained(folder)
            (Path(folder) / ADAPTER_INFO_FILE).write_text(json.dumps({"base_model": base_model}))
            write_model_card(folder, card_from_config(cfg))  # replaces peft's placeholder card

        adapter_dir = run_dir / "adapter"
        try:
            if trainer.is_world_process_zero():  # one adapter, whatever the number of processes
                adapter_dir = write_dir_atomically(adapter_dir, save_adapter, replace=True)
        except Exception as exc:  # safetensors' SafetensorError is no OSError
            if (cause := storage_failure(exc, run_dir)) is None:
                raise
            raise UserError(f"cannot save the adapter to {run_dir / 'adapter'}: {cause}; "
                            "the previous adapter there (if any) is untouched") from exc
        history = list(trainer.state.log_history)
        evals = [h["eval_loss"] for h in history if "eval_loss" in h]
        metrics = {
            "train_loss": _last(history, "train_loss"),
            "eval_loss_before": evals[0] if evals else None,
            "eval_loss": final_eval.get("eval_loss"),
            "global_step": trainer.state.global_step,
            "trained_tokens": trained_tokens,
            "local_trained_tokens": trainer.trained_tokens,
            "world_size": trainer.args.world_size,
            "wall_time_s": round(wall_time, 2),
            "train_tokens_per_second": round(trained_tokens / wall_time, 1) if wall_time else None,
            "peak_memory_mb": _peak_memory_mb(),
            "compute_efficiency": compute_efficiency(trainer.data_collator, trainer.train_sampler.lengths[
                trainer.train_sampler.order()], t.per_device_train_batch_size),
            "tokens_per_step": round(trainer.input_tokens / trainer.micro_batches * trainer.args.world_size
                                     * trainer.args.gradient_accumulation_steps) if trainer.micro_batches else None,
            "max_sample_tokens": trainer.max_sample_tokens or None,
            "chunked_loss": int(trainer.chunked_loss),
            "trainable_params": int(trainable),
            "total_params": int(total),
        }
        return TrainResult(adapter=LoraAdapter(path=adapter_dir, base_model=base_model),
                           metrics={k: v for k, v in metrics.items() if v is not None}, history=history,
                           model=model)

    def _training_arguments(self, output_dir: Path, has_eval: bool) -> Any:
        import torch
        from transformers import TrainingArguments

        t, on_gpu = self.cfg.training, torch.cuda.is_available()
        compute = compute_dtype(self.cfg.model)
        early_stopping = has_eval and t.early_stopping_patience is not None
        arguments = TrainingArguments(
            output_dir=str(output_dir),
            learning_rate=t.learning_rate,
            lr_scheduler_type=t.lr_scheduler_type,
            warmup_steps=t.warmup_steps,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            per_device_train_batch_size=t.per_device_train_batch_size,
            per_device_eval_batch_size=t.per_device_eval_batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            num_train_epochs=t.num_train_epochs,
            max_steps=t.max_steps,
            optim=t.optim,
            logging_steps=t.logging_steps,
            logging_first_step=True,
            eval_strategy="steps" if has_eval else "no",
            eval_steps=t.eval_steps or t.save_steps,
            eval_on_start=has_eval,
            save_strategy="steps",
            save_steps=t.save_steps,
            save_total_limit=t.save_total_limit,
            load_best_model_at_end=early_stopping,
            metric_for_best_model="eval_loss" if early_stopping else None,
            seed=self.cfg.seed,
            data_seed=self.cfg.seed,
            bf16=on_gpu and compute == "bfloat16",
            fp16=on_gpu and compute == "float16",
            use_cpu=not on_gpu,
            use_liger_kernel=losses.use_liger_kernel(t.use_liger_kernel, on_gpu),
            report_to="none",
            remove_unused_columns=False,
            dataloader_num_workers=0,
            ddp_find_unused_parameters=False,  # LoRA leaves the frozen base out of the graph on purpose
            disable_tqdm=True,
        )
        if on_gpu and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            # One process on a machine with several GPUs: the Trainer would count them all (batch x GPUs on
            # GPU 0, where the 4-bit model sits). One process uses one GPU; more GPUs: num_processes.
            arguments._n_gpu = 1
        return arguments

    def _callbacks(self) -> list[Any]:
        from transformers import EarlyStoppingCallback

        callbacks: list[Any] = [_MarkCompleteCheckpoints(), TrainingProgress()]
        if self.cfg.training.early_stopping_patience is not None:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=self.cfg.training.early_stopping_patience,
                                                   early_stopping_threshold=self.cfg.training.early_stopping_threshold))
        return callbacks

    def _resume_checkpoint(self, checkpoints: Path) -> str | None:
        """The newest checkpoint that finished saving; half-written ones (a crash mid-save) are removed.
        ``training.resume`` may instead name a checkpoint folder (validated with the config)."""
        if self.cfg.training.resume not in ("auto", "never"):
            return self.cfg.training.resume
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
        if self.cfg.training.resume != "auto" or not complete:
            return None
        return str(max(complete, key=lambda p: int(p.name.rsplit("-", 1)[1])))


class RunFolderTrainerMixin:
    """What every trainer of the project does on top of transformers' (or TRL's) Trainer: a checkpoint that cannot
    be saved (full disk, unwritable folder) is removed and reported in one line, and logged numbers go to the
    metrics hook once (rank 0)."""

    on_metrics: MetricsHook | None = None

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

    def report_metrics(self, logs: dict[str, float]) -> None:
        if self.on_metrics is not None and self.is_world_process_zero():
            self.on_metrics({k: float(v) for k, v in logs.items() if isinstance(v, int | float)},
                            self.state.global_step)


class _TrackingTrainer(RunFolderTrainerMixin, Trainer):
    """Counts trained (label) tokens and reports throughput and metrics at every log; computes the loss in
    chunks from the last hidden states when configured (llm_trainer.training.losses)."""

    train_sampler: Any = None
    trained_tokens = 0
    input_tokens = 0  # every token fed in training (padding tails of packed blocks included)
    micro_batches = 0
    max_sample_tokens = 0
    chunked_loss = False
    loss_chunk_size = 256
    offload_activations = False
    loss_compute_dtype: Any = None  # the output layer's dtype in the chunked loss: that of the mixed precision
    _last_log: tuple[int, float | None] = (0, None)

    def configure_memory(self, training: Any, vocab_size: int) -> None:
        import torch

        self.chunked_loss = (losses.use_chunked_loss(training.chunked_loss, vocab_size, self.args.use_liger_kernel)
                             and losses.supports_chunked_loss(self.accelerator.unwrap_model(self.model).config))
        self.loss_chunk_size = training.loss_chunk_size
        self.offload_activations = training.offload_activations
        self.loss_compute_dtype = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else None

    def _get_train_sampler(self, train_dataset=None):
        return self.train_sampler if self.train_sampler is not None else super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import contextlib

        if model.training:
            self.trained_tokens += int((inputs["labels"] != IGNORE_INDEX).sum())
            fed, longest = losses.batch_token_counts(inputs)
            self.input_tokens += fed
            self.micro_batches += 1
            self.max_sample_tokens = max(self.max_sample_tokens, longest)
        offload = self.offload_activations and model.training
        with losses.ActivationOffload() if offload else contextlib.nullcontext():
            if not self.chunked_loss or self.label_smoother is not None or self.compute_loss_func is not None:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            # The same normalisation as the model's own loss inside super().compute_loss.
            items = num_items_in_batch if self.model_accepts_loss_kwargs else None
            output_layer = self.accelerator.unwrap_model(model).get_output_embeddings()
            loss, outputs = losses.model_loss_from_hidden(model, output_layer, inputs, self.loss_chunk_size, items,
                                                          self.loss_compute_dtype)
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and items is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size() if self.args.n_gpu <= 1
                           else self.args.n_gpu)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        now = time.time()
        if "loss" in logs:
            tokens, since = self._last_log
            if since is not None and now > since:
                # Ranks see equal-sized batches; local tokens x world size, no extra communication per log.
                logs["train_tokens_per_second"] = round(
                    (self.trained_tokens - tokens) * self.args.world_size / (now - since), 1)
            self._last_log = (self.trained_tokens, now)
        super().log(logs, start_time)
        self.report_metrics(logs)


class _MarkCompleteCheckpoints(TrainerCallback):
    """on_save runs after the Trainer has written the whole checkpoint: mark it usable for resume."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.exists():
                (folder / COMPLETE_MARKER).write_text(str(state.global_step))


def prepare_for_training(model: Any, cfg: Any, fsdp: bool = False) -> Any:
    """Gradient checkpointing (non-reentrant), and for a 4-bit base peft's k-bit preparation, which upcasts every
    weight that is not 4-bit to fp32. Under FSDP that preparation is skipped, as in peft's FSDP-QLoRA guide and
    TRL: FSDP (``use_orig_params: false``) flattens each wrapped layer into one tensor of one dtype, and the
    4-bit weights are stored in the compute dtype, like the rest of the model."""
    from peft import prepare_model_for_kbit_training

    _keep_4bit_encoding_stable(model)
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


def _keep_4bit_encoding_stable(model: Any) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes re-encodes 4-bit weights (absmax in bf16) at the first
    inference pass, e.g. the first evaluation. That changes the numbers mid-training and makes a resumed
    run differ from an uninterrupted one, so training keeps the original encoding."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    values = [h[key] for h in history if key in h]
    return values[-1] if values else None


def _sum_over_ranks(value: int) -> int:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    total = torch.tensor([value], dtype=torch.long, device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(total)
    return int(total.item())


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():  # reserved, not allocated: what the card must hold (the allocator's cache too)
        return round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB
