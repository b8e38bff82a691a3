"""DpoTrainer: direct preference optimisation on TRL's DPOTrainer, on the same 4-bit base + LoRA path as SFT.

Reads top to bottom: load the policy (the trainer kit: the base, 4-bit unless ``model.load_in_4bit: false``, with a
fresh adapter or ``model.init_adapter``, e.g. the SFT version to go on from), get the preference pairs (the
processed rows when they are pairs, ``data.processor: preference``; else, with ``training.dpo.pairs: verifier``,
pairs the starting adapter's own sampled answers make, judged by the verifier: llm_trainer.training.pairs), drop
pairs over the length limits (counted), train, measure reward accuracy and margin on the held-out pairs, and save
the adapter atomically.

The reference model is the starting adapter: TRL copies a trained adapter's LoRA weights into a frozen "ref"
adapter on the same base (a fresh adapter's reference is the base with the adapter disabled), so the base model is
in memory once. Prompts are the row's chat turns before the answer through the tokenizer's chat template, as in
SFT, evaluation and GRPO; only the answer tokens are scored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PrinterCallback
from trl import DPOConfig, DPOTrainer

from llm_trainer.errors import DataError, UserError
from llm_trainer.fsutil import write_dir_atomically
from llm_trainer.progress import ProgressWithFigures
from llm_trainer.training.base import BaseTrainer, LoraAdapter, MetricsHook, TrainResult
from llm_trainer.training.sft_term import SftTermMixin, data_sft_term
from llm_trainer.training.kit import (MarkCompleteCheckpoints, RunFolderTrainerMixin, load_policy,
                                      lora_weights_in_float32, one_gpu_per_process, peak_memory_mb,
                                      save_adapter, shared_arguments, timed_train)

PAIRS_FOLDER = "pairs"  # the run's pairs (verifier-built ones cost a generation pass): reused on resume
TRACKED = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


class DpoTrainer(BaseTrainer):
    """``training.trainer: dpo``. Trains on processed rows: preference pairs, or questions to build pairs from."""

    inputs = "processed"

    def train(self, processed: Any, tokenizer: Any, run_dir: Path, on_metrics: MetricsHook | None = None
              ) -> TrainResult:
        """DPO on the pairs (built first when configured); held-out pair metrics; save the adapter."""
        from transformers import set_seed

        cfg = self.cfg
        set_seed(cfg.seed)
        run_dir = Path(run_dir)
        base_model = self.base_model_for(tokenizer)
        model = load_policy(cfg, base_model)
        train_pairs, held_out, counts = self._pairs(processed, model, tokenizer, run_dir)
        trainer = _TrackingDpoTrainer(
            model=model, ref_model=None, args=self._dpo_arguments(run_dir / "checkpoints"),
            train_dataset=train_pairs, processing_class=tokenizer,
            callbacks=self._callbacks())
        trainer.on_metrics = on_metrics
        trainer.sft_term = data_sft_term(processed, tokenizer, cfg, cfg.training.dpo.data_sft_weight,
                                         cfg.training.dpo.data_sft_batch_size)
        trainer.remove_callback(PrinterCallback)
        lora_weights_in_float32(model)
        trainable, total = model.get_nb_trainable_parameters()
        wall_time = timed_train(trainer, cfg.training, run_dir / "checkpoints")
        held_out_metrics = trainer.evaluate(eval_dataset=held_out) if held_out is not None and len(held_out) else {}
        adapter_dir = save_adapter(trainer, model, tokenizer, cfg, base_model, run_dir, selected_adapters=["default"])
        history = list(trainer.state.log_history)
        logged = [h for h in history if "loss" in h and "rewards/margins" in h]
        ends = {"first": logged[0], "last": logged[-1]} if logged else {}
        metrics = {
            **counts,
            "dpo_train_pairs": len(train_pairs),
            "dpo_held_out_pairs": len(held_out) if held_out is not None else 0,
            "global_step": trainer.state.global_step,
            "wall_time_s": round(wall_time, 2),
            "peak_memory_mb": peak_memory_mb(),
            "trainable_params": int(trainable),
            "total_params": int(total),
            **{f"{end}_{k}": row[k] for end, row in ends.items()
               for k in ("loss", *TRACKED, "data_sft_loss") if k in row},
            **{f"held_out_{k.removeprefix('eval_')}": v for k, v in held_out_metrics.items()
               if k.removeprefix("eval_") in (*TRACKED, "loss")},
        }
        return TrainResult(adapter=LoraAdapter(path=adapter_dir, base_model=base_model), metrics=metrics,
                           history=history, model=model)

    def _pairs(self, processed: Any, model: Any, tokenizer: Any, run_dir: Path) -> tuple[Any, Any, dict[str, float]]:
        """(train pairs, held-out pairs, counts): the data's pairs, or verifier-built ones (saved in the run folder
        and reused by a resumed run), each without the pairs over the length limits."""
        d = self.cfg.training.dpo
        split = processed["train"] if hasattr(processed, "keys") else processed
        if d.pairs == "verifier" and not {"chosen", "rejected"} <= set(split.column_names):
            processed, counts = self._verifier_pairs(processed, model, tokenizer, run_dir)
            split = processed["train"]
        elif {"chosen", "rejected"} <= set(split.column_names):
            counts = {"dpo_pairs_read": len(split)}
        else:
            raise UserError("training.trainer dpo: the train rows are no preference pairs (no chosen and rejected "
                            f"columns; columns: {', '.join(split.column_names)}); use data.processor: preference, or "
                            "set training.dpo.pairs: verifier to build pairs from the questions with the verifier")
        pairs = preference_rows(split)
        validation = processed.get("validation") if hasattr(processed, "get") else None
        held_out = preference_rows(validation) if validation is not None and len(validation) else None
        pairs, too_long = within_lengths(pairs, tokenizer, d.max_prompt_length, d.max_length)
        counts = {**counts, "dpo_pairs_too_long": too_long}
        if held_out is not None:
            held_out, held_out_too_long = within_lengths(held_out, tokenizer, d.max_prompt_length, d.max_length)
            counts["dpo_pairs_too_long"] += held_out_too_long
        if not len(pairs):
            raise DataError(f"training.trainer dpo: no train pair is left ({too_long} longer than "
                            f"training.dpo.max_prompt_length {d.max_prompt_length} or max_length {d.max_length})")
        return pairs, held_out, counts

    def _callbacks(self) -> list[Any]:
        return [MarkCompleteCheckpoints(), ProgressWithFigures({"rewards/margins": "margin {:.3f}",
                                                                "rewards/accuracies": "pair accuracy {:.2f}"})]

    def _verifier_pairs(self, processed: Any, model: Any, tokenizer: Any, run_dir: Path
                        ) -> tuple[Any, dict[str, float]]:
        """Pairs the starting model's own answers make (llm_trainer.training.pairs), as train and validation
        splits; saved in the run folder, so that a resumed run trains on the same pairs without sampling again."""
        import datasets

        from llm_trainer.training.pairs import build_pairs, pair_splits

        folder = run_dir / PAIRS_FOLDER
        if (folder / "counts.json").is_file():
            return datasets.load_from_disk(str(folder / "rows")), json.loads((folder / "counts.json").read_text())
        pairs, counts = build_pairs(model, tokenizer, processed, self.cfg)
        splits = pair_splits(pairs, self.cfg.training.dpo.validation_share)

        def save(staging: str) -> None:
            splits.save_to_disk(str(Path(staging) / "rows"))
            (Path(staging) / "counts.json").write_text(json.dumps(counts))

        write_dir_atomically(folder, save, replace=True)
        return splits, counts

    def _dpo_arguments(self, output_dir: Path) -> DPOConfig:
        """The kit's shared arguments (batch sizes in pairs), plus DPO's own (``training.dpo``)."""
        d, t = self.cfg.training.dpo, self.cfg.training
        return one_gpu_per_process(DPOConfig(
            **shared_arguments(self.cfg, output_dir),
            per_device_eval_batch_size=t.per_device_eval_batch_size,
            beta=d.beta,
            loss_type=[d.loss_type, "sft"] if d.sft_weight else [d.loss_type],
            loss_weights=[1.0, d.sft_weight] if d.sft_weight else None,
            label_smoothing=d.label_smoothing,
            max_length=d.max_length,
            eval_strategy="no",
            gradient_checkpointing=t.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        ))


def preference_rows(split: Any) -> Any:
    """Processed preference rows (``messages`` ending with the chosen answer, ``chosen`` and ``rejected`` texts) as
    TRL's conversational pairs; rows already in that shape pass through."""
    if "messages" not in split.column_names or (len(split) and isinstance(split[0]["chosen"], list)):
        return split
    keep = [c for c in ("messages", "chosen", "rejected", "reference_answer") if c in split.column_names]

    def to_pairs(batch: dict[str, list]) -> dict[str, list]:
        return {"prompt": [m[:-1] for m in batch["messages"]],
                "chosen": [[{"role": "assistant", "content": c}] for c in batch["chosen"]],
                "rejected": [[{"role": "assistant", "content": r}] for r in batch["rejected"]]}

    return split.select_columns(keep).map(to_pairs, batched=True, remove_columns=["messages"], desc="DPO pairs")


