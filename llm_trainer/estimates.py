"""The training-time estimate printed after processing: tokens to train on, over the card's expected rate."""

from __future__ import annotations

from llm_trainer import memory
from llm_trainer.config import RunConfig


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours >= 1 else f"{seconds / 60:.0f} min"


def processes(cfg: RunConfig) -> tuple[int, str]:
    """GPUs training runs on, and how that was decided (``num_processes: auto``: the GPUs this machine sees)."""
    setting = cfg.training.num_processes
    if isinstance(setting, int):
        return setting, f"{setting} process{'es' if setting > 1 else ''}"
    from llm_trainer.modeling import visible_gpus

    gpus = visible_gpus()
    return max(1, gpus), f"num_processes auto: {gpus} GPU{'s' if gpus != 1 else ''} seen" if gpus else \
        "num_processes auto: no GPU seen here, counted as 1"


def rate_per_gpu(cfg: RunConfig) -> tuple[float, str] | None:
    """Tokens/s of one GPU and where the figure comes from: a measured ``hardware.train_tokens_per_second``, or
    ``hardware.mfu`` of ``hardware.peak_tflops`` at the FLOPs a token costs (the model's shape must be known)."""
    hw = cfg.hardware
    if hw.train_tokens_per_second:
        return hw.train_tokens_per_second, "hardware.train_tokens_per_second"
    dims = memory.dims_for(cfg.model.base_model)
    if not hw.peak_tflops or dims is None:
        return None
    seq = cfg.data.max_seq_length
    flops = memory.train_flops_per_token(dims, seq, cfg.training.gradient_checkpointing)
    rate = memory.tokens_per_second(dims, seq, hw.peak_tflops, hw.mfu,
                                    checkpointing=cfg.training.gradient_checkpointing)
    return rate, f"MFU {hw.mfu:.0%} of {hw.peak_tflops:g} TFLOP/s at {flops / 1e9:.1f} GFLOP a token"


def training_time_estimate(cfg: RunConfig, train_tokens: int) -> str | None:
    """One line, or None when the config gives no way to a rate (see ``rate_per_gpu``)."""
    found = rate_per_gpu(cfg)
    if found is None or train_tokens <= 0:
        return None
    rate, source = found
    t = cfg.training
    count, how = processes(cfg)
    tokens = train_tokens * t.num_train_epochs
    if t.max_steps > 0:  # packed blocks are nearly full: a step trains about batch x accumulation x length tokens
        per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * cfg.data.max_seq_length * count
        tokens = min(tokens, t.max_steps * per_step)
    seconds = tokens / (rate * count)
    card = cfg.hardware.card or "the configured card"
    return (f"estimated training time on {card}: about {_duration(seconds)} for {tokens:,.0f} tokens at "
            f"~{rate * count:,.0f} tokens/s ({how}; {source}; an estimate, not a measurement: README, "
            f"'Sizing a GPU run')")
