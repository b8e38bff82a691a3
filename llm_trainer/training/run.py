"""One training run: its folder (keyed by what it was made from), in this process or in accelerate-launched ones."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from llm_trainer.config import RunConfig, TrainSpec
from llm_trainer.registry import TRAINERS
from llm_trainer.training.base import MetricsHook, TrainResult, build_trainer
from llm_trainer.training.distributed import machine_rank, process_count, train_in_processes


def run_folder(spec: TrainSpec, data_fingerprint: str) -> Path:
    """``output_dir/name/<key>``: the key changes with the training sections, the data and the seed, so a re-run
    of the same things finds its checkpoints (and resumes) and anything else starts afresh."""
    sections = ("data", "model", "lora", "training") + (("scoring",) if spec.scoring is not None else ())
    key = hashlib.sha256(f"{spec.section_hash(*sections)}|{data_fingerprint}|{spec.seed}".encode()).hexdigest()[:12]
    return Path(spec.output_dir) / spec.name / key


def run_training(spec: TrainSpec | RunConfig, tokenized: Any, tokenizer: Any, run_dir: Path,
                 on_metrics: MetricsHook | None = None, keep_model: bool = False,
                 base_model: str | None = None, processed: Any = None) -> TrainResult:
    """Train in this process, or, with more than one process in all (``training.num_processes`` x
    ``training.distributed.num_machines``), in processes started by accelerate's launcher. Unless ``keep_model``,
    the trained model is dropped and its (GPU) memory freed before returning: the next step in this process
    (evaluation) loads its own. The run folder is held meanwhile: a second run of the same config and data
    waits for this one instead of resuming from its live checkpoints. ``processed``: the processed rows, which
    trainers that take them (``BaseTrainer.inputs == "processed"``, e.g. GRPO) train on instead of the blocks."""
    from llm_trainer.fsutil import run_folder_lock

    if isinstance(spec, RunConfig):  # a whole config (library use): training reads its own sections only
        spec = spec.train_spec()
    if base_model is None:  # resolved (the tiny model built) once here, not in every process
        from llm_trainer.base_model import resolve_base_model

        base_model = resolve_base_model(spec.model, tokenizer, spec.seed).name_or_path
    if processed is not None and TRAINERS.resolve(spec.training.trainer).inputs == "processed":
        tokenized = processed  # e.g. GRPO trains on the prompts and references (it says so if given blocks)
    # Only machine 0 holds the run folder: on shared storage (NFS, EFS) the lock is cluster-wide, and machine 1
    # would wait for it while machine 0 waits for machine 1 at the rendezvous.
    with run_folder_lock(run_dir) if machine_rank(spec) == 0 else contextlib.nullcontext():
        # Not across machines: the others would wait at the rendezvous for a machine 0 that trains nothing.
        reuse = not keep_model and spec.training.resume == "auto" and spec.training.distributed.num_machines == 1
        result = TrainResult.load_finished(run_dir, base_model) if reuse else None
        if result is not None:
            print(f"training: the run in {run_dir} finished before (same config, data and seed): its adapter and "
                  "figures are reused (training.resume=never trains again)", flush=True)
        else:
            if process_count(spec) * spec.training.distributed.num_machines > 1:
                result = train_in_processes(spec, base_model, tokenized, tokenizer, run_dir, on_metrics)
            else:
                result = build_trainer(spec, base_model).train(tokenized, tokenizer, run_dir, on_metrics)
            if result.primary:
                result.save(run_dir)
    if spec.model.is_tiny and result.primary:  # what the offline base model cost to build (then cached by content)
        from llm_trainer.tiny_model import build_info

        result.metrics.update({f"tiny_model_{k}": v for k, v in build_info(result.adapter.base_model).items()})
    if not keep_model:
        from llm_trainer.modeling import free_accelerator_memory

        result.model = None
        free_accelerator_memory()
    return result