def within_lengths(pairs: Any, tokenizer: Any, max_prompt: int, max_length: int) -> tuple[Any, int]:
    """The pairs whose prompt fits ``max_prompt`` tokens and whose prompt plus longer answer fits ``max_length``
    (TRL would cut them, training on answers without their end); and how many were dropped."""
    if not len(pairs):
        return pairs, 0
    prompts = _ids(tokenizer.apply_chat_template(list(pairs["prompt"]), add_generation_prompt=True, tokenize=True))
    lengths = np.array([len(ids) for ids in prompts])
    answers = [np.array([len(ids) for ids in tokenizer([turns[0]["content"] for turns in pairs[side]],
                                                       add_special_tokens=False)["input_ids"]])
               for side in ("chosen", "rejected")]
    longer = np.maximum(*answers)
    fits = (lengths <= max_prompt) & (lengths + longer + 1 <= max_length)  # + the end-of-turn token
    return pairs.select(np.flatnonzero(fits)), int((~fits).sum())


def _ids(encoded: Any) -> list[list[int]]:
    """apply_chat_template's token ids for a batch (lists, or a BatchEncoding in newer transformers)."""
    return encoded["input_ids"] if hasattr(encoded, "keys") else encoded


class _TrackingDpoTrainer(SftTermMixin, RunFolderTrainerMixin, DPOTrainer):
    """Metrics to the project's hook (TRL's rewards/* means included); the SFT term (``training.dpo.data_sft_weight``)
    added to the loss."""

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        super().log(logs, start_time)  # adds TRL's rewards/* means since the last log to ``logs``
        self.report_metrics(logs)
