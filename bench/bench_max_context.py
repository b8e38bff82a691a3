"""Benchmark: the longest context that trains one step at batch 1 under a memory cap, CPU.

model:    random weights in Llama 3's shape where it matters for memory: a vocabulary of 128,256, hidden 1024,
          2 layers (8 heads, 2 key-value heads, MLP 3584), 4-bit NF4 linear layers (fp32 compute), LoRA r 16
          on all linear layers, non-reentrant gradient checkpointing, one sample of CONTEXT tokens.
project:  the library's QLoraTrainer with its defaults for such a model: the chunked loss ('auto': the
          vocabulary is over 32k), so no [tokens, 128256] logits exist.
baseline: transformers' Trainer + peft, the same model, LoRA and checkpointing: the model's own loss.

Each measurement is a fresh subprocess that trains one step and reports its peak resident memory (ru_maxrss)
and the step's wall time. Peak memory grows linearly with the context (SDPA's causal kernel keeps attention
linear), so two context lengths per path give the fixed part and the cost per 1k tokens; the largest context
under the cap follows. Where a cgroup-v1 memory controller is writable (root on Linux), that prediction is
then checked: the predicted context must train inside a cgroup capped at the limit, and the baseline must be
killed at the project's context. Elsewhere the table says 'not checked'.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, emit, report, row, scratch

VOCAB, HIDDEN, LAYERS = 128_256, 1024, 2
CAP_GIB = 4.0
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
ROUND = 256  # contexts are multiples of this


def build_model(folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=3584, num_hidden_layers=LAYERS,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=131_072,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    # The trainers only need a pad id and something to save next to the adapter.
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 3},
                                                                                    unk_token="<unk>")),
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    return folder


def _sample(context: int):
    import datasets
    import numpy as np

    ids = np.random.default_rng(context).integers(4, VOCAB, context).tolist()
    labels = [-100] * (context // 8) + ids[context // 8:]  # a prompt, then the answer that is trained
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"input_ids": [ids], "labels": [labels], "length": [context]})})


def _config(model_dir: Path):
    from llm_trainer.config import RunConfig

    return RunConfig.model_validate({
        "name": "max-context", "data": {"source": str(ROOT / "data" / "sample"), "packing": False},
        "model": {"base_model": str(model_dir), "allow_cpu": True, "bnb_4bit_compute_dtype": "float32"},
        "training": {"max_steps": 1, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1,
                     "optim": "adamw_torch", "save_steps": 1000, "logging_steps": 1, "warmup_steps": 0},
    })


def project_worker(model_dir: Path, context: int, out: Path) -> dict:
    from transformers import AutoTokenizer

    from llm_trainer.training import build_trainer

    cfg = _config(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = build_trainer(cfg, base_model=str(model_dir))
    _reset_peak_after_loading(trainer)
    result = trainer.train(_sample(context), tokenizer, out)
    m = result.metrics
    return {"seconds": m["wall_time_s"], "loss": m["train_loss"], "chunked_loss": m["chunked_loss"],
            "load_peak_mb": LOAD_PEAK["mb"]}


def baseline_worker(model_dir: Path, context: int, out: Path) -> dict:
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer, TrainingArguments, default_data_collator, set_seed

    from llm_trainer.modeling import load_model, lora_config

    cfg = _config(model_dir)
    set_seed(cfg.seed)
    model = load_model(str(model_dir), cfg.model)
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, lora_config(cfg.lora))
    args = TrainingArguments(output_dir=str(out), max_steps=1, per_device_train_batch_size=1, optim="adamw_torch",
                             learning_rate=cfg.training.learning_rate, use_cpu=True, report_to="none",
                             save_strategy="no", logging_steps=1, disable_tqdm=True, seed=cfg.seed)
    trainer = Trainer(model=model, args=args, train_dataset=_sample(context)["train"],
                      data_collator=default_data_collator)
    load_peak = _reset_peak()
    started = time.time()
    trainer.train()
    return {"seconds": round(time.time() - started, 2),
            "loss": next(h["train_loss"] for h in trainer.state.log_history if "train_loss" in h),
            "load_peak_mb": load_peak}


def _vm_hwm_mb() -> float:
    """The process's peak resident memory since start or since the last reset (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> float:
    """Reset VmHWM (Linux: clear_refs 5) and return the peak before, so that the step's own peak is measured."""
    before = _vm_hwm_mb()
    Path("/proc/self/clear_refs").write_text("5")
    return before


