"""QLoRA training at Llama-3-8B shape, random weights (no Hub): the project's training path against a plain padded
loop and a bare upper bound, on the same card in one process. Table on stderr, one JSON line (a section per mode).

    .venv/bin/python -m bench.gpu_qlora --shape llama3-8b      # GPU: 256 samples at 2,048 tokens, batch 2
    .venv/bin/python -m bench.gpu_qlora --shape tiny --device cpu --samples 32 --seq-len 128 --steps 4  # smoke

Each mode builds the same Llama (decoder linears in 4-bit NF4, double quant; lm_head unquantised), prepared as
QLoraTrainer does (``prepare_model_for_kbit_training``, non-reentrant checkpointing), LoRA from configs/reasoning.yaml.
- project: samples packed by ``pack_dataset``, batched by ``collator_for(True, "sdpa", pad)``, trained by the
  project's ``_TrackingTrainer`` with ``QLoraTrainer._training_arguments`` and its ``configure_memory`` (the
  chunked loss as ``training.chunked_loss`` decides: on at Llama 3's vocabulary; ``--chunked-loss`` forces it),
  configs/reasoning.yaml's training with batch, lr, optimizer and steps overridden; no evaluation or
  checkpoints; label tokens are its own count.
- baseline: a plain loop over the same samples right-padded per batch (PaddedCollator, i.e. ``packing: false``),
  in random order, with as many rows per micro-batch as give the packed side's real tokens per micro-batch
  (``--baseline-batch-size`` overrides): the ratio measures packing, not micro-batch size.
- bare: random full-length rows, every token a label: an upper bound.
Project and baseline each time one pass over the same samples after ``--warmup-steps``: the same label tokens
(labels != -100) in different numbers of steps; compare ``label_tokens_per_s``. Samples: log-normal lengths (sigma
0.6, mean 700 x seq_len / 2,048 as natural_reasoning) clipped to [16, seq_len], 10-30% of each a masked prompt.

MFU = FLOPs per token x real (non-padding, prompt included) tokens/s / a rate: ``mfu_vs_matmul`` against the
measured matmul rate, ``mfu_vs_peak`` against the card's published dense peak (``--peak-tflops``, or known by the
device's name; none on a CPU). FLOPs per token: ``llm_trainer.memory.train_flops_per_token`` (the frozen decoder
linears 2N forward + 2N activation gradients + 2N recomputed under checkpointing; lm_head forward and input
gradient only, never recomputed; causal attention over ``--seq-len``); ``mfu_6n`` is the conventional 6N
(N = non-embedding parameters, lm_head included) against the matmul rate, for comparison. Rate: square matmuls in the compute dtype (bf16 GPU, float32 CPU), after a warm-up, median of 3
timings of >= 10 repeats and >= 1 s (GPU) / 0.3 s (CPU). Peak memory per mode (model included): GPU max reserved +
the paged optimizer's CUDA managed memory (outside torch's allocator); CPU peak RSS (reset via /proc/self/clear_refs).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402 - CUDA starts (and reads CUDA_VISIBLE_DEVICES) at its first use, in run()

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "reasoning.yaml"
MODES = ("project", "baseline", "bare")
SHAPES: dict[str, dict[str, Any]] = {
    # Dimensions are multiples of 32: bitsandbytes' CPU 4-bit kernels need it.
    "tiny": {"vocab_size": 1024, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096},
    "llama3-8b": {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192,
                  "rope_theta": 500000.0, "rms_norm_eps": 1e-5},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    parser.add_argument("--layers", type=int, help="override the shape's number of decoder layers")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--samples", type=int, default=256, help="samples in the timed pass (project, baseline)")
    parser.add_argument("--mean-length", type=int, help="mean sample length (default 700 x seq-len / 2048)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps of the bare mode")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first, in every mode")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=2, help="rows per step (configs/reasoning.yaml: 2)")
    for flag, kind, default in (("--lora-r", int, 16), ("--lora-alpha", int, 32), ("--lora-dropout", float, 0.05),
                                ("--lr", float, 2e-4), ("--seed", int, 0)):
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--optim", choices=["auto", "adamw_torch", "paged_adamw_8bit"], default="auto",
                        help="auto: paged_adamw_8bit on a GPU (as configs/reasoning.yaml), torch AdamW on a CPU")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--matmul-size", type=int, help="side of the timed square matmul (default 8192 GPU, 1024 CPU)")
    parser.add_argument("--chunked-loss", choices=["auto", "true", "false"], default="auto",
                        help="the project mode's training.chunked_loss (auto: on at vocabularies of 32k and more)")
    parser.add_argument("--baseline-batch-size", type=int, help="baseline rows per micro-batch (default: as many "
                        "as give the packed side's real tokens per micro-batch)")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: by device name)")
    args = parser.parse_args(argv)
    if min(args.samples, args.steps, args.batch_size) < 1 or args.seq_len < 16 or args.warmup_steps < 0:
        parser.error("--samples, --steps and --batch-size must be >= 1, --seq-len >= 16, --warmup-steps >= 0")
    args.mean_length = args.mean_length or max(16, round(700 * min(1.0, args.seq_len / 2048)))
    return args


def make_samples(count: int, seq_len: int, mean_length: int, vocab: int, seed: int) -> list[dict[str, Any]]:
    """Tokenized samples in llm_trainer's TOKENIZED_FEATURES layout: random ids, prompt labels -100."""
    rng = np.random.default_rng(seed)
    sigma = 0.6
    lengths = np.clip(np.rint(rng.lognormal(math.log(mean_length) - sigma**2 / 2, sigma, count)), 16, seq_len)
    samples = []
    for length, share in zip(lengths.astype(int).tolist(), rng.uniform(0.1, 0.3, count).tolist()):
        prompt = min(max(1, round(share * length)), length - 1)
        ids = rng.integers(0, vocab, length).tolist()
        samples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "length": length,
                        "prompt_length": prompt, "label_tokens": length - prompt})
    return samples


