"""QLoraTrainer (supervised fine-tuning): 4-bit NF4 base + LoRA adapter, trained with transformers' Trainer.

Reads top to bottom: load the policy (the trainer kit: 4-bit base prepared for k-bit training with non-reentrant
gradient checkpointing, LoRA attached), build TrainingArguments from the kit's shared arguments plus evaluation and
early stopping, resume from the newest complete checkpoint, train, evaluate, save the adapter atomically.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, Trainer

from llm_trainer.data.collate import LengthGroupedSampler, collator_for, compute_efficiency
from llm_trainer.data.packing import sample_lengths
from llm_trainer.data.tokenization import IGNORE_INDEX
from llm_trainer.progress import TrainingProgress
from llm_trainer import losses
from llm_trainer.system_metrics import card_peak_tflops, model_flops_utilization, train_flops_per_token
from llm_trainer.training.base import BaseTrainer, LoraAdapter, MetricsHook, TrainResult
from llm_trainer.training.kit import (MarkCompleteCheckpoints, RunFolderTrainerMixin, load_policy, one_gpu_per_process,
                                      peak_memory_mb, resume_checkpoint, save_adapter, shared_arguments,
                                      sum_over_ranks)


class QLoraTrainer(BaseTrainer):
    """``training.trainer: qlora``: supervised fine-tuning of a LoRA adapter on a 4-bit base."""

    def train(self, tokenized: Any, tokenizer: Any, run_dir: Path, on_metrics: MetricsHook | None = None
              ) -> TrainResult:
        """Train on the tokenized blocks (resuming a checkpoint), evaluate, save the adapter."""
        import torch
        from transformers import set_seed

        cfg = self.cfg
        set_seed(cfg.seed)  # before get_peft_model: LoRA's A matrices are initialised from the global RNG
        run_dir = Path(run_dir)
        base_model = self.base_model_for(tokenizer)
        fsdp = cfg.training.distributed.fsdp and int(os.environ.get("WORLD_SIZE", "1")) > 1
        if fsdp:  # the process group before the model: transformers loads for FSDP only once it exists
            from accelerate import PartialState

            PartialState()
        model = load_policy(cfg, base_model, fsdp)
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
            # MFU at each log on a GPU whose peak is known (llm_trainer/system_metrics.py's table)
            trainer.peak_tflops = card_peak_tflops()
            trainer.flops_per_token = train_flops_per_token(model, cfg.data.max_seq_length,
                                                            t.gradient_checkpointing)
        started = time.time()
        trainer._last_log = (0, started)
        trainer.train(resume_from_checkpoint=resume_checkpoint(cfg.training, run_dir / "checkpoints"))
        wall_time = time.time() - started
        final_eval = trainer.evaluate() if eval_dataset is not None else {}

        trained_tokens = sum_over_ranks(trainer.trained_tokens)
        # FSDP holds each rank's shard: every rank takes part in gathering the weights, rank 0 gets them
        state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped) if trainer.is_fsdp_enabled else None
        adapter_dir = save_adapter(trainer, model, tokenizer, cfg, base_model, run_dir, state_dict=state_dict)
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
            "peak_memory_mb": peak_memory_mb(),
            "train_mfu": _round(model_flops_utilization(trainer.input_tokens / wall_time if wall_time else 0.0,
                                                        trainer.flops_per_token or 0.0, trainer.peak_tflops)),
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
        """The kit's shared arguments, plus evaluation, early stopping and the fused-kernel choice."""
        import torch
        from transformers import TrainingArguments

        t = self.cfg.training
        early_stopping = has_eval and t.early_stopping_patience is not None
        return one_gpu_per_process(TrainingArguments(
            **shared_arguments(self.cfg, output_dir),
            per_device_eval_batch_size=t.per_device_eval_batch_size,
            eval_strategy="steps" if has_eval else "no",
            eval_steps=t.eval_steps or t.save_steps,
            eval_on_start=has_eval,
            load_best_model_at_end=early_stopping,
            metric_for_best_model="eval_loss" if early_stopping else None,
            use_liger_kernel=losses.use_liger_kernel(t.use_liger_kernel, torch.cuda.is_available()),
        ))

    def _callbacks(self) -> list[Any]:
        from transformers import EarlyStoppingCallback

        callbacks: list[Any] = [MarkCompleteCheckpoints(), TrainingProgress()]
        if self.cfg.training.early_stopping_patience is not None:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=self.cfg.training.early_stopping_patience,
                                                   early_stopping_threshold=self.cfg.training.early_stopping_threshold))
        return callbacks


class _TrackingTrainer(RunFolderTrainerMixin, Trainer):
    """Counts trained (label) tokens and reports throughput and metrics at every log; computes the loss in
    chunks from the last hidden states when configured (llm_trainer.losses)."""

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
    _last_input_tokens = 0
    flops_per_token: float | None = None  # set on a GPU: MFU is logged when the card's peak is known too
    peak_tflops: float | None = None

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
                # MFU per GPU: every token fed (prompt and padding tails too) costs the model's FLOPs.
                mfu = model_flops_utilization((self.input_tokens - self._last_input_tokens) / (now - since),
                                              self.flops_per_token or 0.0, self.peak_tflops)
                if mfu is not None:
                    logs["train_mfu"] = round(mfu, 4)
            self._last_log = (self.trained_tokens, now)
            self._last_input_tokens = self.input_tokens
        super().log(logs, start_time)
        self.report_metrics(logs)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    values = [h[key] for h in history if key in h]
    return values[-1] if values else None