LOAD_PEAK: dict[str, float] = {}


def _reset_peak_after_loading(trainer) -> None:
    """The QLoraTrainer loads its model inside train(): reset the peak when it asks for the collator."""
    import llm_trainer.training.qlora as qlora

    original = qlora.collator_for

    def collator_then_reset(*args, **kwargs):
        LOAD_PEAK["mb"] = _reset_peak()
        return original(*args, **kwargs)

    qlora.collator_for = collator_then_reset


# ------------------------------------------------------------------- estimate for configs/reasoning.yaml (GPU)

def estimate_cards(cards_gib: tuple[int, ...] = (12, 16, 24, 40, 80)) -> list[dict]:
    """Largest batch-1 context of Llama 3 8B QLoRA (configs/reasoning.yaml) per card, from the memory model in
    llm_trainer/memory.py (the README's table); this benchmark's CPU figures check its loss terms' direction."""
    import dataclasses

    from llm_trainer import memory
    from llm_trainer.config import load_config

    job = memory.job_for(load_config(ROOT / "configs" / "reasoning.yaml"))
    offload = dataclasses.replace(job, offload_activations=True)
    return [{"card_gib": gib, "project": memory.max_train_tokens(job, gib),
             "project_offload": memory.max_train_tokens(offload, gib),
             "baseline": memory.max_train_tokens(job, gib, chunk=None)} for gib in cards_gib]


# ------------------------------------------------------------------------------------------------ measuring


def cgroup_available() -> bool:
    probe = CGROUP_ROOT / f"llm-trainer-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


