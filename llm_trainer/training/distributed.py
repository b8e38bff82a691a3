"""Data-parallel training through accelerate's launcher: ``training.num_processes`` processes on each of
``training.distributed.num_machines`` machines.

The caller (the train step) saves the tokenized data, tokenizer, spec and base model to the run folder and runs
``accelerate launch`` once; accelerate starts the processes through torchrun, which meets on machine 0's
``main_process_ip:port`` and stops every process when one fails. Inside each process transformers' Trainer runs
on accelerate, which wraps the model in DDP (NCCL on GPUs, gloo on CPU) or, with ``distributed.fsdp``, in FSDP.
Global rank 0 alone saves the adapter and writes metrics; the caller streams those metrics to its tracking hook
while the processes run, so they are logged once.

On one machine the rendezvous is 127.0.0.1 on a free port, and gloo's and NCCL's sockets use the loopback
interface. torch's TCPStore (the rendezvous store) still listens on every interface whatever address it is
given; that port is open only while the run lasts.

Several machines: each runs the same launch with its own ``machine_rank`` (or $NODE_RANK), with
``main_process_ip``/``main_process_port`` (or $MASTER_ADDR/$MASTER_PORT) naming machine 0, and the run folder
(``output_dir``) on storage they share; ``launch_command`` is what each of them runs.

    python -m llm_trainer.training.distributed RUN_DIR/launch     # what each process runs
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llm_trainer.config import TrainSpec
from llm_trainer.errors import UserError
from llm_trainer.training.base import LoraAdapter, MetricsHook, TrainResult, build_trainer

METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
LOG_FILE = "workers.log"


def free_port() -> int:
    """A TCP port free on this machine now, for the rendezvous of a single-machine run."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_count(spec: TrainSpec) -> int:
    """``training.num_processes`` on this machine, with 'auto' as one process per visible GPU (1 without one)."""
    if spec.training.num_processes != "auto":
        return spec.training.num_processes
    from llm_trainer.modeling import visible_gpus

    return max(1, visible_gpus())


def machine_rank(spec: TrainSpec, env: dict[str, str] | None = None) -> int:
    """``training.distributed.machine_rank``, else $NODE_RANK, else 0."""
    env = os.environ if env is None else env
    rank = spec.training.distributed.machine_rank
    return rank if rank is not None else int(env.get("NODE_RANK", 0))


def launch_command(spec: TrainSpec, launch: Path, env: dict[str, str] | None = None) -> list[str]:
    """``accelerate launch`` with this machine's share of the run, its rank and machine 0's address."""
    env = os.environ if env is None else env
    d = spec.training.distributed
    per_machine = process_count(spec)
    rank = machine_rank(spec, env)
    single = d.num_machines == 1
    ip = d.main_process_ip or env.get("MASTER_ADDR") or "127.0.0.1"
    port = d.main_process_port or int(env.get("MASTER_PORT", 0)) or (free_port() if single else 29500)
    # accelerate takes one of --multi_gpu (DDP) and --use_fsdp; both start the processes through torchrun
    command = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp" if d.fsdp else "--multi_gpu",
               "--num_processes", str(per_machine * d.num_machines), "--num_machines", str(d.num_machines),
               "--machine_rank", str(rank), "--main_process_ip", ip, "--main_process_port", str(port),
               "--mixed_precision", "no", "--dynamo_backend", "no"]  # the Trainer sets the precision itself
    if d.fsdp:  # QLoRA under FSDP, as peft documents it (the 4-bit storage dtype is set where the model loads)
        command += ["--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD",
                    "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_use_orig_params", "false",
                    "--fsdp_cpu_ram_efficient_loading", "true", "--fsdp_sync_module_states", "true",
                    "--fsdp_state_dict_type", "SHARDED_STATE_DICT", "--fsdp_offload_params", "false"]
    return [*command, "-m", "llm_trainer.training.distributed", str(launch)]


def train_in_processes(spec: TrainSpec, base_model: str, tokenized: Any, tokenizer: Any, run_dir: Path,
                       on_metrics: MetricsHook | None = None) -> TrainResult:
    """Machine 0 returns the result; the others (``primary`` False) return once their processes are done, without
    metrics: global rank 0 runs on machine 0, and only there are metrics forwarded and the result read. Each
    machine prepares its own launch folder, so that machines on shared storage do not write the same files."""
    import torch

    rank = machine_rank(spec)
    launch = Path(run_dir) / ("launch" if rank == 0 else f"launch-machine-{rank}")
    launch.mkdir(parents=True, exist_ok=True)
    for stale in (METRICS_FILE, RESULT_FILE):
        (launch / stale).unlink(missing_ok=True)
    tokenized.save_to_disk(str(launch / "tokenized"))
    tokenizer.save_pretrained(str(launch / "tokenizer"))
    (launch / "spec.json").write_text(spec.model_dump_json())
    (launch / "base_model.json").write_text(json.dumps({"base_model": base_model}))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if spec.training.distributed.num_machines == 1:  # gloo and NCCL talk over the loopback interface only
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"
    command = launch_command(spec, launch, env)
    log_path = launch / LOG_FILE
    with log_path.open("w") as log:
        launcher = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        seen = 0
        while launcher.poll() is None:
            time.sleep(0.5)
            seen = _forward_metrics(launch / METRICS_FILE, seen, on_metrics)
        _forward_metrics(launch / METRICS_FILE, seen, on_metrics)
    processes = int(command[command.index("--num_processes") + 1])
    if rank != 0 and not launcher.returncode:
        return TrainResult(adapter=LoraAdapter(path=Path(run_dir) / "adapter", base_model=base_model), primary=False)
    if launcher.returncode or not (launch / RESULT_FILE).exists():
        raise UserError(f"training in {processes} processes failed (launcher exit code {launcher.returncode}): "
                        f"{_first_exception(log_path) or 'no exception printed'}; log: {log_path}")
    result = json.loads((launch / RESULT_FILE).read_text())
    return TrainResult(adapter=LoraAdapter(path=Path(result["adapter"]), base_model=result["base_model"]),
                       metrics=result["metrics"], history=result["history"])


def _first_exception(log_path: Path) -> str | None:
    """The first Python exception line a process printed (e.g. "IsADirectoryError: ..."), on one line: the cause;
    the other processes' errors (a peer closed the connection) follow from it."""
    import re

    found = [line for line in re.findall(r"\b([A-Za-z_.]*(?:Error|Exception): .*)", log_path.read_text(errors="replace"))
             if "ChildFailedError" not in line]  # torchrun's own report that a process failed
    return " ".join(found[0].split())[:300] if found else None


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
    """One process: train with the Trainer (accelerate joins the process group from torchrun's environment);
    global rank 0 writes metrics and the result."""
    import datasets
    import torch.distributed as dist
    from transformers import AutoTokenizer

    spec = TrainSpec.model_validate_json((launch / "spec.json").read_text())
    base_model = json.loads((launch / "base_model.json").read_text())["base_model"]
    tokenized = datasets.load_from_disk(str(launch / "tokenized"))
    tokenizer = AutoTokenizer.from_pretrained(str(launch / "tokenizer"), trust_remote_code=spec.model.trust_remote_code)
    rank = int(os.environ.get("RANK", "0"))
    metrics_file = (launch / METRICS_FILE).open("a") if rank == 0 else None

    def write_metrics(metrics: dict[str, float], step: int) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps({"step": step, "metrics": metrics}) + "\n")
            metrics_file.flush()

    result = build_trainer(spec, base_model).train(tokenized, tokenizer, launch.parent, on_metrics=write_metrics)
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


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
