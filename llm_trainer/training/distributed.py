"""Data-parallel training in N processes: ``training.num_processes: N``.

The caller (the train step) saves the tokenized data, tokenizer and config to the run folder and starts N
worker processes on this machine; each joins the process group through a file in the run folder (no TCP
rendezvous store: torch's TCPStore listens on every network interface whatever host it is given) with
gloo's and NCCL's sockets on the loopback interface. Inside each worker transformers' Trainer runs on
accelerate, which wraps the model in DDP (NCCL on GPUs, gloo on CPU). Rank 0 alone saves the adapter and
writes metrics; the caller streams those metrics to its tracking hook while the workers run, so they are
logged once. If one worker fails, the others are stopped.

    python -m llm_trainer.training.distributed RUN_DIR/launch     # what each worker runs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llm_trainer.config import RunConfig
from llm_trainer.errors import UserError
from llm_trainer.training.base import LoraAdapter, MetricsHook, TrainResult, build_trainer, process_count

METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
RENDEZVOUS_FILE = "rendezvous"
RENDEZVOUS_ENV = "LLM_TRAINER_RENDEZVOUS"


def train_in_processes(cfg: RunConfig, tokenized: Any, tokenizer: Any, run_dir: Path,
                       on_metrics: MetricsHook | None = None) -> TrainResult:
    import torch

    launch = Path(run_dir) / "launch"
    for stale in (METRICS_FILE, RESULT_FILE):
        (launch / stale).unlink(missing_ok=True)
    launch.mkdir(parents=True, exist_ok=True)
    tokenized.save_to_disk(str(launch / "tokenized"))
    tokenizer.save_pretrained(str(launch / "tokenizer"))
    (launch / "config.json").write_text(cfg.model_dump_json())
    rendezvous = launch / RENDEZVOUS_FILE
    rendezvous.unlink(missing_ok=True)  # a FileStore file left by an earlier run would confuse this one
    n = process_count(cfg)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "WORLD_SIZE": str(n),
           "LOCAL_WORLD_SIZE": str(n), RENDEZVOUS_ENV: str(rendezvous),
           "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
           "NCCL_SOCKET_IFNAME": os.environ.get("NCCL_SOCKET_IFNAME", "lo")}
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"
    log_path = launch / "workers.log"
    with log_path.open("w") as log:
        workers = [subprocess.Popen([sys.executable, "-m", "llm_trainer.training.distributed", str(launch)],
                                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                    stdout=log, stderr=subprocess.STDOUT) for rank in range(n)]
        seen = 0
        while any(w.poll() is None for w in workers):
            time.sleep(0.5)
            seen = _forward_metrics(launch / METRICS_FILE, seen, on_metrics)
            if any(w.returncode not in (None, 0) for w in workers):  # the others would wait for it forever
                for w in workers:
                    if w.poll() is None:
                        w.kill()
                        w.wait()
        _forward_metrics(launch / METRICS_FILE, seen, on_metrics)
    codes = [w.returncode for w in workers]
    if any(codes) or not (launch / RESULT_FILE).exists():
        tail = " | ".join(log_path.read_text().strip().splitlines()[-3:])
        raise UserError(f"training in {n} processes failed (exit codes {codes}); log: {log_path}; "
                        f"last lines: {tail}")
    result = json.loads((launch / RESULT_FILE).read_text())
    return TrainResult(adapter=LoraAdapter(path=Path(result["adapter"]), base_model=result["base_model"]),
                       metrics=result["metrics"], history=result["history"])


def _forward_metrics(path: Path, seen: int, on_metrics: MetricsHook | None) -> int:
    """Pass the metrics lines written since the last call to the hook; return how many lines are done."""
    if not path.exists():
        return seen
    text = path.read_text()  # one read: the worker may append between two, leaving a half line "complete"
    complete = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
    for line in complete[seen:]:
        record = json.loads(line)
        if on_metrics is not None:
            on_metrics(record["metrics"], record["step"])
    return len(complete)


def worker(launch: Path) -> None:
    """One rank: train with the Trainer (DDP through accelerate); rank 0 writes metrics and the result."""
    import datasets
    import torch.distributed as dist
    from transformers import AutoTokenizer

    cfg = RunConfig.model_validate_json((launch / "config.json").read_text())
    tokenized = datasets.load_from_disk(str(launch / "tokenized"))
    tokenizer = AutoTokenizer.from_pretrained(str(launch / "tokenizer"), trust_remote_code=cfg.model.trust_remote_code)
    rank = int(os.environ.get("RANK", "0"))
    _join_process_group(rank, int(os.environ["WORLD_SIZE"]))
    metrics_file = (launch / METRICS_FILE).open("a") if rank == 0 else None

    def write_metrics(metrics: dict[str, float], step: int) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps({"step": step, "metrics": metrics}) + "\n")
            metrics_file.flush()

    result = build_trainer(cfg).train(tokenized, tokenizer, launch.parent, on_metrics=write_metrics)
    (launch / f"rank-{rank}.json").write_text(json.dumps({"trained_tokens": result.metrics.get("local_trained_tokens"),
                                                         "global_step": result.metrics.get("global_step"),
                                                         "lora_digest": _lora_digest(result.model)}))
    if rank == 0:
        metrics_file.close()
        payload = {"adapter": str(result.adapter.path), "base_model": result.adapter.base_model,
                   "metrics": result.metrics, "history": result.history}
        (launch / RESULT_FILE).write_text(json.dumps(payload, default=str))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _lora_digest(model: Any) -> str:
    """A hash of this rank's LoRA weights: every rank must hold the same ones (DDP keeps them in step)."""
    import hashlib

    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        if "lora_" in name:
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _join_process_group(rank: int, world_size: int) -> None:
    """Join through the run folder's file store; accelerate then uses this process group as it is."""
    import torch
    import torch.distributed as dist

    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group("nccl" if on_gpu else "gloo", init_method=f"file://{os.environ[RENDEZVOUS_ENV]}",
                            rank=rank, world_size=world_size)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