def measure(path: str, model_dir: Path, context: int, cap_bytes: int | None = None) -> dict:
    """One step in a fresh subprocess, optionally inside a cgroup capped at ``cap_bytes``; a kill is 'oom'."""
    group = CGROUP_ROOT / f"llm-trainer-bench-{os.getpid()}-{path}-{context}" if cap_bytes else None
    if group is not None:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(cap_bytes))
        (group / "memory.swappiness").write_text("0")

    def enter_group():
        (group / "cgroup.procs").write_text(str(os.getpid()))

    out = scratch(f"{path}-{context}")
    command = [sys.executable, "-m", "bench.bench_max_context", "--worker", path, "--context", str(context),
               "--model", str(model_dir), "--out", str(out)]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600,
                              preexec_fn=enter_group if group is not None else None)
        failcnt = int((group / "memory.failcnt").read_text()) if group is not None else 0
    finally:
        if group is not None:
            for _ in range(50):  # the group empties once the killed process is reaped
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        if cap_bytes and (done.returncode in (-9, 137) or failcnt):
            return {"path": path, "context": context, "oom": True}
        raise RuntimeError(f"{path} at {context} tokens failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {**json.loads(lines[-1]), "path": path, "context": context, "oom": False}


def fit(points: list[dict]) -> tuple[float, float]:
    """(fixed MiB, MiB per token) through the two longest measured contexts."""
    a, b = sorted(points, key=lambda p: p["context"])[-2:]
    slope = (b["peak_mb"] - a["peak_mb"]) / (b["context"] - a["context"])
    return a["peak_mb"] - slope * a["context"], slope


def main(cap_gib: float = CAP_GIB, contexts: tuple[int, ...] = (1024, 2048, 4096), check: bool = True) -> dict:
    model_dir = build_model(scratch("max-context-model"))
    cap_mb = cap_gib * 1024
    found: dict[str, dict] = {}
    for path in ("baseline", "project"):
        points = [measure(path, model_dir, c) for c in contexts]
        print(f"{path}: " + "; ".join(f"{p['context']} tokens: {p['peak_mb']:.0f} MiB, {p['seconds']} s"
                                      for p in points), flush=True)
        fixed, per_token = fit(points)
        load_peak = max(p["load_peak_mb"] for p in points)
        largest = int((cap_mb - fixed) / per_token) // ROUND * ROUND if load_peak < cap_mb else 0
        found[path] = {"points": points, "fixed_mb": fixed, "per_token_mb": per_token, "predicted": max(largest, 0),
                       "load_peak_mb": load_peak,
                       "tokens_per_s": points[-1]["context"] / points[-1]["seconds"]}
    checks = []
    if check and cgroup_available():
        cap = int(cap_gib * 2**30)
        for path in ("baseline", "project"):
            # The prediction has no margin for what the cgroup counts beyond the resident set (page cache,
            # kernel memory) nor for the noise of two points: start at 90% of it, go up to it while the step
            # trains, and 15% down after each kill, at most 4 tries.
            tried, context = [], found[path]["predicted"] * 9 // 10 // ROUND * ROUND
            while context > 0 and len(tried) < 4:
                result = measure(path, model_dir, context, cap)
                tried.append(result)
                print(f"{path} at {context} tokens under {cap_gib:g} GiB: {'killed' if result['oom'] else 'trained'}",
                      flush=True)
                if not result["oom"]:
                    if context >= found[path]["predicted"] or any(t["oom"] for t in tried):
                        break
                    context = found[path]["predicted"]
                elif any(not t["oom"] for t in tried):  # trained below, killed here: bracketed
                    break
                else:
                    context = context * 85 // 100 // ROUND * ROUND
            checks.extend(tried)
            found[path]["checked"] = max([c["context"] for c in tried if not c["oom"]], default=0)
            found[path]["killed_at"] = min([c["context"] for c in tried if c["oom"]], default=None)
    base, proj = found["baseline"], found["project"]
    for card in estimate_cards():
        print(f"estimate, Llama 3 8B QLoRA on {card['card_gib']} GiB: project {card['project']:,} tokens "
              f"({card['project_offload']:,} with offload_activations), baseline {card['baseline']:,}", flush=True)
    verdict = ("; ".join(f"{c['path']} {c['context']}: {'killed' if c['oom'] else 'trained'}" for c in checks)
               or "not checked (no writable cgroup-v1 memory controller)")
    return report({
        "name": "max_context", "title": f"Largest context at batch 1 under {cap_gib:g} GiB (CPU, 4-bit, vocab 128k)",
        "project": "QLoraTrainer, chunked loss (auto)",
        "baseline": "transformers Trainer + peft, the model's own loss",
        "rows": [
            row("largest context under the cap (predicted)", proj["predicted"], base["predicted"], "tokens",
                ">= 3x"),
            *([row("largest context that trained in the capped cgroup", proj["checked"], base["checked"],
                   "tokens", ">= 3x")] if checks else []),
            row("peak memory per 1k tokens", proj["per_token_mb"] * 1000, base["per_token_mb"] * 1000, "MiB",
                higher_is_better=False),
            row("fixed memory (model, libraries)", proj["fixed_mb"], base["fixed_mb"], "MiB", higher_is_better=False),
            row("peak while loading the model", proj["load_peak_mb"], base["load_peak_mb"], "MiB",
                higher_is_better=False),
            *[row(f"peak memory at {p['context']} tokens", p["peak_mb"], q["peak_mb"], "MiB", higher_is_better=False)
              for p, q in zip(proj["points"], base["points"], strict=True)],
            row(f"training speed at {contexts[-1]} tokens", proj["tokens_per_s"], base["tokens_per_s"], "tokens/s"),
        ],
        "notes": [f"cap check in a cgroup of {cap_gib:g} GiB: {verdict}",
                  "peak memory: the worker's VmHWM during the training step (reset after loading the model; "
                  "whole process: Python, libraries, model, one step); the cap must also hold the loading peak"],
        "found": found, "checks": checks,
        "cards": estimate_cards(),
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["project", "baseline"])
    parser.add_argument("--context", type=int)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cap-gib", type=float, default=CAP_GIB)
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    if args.worker:
        work = project_worker if args.worker == "project" else baseline_worker
        result = work(args.model, args.context, args.out)
        emit({**result, "peak_mb": _vm_hwm_mb()})
    else:
        main(cap_gib=args.cap_gib, check=not args.no_check)