def warmup_then_epoch(count: int, batch: int, warmup_steps: int, seed: int) -> list[int]:
    """Row order: warmup_steps x batch rows (cycling from the start of the shuffled order), then one shuffled
    pass over all rows; the pass starts on a batch boundary."""
    order = np.random.default_rng(seed).permutation(count).tolist()
    return [order[i % count] for i in range(warmup_steps * batch)] + order


def build_model(args: argparse.Namespace, device: Any, dtype: Any, lora_settings: Any) -> tuple[Any, int, int]:
    """Random-weight Llama, decoder linears in 4-bit NF4, prepared and LoRA-wrapped as QLoraTrainer does."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, LlamaConfig, set_seed

    from llm_trainer.modeling import lora_config
    from llm_trainer.training.kit import keep_4bit_encoding_stable

    set_seed(args.seed)  # the same base and LoRA initialisation in every mode
    shape = dict(SHAPES[args.shape], **({"num_hidden_layers": args.layers} if args.layers else {}))
    config = LlamaConfig(**shape, tie_word_embeddings=False, use_cache=False)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    params = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    quantize_decoder_linears(model.model, dtype, device)
    model.is_loaded_in_4bit = True  # what from_pretrained sets; peft then wraps the layers with its 4-bit LoRA
    model.config.use_cache = False
    keep_4bit_encoding_stable(model)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=not args.no_gradient_checkpointing,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    return get_peft_model(model, lora_config(lora_settings)), params, embedding


def quantize_decoder_linears(module: Any, dtype: Any, device: Any) -> None:
    import bitsandbytes as bnb

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=dtype, compress_statistics=True, quant_type="nf4", device="meta")
            layer.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                             quant_type="nf4", module=layer)
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, layer.to(device))  # Params4bit quantises when it is moved to a device
            del child


def snapshot(model: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Copies (on the CPU) of the LoRA weights and of every 4-bit layer's packed weight and absmax."""
    import bitsandbytes as bnb

    lora = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    base = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            state = module.weight.quant_state
            tensors = [module.weight.data, state.absmax] + ([state.state2.absmax] if state.nested else [])
            base[name] = [t.detach().cpu().clone() for t in tensors]
    return lora, base


