"""What a run reports about itself: flattened params, git commit, the loss-curve image."""

from __future__ import annotations

import base64
import io
import subprocess
from typing import Any

from llm_trainer.paths import PROJECT_ROOT


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}: the config as tracker params."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def loss_curve_png(history: list[dict[str, Any]], title: str = "loss") -> bytes:
    """Training loss per logging step and validation loss per evaluation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        axes.plot(*zip(*train), label="train loss", color="tab:blue")
    if evals:
        axes.plot(*zip(*evals), label="validation loss", color="tab:orange", marker="o")
    axes.set(xlabel="optimizer step", ylabel="loss", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def png_html(png: bytes, caption: str) -> str:
    encoded = base64.b64encode(png).decode()
    return f'<figure><img src="data:image/png;base64,{encoded}" alt="{caption}"/><figcaption>{caption}</figcaption></figure>'
