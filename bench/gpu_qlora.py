"""QLoRA training throughput, peak memory and MFU at Llama-3-8B shape, with random weights (no Hub).

    .venv/bin/python -m bench.gpu_qlora --shape llama3-8b                      # GPU: 20 steps at 2,048 tokens
    .venv/bin/python -m bench.gpu_qlora --shape tiny --device cpu --steps 3 --seq-len 64   # CPU smoke run

Builds the model from a LlamaConfig straight on the device (random weights), quantises every linear layer
of the decoder to 4-bit NF4 with double quantisation (bitsandbytes; lm_head stays unquantised, as
transformers does), prepares it like ``prepare_model_for_kbit_training`` with non-reentrant gradient
checkpointing, attaches LoRA on all linear layers (peft) and trains on random tokens: ``--warmup-steps``
untimed steps, then ``--steps`` timed ones. Compute is bf16 on a GPU, float32 on a CPU.

MFU = 6 x parameters x tokens/s / the device's matmul rate in the compute dtype, measured here with a timed
large square matmul. "parameters" is the unquantised parameter count of the base model (embeddings
included; ``mfu_non_embedding`` leaves the input embedding out). 6N is the usual full-training estimate;
a frozen 4-bit base skips the weight gradients but recomputes the forward pass under checkpointing,
which costs about the same. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cuda:N or cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--optim", choices=["auto", "adamw", "paged_adamw_8bit"], default="auto",
                        help="auto: paged_adamw_8bit on a GPU (as configs/reasoning.yaml), torch AdamW on a CPU")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--matmul-size", type=int, help="side of the timed square matmul (default 8192 GPU, 1024 CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("steps", "seq_len", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def matmul_flops_per_s(device: Any, dtype: Any, size: int, repeats: int = 10) -> float:
    """Measured dense matmul rate (FLOP/s) of the device in ``dtype``: the MFU denominator."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def build_model(args: argparse.Namespace, device: Any, dtype: Any) -> tuple[Any, int, int]:
    """Random-weight Llama on the device with its decoder's linear layers in 4-bit NF4 (double quant)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    shape = dict(SHAPES[args.shape])
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    config = LlamaConfig(**shape, tie_word_embeddings=False, use_cache=False)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    params = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    quantize_decoder_linears(model.model, dtype, device)
    model.is_loaded_in_4bit = True  # what from_pretrained sets; peft then wraps the layers with its 4-bit LoRA
    return model, params, embedding


def quantize_decoder_linears(module: Any, dtype: Any, device: Any) -> None:
    import bitsandbytes as bnb
    import torch

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
            layer.support_avx512bf16_for_cpu = False  # keep one 4-bit encoding (see llm_trainer/training/qlora.py)
            setattr(parent, name, layer.to(device))  # Params4bit quantises when it is moved to a device
            del child


def attach_lora(model: Any, args: argparse.Namespace) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # freeze, norms in fp32
    if not args.no_gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules="all-linear", bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def make_optimizer(model: Any, args: argparse.Namespace, on_gpu: bool) -> Any:
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    if args.optim == "paged_adamw_8bit" or (args.optim == "auto" and on_gpu):
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(trainable, lr=args.lr)
    return torch.optim.AdamW(trainable, lr=args.lr)


def train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    torch.manual_seed(args.seed)
    matmul_rate = matmul_flops_per_s(device, dtype, args.matmul_size or (8192 if on_gpu else 1024))

    started = time.perf_counter()
    model, params, embedding = build_model(args, device, dtype)
    model = attach_lora(model, args)
    setup_s = time.perf_counter() - started
    setup_peak = _peak_memory_mb(device)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = make_optimizer(model, args, on_gpu)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    vocab = model.config.vocab_size
    model.train()
    losses, timed_from = [], None
    for step in range(args.warmup_steps + args.steps):
        if step == args.warmup_steps:
            _sync(device)
            timed_from = time.perf_counter()
        ids = torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=generator).to(device)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=on_gpu):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    _sync(device)
    seconds = time.perf_counter() - timed_from
    tokens_per_s = args.steps * args.batch_size * args.seq_len / seconds
    import bitsandbytes as bnb
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

    quantized = sum(1 for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    adapted = sum(1 for m in model.modules() if isinstance(m, LoraLinear4bit))
    changed = sum(float((p.detach() - lora[n]).abs().sum()) for n, p in model.named_parameters() if n in lora)
    return {
        "shape": args.shape, "device": str(device), "device_name": _device_name(device), "compute_dtype": str(dtype),
        "layers": model.config.num_hidden_layers, "hidden_size": model.config.hidden_size,
        "params": params, "params_non_embedding": params - embedding,
        "trainable_params": sum(p.numel() for p in lora.values()), "linear4bit_layers": quantized,
        "lora_4bit_layers": adapted,
        "seq_len": args.seq_len, "batch_size": args.batch_size, "steps": args.steps,
        "warmup_steps": args.warmup_steps, "gradient_checkpointing": not args.no_gradient_checkpointing,
        "optimizer": type(optimizer).__name__, "setup_s": round(setup_s, 2), "train_s": round(seconds, 3),
        "tokens_per_s": round(tokens_per_s, 2),
        "matmul_tflops": round(matmul_rate / 1e12, 4),
        "mfu": 6 * params * tokens_per_s / matmul_rate,
        "mfu_non_embedding": 6 * (params - embedding) * tokens_per_s / matmul_rate,
        "peak_memory_mb": _peak_memory_mb(device), "setup_peak_memory_mb": setup_peak,
        "memory_kind": "cuda_max_allocated" if on_gpu else "process_max_rss",
        "loss_first": losses[0], "loss_last": losses[-1],
        "loss_finite": all(math.isfinite(x) for x in losses), "lora_abs_change": changed,
    }


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    return "cpu"


def _peak_memory_mb(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(train(parse_args(argv))), flush=True)


if __name__ == "__main__":
    main()