def weight_checks(model: Any, before: tuple[dict[str, Any], dict[str, list[Any]]]) -> dict[str, Any]:
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

    lora_now, base_now = snapshot(model)
    lora, base = before
    return {"lora_abs_change": sum(float((lora_now[n] - lora[n]).abs().sum()) for n in lora),
            "base_4bit_unchanged": base_now.keys() == base.keys() and all(
                torch.equal(a, b) for n in base for a, b in zip(base[n], base_now[n])),
            "linear4bit_layers": len(base),
            "lora_4bit_layers": sum(1 for m in model.modules() if isinstance(m, LoraLinear4bit))}


def make_optimizer(model: Any, optim: str, lr: float) -> Any:
    """What the Trainer builds for the same ``optim`` name (weight decay 0, as configs/reasoning.yaml)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if optim == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(trainable, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    return torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


def run_project(ctx: SimpleNamespace, samples: list[dict[str, Any]], model: Any) -> dict[str, Any]:
    import datasets
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_utils import SaveStrategy

    from llm_trainer.config import ModelConfig, TrainingConfig
    from llm_trainer.data.collate import collator_for
    from llm_trainer.data.packing import pack_dataset
    from llm_trainer.data.tokenization import TOKENIZED_FEATURES
    from llm_trainer.training.qlora import QLoraTrainer, _TrackingTrainer

    args, B = ctx.args, ctx.args.batch_size
    blocks, packing = pack_dataset(datasets.Dataset.from_list(samples, features=TOKENIZED_FEATURES), args.seq_len)
    order = warmup_then_epoch(len(blocks), B, args.warmup_steps, args.seed)
    steps = math.ceil(len(blocks) / B)
    lengths = [blocks[i]["length"] for i in order[args.warmup_steps * B:]]
    cfg = SimpleNamespace(seed=args.seed, model=ModelConfig(**ctx.config["model"]), training=TrainingConfig(**{
        **ctx.config["training"], "per_device_train_batch_size": B, "gradient_accumulation_steps": 1,
        "max_steps": args.warmup_steps + steps, "learning_rate": args.lr, "logging_steps": 1, "optim": ctx.optim,
        "gradient_checkpointing": not args.no_gradient_checkpointing, "early_stopping_patience": None}))
    chunked = {"auto": "auto", "true": True, "false": False}[args.chunked_loss]
    cfg.training = cfg.training.model_copy(update={"chunked_loss": chunked})
    clock = SimpleNamespace(start=None, end=None, tokens=0)

    class Clock(TrainerCallback):  # the timed pass: from the end of the last warm-up step to the last step's end
        def mark(self, state: Any) -> None:
            _sync(ctx.device)
            if state.global_step == args.warmup_steps:
                clock.start, clock.tokens = time.perf_counter(), trainer.trained_tokens
            if state.global_step == state.max_steps:
                clock.end, clock.tokens = time.perf_counter(), trainer.trained_tokens - clock.tokens

        def on_train_begin(self, a, state, control, **kw):
            self.mark(state)

        def on_step_end(self, a, state, control, **kw):
            self.mark(state)

    with tempfile.TemporaryDirectory(prefix="gpu-qlora-") as output_dir:
        training_args = QLoraTrainer._training_arguments(SimpleNamespace(cfg=cfg), Path(output_dir), has_eval=False)
        training_args.save_strategy = SaveStrategy.NO  # a benchmark keeps no checkpoint, not even the final one
        training_args.train_sampling_strategy = "sequential"  # the order of ``order``: warm-up, then one pass
        trainer = _TrackingTrainer(model=model, args=training_args, train_dataset=blocks.select(order),
                                   data_collator=collator_for(True, cfg.model.attn_implementation, ctx.pad_id),
                                   callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)  # stdout carries the JSON line only
        trainer.configure_memory(cfg.training, vocab_size=ctx.vocab)  # as QLoraTrainer: the chunked loss
        trainer._last_log = (0, time.time())
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    positions = sum(len(b) * max(b) for b in (lengths[i:i + B] for i in range(0, len(lengths), B)))
    result = {"steps": trainer.state.global_step - args.warmup_steps, "blocks": len(blocks), **packing,
              "train_s": clock.end - clock.start, "label_tokens": clock.tokens, "tokens": sum(lengths),
              "positions": positions, "losses": losses, "chunked_loss": int(trainer.chunked_loss),
              "batch_size": B, **optimizer_info(trainer.optimizer)}
    trainer.accelerator.free_memory()
    return result


def run_baseline(ctx: SimpleNamespace, samples: list[dict[str, Any]], model: Any) -> dict[str, Any]:
    from llm_trainer.data.collate import PaddedCollator  # right-pad to the longest in the batch, attention mask

    B, collate = ctx.baseline_batch, PaddedCollator(ctx.pad_id)
    order = warmup_then_epoch(len(samples), B, ctx.args.warmup_steps, ctx.args.seed)
    out = train_loop(ctx, model, [collate([samples[j] for j in order[i:i + B]]) for i in range(0, len(order), B)])
    return {**out, "batch_size": B}


def run_bare(ctx: SimpleNamespace, samples: list[dict[str, Any]], model: Any) -> dict[str, Any]:
    args = ctx.args
    generator = torch.Generator().manual_seed(args.seed)
    batches = []
    for _ in range(args.warmup_steps + args.steps):
        ids = torch.randint(0, ctx.vocab, (args.batch_size, args.seq_len), generator=generator)
        batches.append({"input_ids": ids, "labels": ids})
    return {**train_loop(ctx, model, batches), "batch_size": args.batch_size}


def train_loop(ctx: SimpleNamespace, model: Any, batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Plain loop: autocast forward, backward, clip at 1.0 (max_grad_norm), optimizer step; the first
    --warmup-steps batches untimed."""
    warmup, device = ctx.args.warmup_steps, ctx.device
    optimizer = make_optimizer(model, ctx.optim, ctx.args.lr)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    losses, started = [], None
    for step, batch in enumerate(batches):
        if step == warmup:
            _sync(device)
            started = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=ctx.dtype, enabled=device.type == "cuda"):
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    _sync(device)
    timed = batches[warmup:]
    return {"steps": len(timed), "train_s": time.perf_counter() - started,
            "label_tokens": sum(int((b["labels"] != -100).sum()) for b in timed),
            "tokens": sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
                          for b in timed),
            "positions": sum(b["input_ids"].numel() for b in timed), "losses": losses,
            **optimizer_info(optimizer)}


