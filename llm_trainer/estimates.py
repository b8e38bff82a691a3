"""The training-time estimate printed after processing: tokens to train on, over the card's expected rate."""

from __future__ import annotations

from llm_trainer.config import RunConfig


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours >= 1 else f"{seconds / 60:.0f} min"


def training_time_estimate(cfg: RunConfig, train_tokens: int) -> str | None:
    """One line, or None when the config names no card rate (``hardware.train_tokens_per_second``)."""
    rate = cfg.hardware.train_tokens_per_second
    if not rate or train_tokens <= 0:
        return None
    t = cfg.training
    processes = t.num_processes if isinstance(t.num_processes, int) else 1
    tokens = train_tokens * t.num_train_epochs
    if t.max_steps > 0:  # packed blocks are nearly full: a step trains about batch x accumulation x length tokens
        per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * cfg.data.max_seq_length * processes
        tokens = min(tokens, t.max_steps * per_step)
    seconds = tokens / (rate * processes)
    card = cfg.hardware.card or "the configured card"
    return (f"estimated training time on {card}: about {_duration(seconds)} for {tokens:,.0f} tokens at "
            f"~{rate * processes:,.0f} tokens/s (an estimate, not a measurement: README, 'Sizing a GPU run')")