# Published dense bf16 tensor TFLOP/s (no sparsity), matched in the device's name, most specific first.
SPEC_PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0),
                    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.2), ("RTX 3090", 71.0),
                    ("A4000", 76.7), ("T4", 65.0))


def spec_peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in SPEC_PEAK_TFLOPS if key in device_name), None)


def flops_per_token(args: argparse.Namespace) -> float:
    from transformers import LlamaConfig

    from llm_trainer.memory import ModelDims, train_flops_per_token

    shape = dict(SHAPES[args.shape], **({"num_hidden_layers": args.layers} if args.layers else {}))
    return train_flops_per_token(ModelDims.from_config(LlamaConfig(**shape)), args.seq_len,
                                 checkpointing=not args.no_gradient_checkpointing)


def packed_tokens_per_block(samples: list[dict[str, Any]], seq_len: int) -> float:
    import datasets

    from llm_trainer.data.packing import pack_dataset
    from llm_trainer.data.tokenization import TOKENIZED_FEATURES

    blocks, _ = pack_dataset(datasets.Dataset.from_list(samples, features=TOKENIZED_FEATURES), seq_len)
    return sum(blocks["length"]) / len(blocks)


def matmul_flops_per_s(device: Any, dtype: Any, size: int) -> tuple[float, float, int]:
    """Dense matmul rate in ``dtype``: median of 3 timings, each >= 10 repeats and >= min_s, after a warm-up
    (the calibration of the repeat count, itself >= min_s of matmuls). Returns (FLOP/s, spread, repeats)."""
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    out, min_s = torch.empty_like(a), 1.0 if device.type == "cuda" else 0.3

    def timed(repeats: int) -> float:
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b, out=out)
        _sync(device)
        return time.perf_counter() - started

    repeats, rates = 10, []
    timed(3)
    while (seconds := timed(repeats)) < min_s:
        repeats = max(2 * repeats, math.ceil(repeats * 1.2 * min_s / max(seconds, 1e-9)))
    for _ in range(3):
        while (seconds := timed(repeats)) < min_s:
            repeats = math.ceil(repeats * 1.2 * min_s / seconds)
        rates.append(2 * size**3 * repeats / seconds)
    median = statistics.median(rates)
    return median, (max(rates) - min(rates)) / median, repeats


def optimizer_info(optimizer: Any) -> dict[str, Any]:
    """Its class, and the MiB of bitsandbytes' paged state: CUDA managed memory, which torch's counters miss."""
    while hasattr(optimizer, "optimizer"):  # accelerate's AcceleratedOptimizer
        optimizer = optimizer.optimizer
    paged = sum(t.nbytes for state in optimizer.state.values() for t in state.values() if getattr(t, "is_paged", 0))
    return {"optimizer": f"{type(optimizer).__module__}.{type(optimizer).__name__}", "paged_mb": paged / 2**20}


def _reset_peak(device: Any) -> bool:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak RSS (VmHWM) restarts at the current RSS
    except OSError:
        return False
    return True


def _peak_mb(device: Any) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_reserved(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync(device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: Any) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    return "cpu"


def run(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from llm_trainer.config import LoraSettings

    on_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device, config = torch.device("cuda" if on_gpu else "cpu"), yaml.safe_load(CONFIG.read_text())
    ctx = SimpleNamespace(args=args, device=device, dtype=torch.bfloat16 if on_gpu else torch.float32, config=config,
                          vocab=SHAPES[args.shape]["vocab_size"], pad_id=0,
                          optim=args.optim if args.optim != "auto" else "paged_adamw_8bit" if on_gpu else "adamw_torch",
                          lora=LoraSettings(**{**config["lora"], "r": args.lora_r, "lora_alpha": args.lora_alpha,
                                               "lora_dropout": args.lora_dropout}))
    ctx.rate, spread, repeats = matmul_flops_per_s(device, ctx.dtype, args.matmul_size or (8192 if on_gpu else 1024))
    samples = make_samples(args.samples, args.seq_len, args.mean_length, ctx.vocab, args.seed)
    lengths = [s["length"] for s in samples]
    ctx.flops = flops_per_token(args)
    ctx.peak = (args.peak_tflops or spec_peak_tflops(_device_name(device))) if on_gpu else args.peak_tflops
    # The baseline's rows per micro-batch: the packed side's real tokens per micro-batch, in unpacked samples.
    ctx.baseline_batch = args.baseline_batch_size or max(1, round(args.batch_size * packed_tokens_per_block(
        samples, args.seq_len) / (sum(lengths) / len(lengths))))
    result: dict[str, Any] = {
        "shape": args.shape, "device": str(device), "device_name": _device_name(device),
        "compute_dtype": str(ctx.dtype), "seq_len": args.seq_len, "batch_size": args.batch_size,
        "warmup_steps": args.warmup_steps, "gradient_checkpointing": not args.no_gradient_checkpointing,
        "flops_per_token": ctx.flops, "peak_tflops": ctx.peak, "lora_r": ctx.lora.r, "matmul_tflops": ctx.rate / 1e12,
        "matmul_spread": spread, "matmul_repeats": repeats,
        "memory_kind": "cuda_max_reserved+paged_optimizer" if on_gpu else "process_peak_rss",
        "samples": {"count": len(samples), "seed": args.seed, "mean_length_target": args.mean_length,
                    "length_mean": sum(lengths) / len(lengths), "length_max": max(lengths), "tokens": sum(lengths),
                    "label_tokens": sum(s["label_tokens"] for s in samples)}}
    result["modes"] = {mode: run_mode(ctx, runner, samples, result) for mode, runner in
                       zip(MODES, (run_project, run_baseline, run_bare))}
    rates = {mode: m["label_tokens_per_s"] for mode, m in result["modes"].items()}
    result.update(project_over_baseline=rates["project"] / rates["baseline"],
                  project_over_bare=rates["project"] / rates["bare"])
    return result


def run_mode(ctx: SimpleNamespace, runner: Any, samples: list[dict[str, Any]], result: dict[str, Any]
             ) -> dict[str, Any]:
    """A fresh model, the mode's training, then its figures; the model is freed before the next mode."""
    started = time.perf_counter()
    model, params, embedding = build_model(ctx.args, ctx.device, ctx.dtype, ctx.lora)
    before, setup_s = snapshot(model), time.perf_counter() - started
    result.update(layers=model.config.num_hidden_layers, hidden_size=model.config.hidden_size, params=params,
                  params_non_embedding=params - embedding,
                  trainable_params=sum(p.numel() for p in before[0].values()))
    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()  # the bf16 weights freed by quantisation would otherwise count as reserved
    if not _reset_peak(ctx.device):
        result["memory_kind"] = "process_max_rss"  # the peak since the process started
    out = runner(ctx, samples, model)
    paged = out.pop("paged_mb")  # on a CPU bitsandbytes falls back to plain tensors, already in the RSS
    losses, seconds, n = out.pop("losses"), out["train_s"], params - embedding
    tps = out["tokens"] / seconds
    figures = {
        **out, "setup_s": setup_s, "label_tokens_per_s": out["label_tokens"] / seconds, "tokens_per_s": tps,
        "padding_share": 1 - out["tokens"] / out["positions"],
        "real_tokens_per_micro_batch": out["tokens"] / out["steps"],
        "mfu_vs_matmul": ctx.flops * tps / ctx.rate, "mfu_vs_peak": ctx.flops * tps / (ctx.peak * 1e12)
        if ctx.peak else None, "mfu_6n": 6 * n * tps / ctx.rate,
        "peak_memory_mb": _peak_mb(ctx.device) + (paged if ctx.device.type == "cuda" else 0.0),
        "paged_optimizer_mb": paged, "loss_first": losses[0], "loss_last": losses[-1],
        "loss_finite": all(math.isfinite(x) for x in losses), **weight_checks(model, before)}
    del model, before, out
    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return figures


def table(result: dict[str, Any]) -> str:
    head = ["mode", "batch", "steps", "real tok/micro", "label tok/s", "tok/s", "pad %", "train s", "peak MB",
            "mfu/matmul", "mfu/peak", "mfu_6n", "loss first->last"]
    rows = [[mode, m["batch_size"], m["steps"], f"{m['real_tokens_per_micro_batch']:,.0f}",
             f"{m['label_tokens_per_s']:,.0f}", f"{m['tokens_per_s']:,.0f}", f"{100 * m['padding_share']:.1f}",
             f"{m['train_s']:.2f}", f"{m['peak_memory_mb']:,.0f}", f"{m['mfu_vs_matmul']:.4f}",
             "-" if m["mfu_vs_peak"] is None else f"{m['mfu_vs_peak']:.4f}", f"{m['mfu_6n']:.4f}",
             f"{m['loss_first']:.3f}->{m['loss_last']:.3f}"]
            for mode, m in result["modes"].items()]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
    return "\n".join([f"{result['device_name']}, {result['compute_dtype']}, {result['shape']} x{result['layers']} "
                      f"layers, {result['samples']['count']} samples, seq {result['seq_len']}, batch "
                      f"{result['batch_size']}, matmul {result['matmul_tflops']:.3f} TFLOP/s, peak "
                      f"{result['peak_tflops'] or '-'} TFLOP/s, {result['flops_per_token'] / 1e9:.3f} GFLOP a token",
                      *lines,
                      f"project / baseline label tok/s: {result['project_over_baseline']:.2f}x"])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before CUDA starts: the Trainer then sees no GPU either
    result = run(args)
    print(table(result), file=sys.stderr, flush=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
