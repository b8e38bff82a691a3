"""What a run reports about itself: flattened params, git commit, and the charts the dashboard shows
(loss curve, token-length histogram, drop counts)."""

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
    """The project's git commit, for run tags; 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    _pyplot().close(figure)
    return buffer.getvalue()


# The memory curves drawn next to the loss (llm_trainer/system_metrics.py's figures), with their legend labels.
MEMORY_SERIES = {"system/process_rss_mb": "host memory (process)", "system/gpu_memory_allocated_mb": "GPU allocated",
                 "system/gpu_memory_reserved_mb": "GPU reserved", "system/gpu_memory_peak_mb": "GPU peak reserved"}


def memory_series(history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """The logged memory figures (MB) by step, for those the run logged."""
    series = {key: [(h["step"], h[key]) for h in history if key in h and "step" in h] for key in MEMORY_SERIES}
    return {key: points for key, points in series.items() if points}


def loss_curve_png(history: list[dict[str, Any]], title: str = "loss") -> bytes:
    """Training loss per logging step and validation loss per evaluation, as a PNG; with GRPO, also the mean
    reward per logging step (overall and per reward function) on a second axis. Where the run logged memory
    figures, a second panel beside the loss draws them (host memory, and GPU allocated/reserved/peak)."""
    plt = _pyplot()
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    memory = memory_series(history)
    if memory:
        figure, (axes, memory_axes) = plt.subplots(1, 2, figsize=(12, 4), dpi=100)
        for key, points in memory.items():
            memory_axes.plot(*zip(*points), label=MEMORY_SERIES[key], marker=".")
        memory_axes.set(xlabel="optimizer step", ylabel="MB", title="memory")
        memory_axes.set_ylim(bottom=0)
        memory_axes.grid(alpha=0.3)
        memory_axes.legend(fontsize="small")
    else:
        figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        axes.plot(*zip(*train), label="train loss", color="tab:blue")
    if evals:
        axes.plot(*zip(*evals), label="validation loss", color="tab:orange", marker="o")
    axes.set(xlabel="optimizer step", ylabel="loss", title=title)
    axes.grid(alpha=0.3)
    rewards = reward_series(history)
    if rewards:  # GRPO: the reward curves, on their own scale
        reward_axes = axes.twinx()
        colours = iter(["tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"] * 4)
        for key, points in rewards.items():
            if points:
                reward_axes.plot(*zip(*points), label=f"{key} (right)", linestyle="--", color=next(colours))
        reward_axes.set(ylabel="reward")
        handles, labels = axes.get_legend_handles_labels()
        more_handles, more_labels = reward_axes.get_legend_handles_labels()
        axes.legend(handles + more_handles, labels + more_labels, fontsize="small")
    else:
        axes.legend()
    return _png(figure)


def reward_series(history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """GRPO's logged mean rewards, overall ("reward") and per reward function ("rewards/<name>/mean"), by step."""
    keys = sorted({k for h in history for k in h if k == "reward" or (k.startswith("rewards/") and k.endswith("/mean"))})
    series = {key: [(h["step"], h[key]) for h in history if key in h and "step" in h] for key in keys}
    return {key: points for key, points in series.items() if points}


def token_length_png(histograms: dict[str, dict[str, list]], max_seq_length: int) -> bytes:
    """Token lengths per split (``{"train": {"edges": [...], "counts": [...]}}``) with the length limit drawn,
    the rows past it counted in the legend and their side of the chart shaded."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    top = max_seq_length
    for name, histogram in histograms.items():
        edges, counts = histogram["edges"], histogram["counts"]
        over = sum(c for c, left in zip(counts, edges) if left >= max_seq_length)
        share = f", {over} ({over / max(sum(counts), 1):.0%}) over the limit" if over else ""
        axes.stairs(counts, edges, label=f"{name} ({sum(counts)} rows{share})", fill=name == "train", alpha=0.6)
        top = max(top, edges[-1] if edges else 0)
    axes.axvline(max_seq_length, color="tab:red", linestyle="--", label=f"max_seq_length {max_seq_length}")
    if top > max_seq_length:
        axes.axvspan(max_seq_length, top, color="tab:red", alpha=0.08)
    axes.set(xlabel="tokens per sample (prompt + answer)", ylabel="samples", title="token lengths")
    axes.legend()
    return _png(figure)


def drop_counts_png(kept: int, dropped: dict[str, int]) -> bytes:
    """Rows kept and rows dropped per reason, as horizontal bars."""
    plt = _pyplot()
    labels = ["kept", *dropped]
    values = [kept, *dropped.values()]
    figure, axes = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.2), dpi=100)
    bars = axes.barh(labels, values, color=["tab:green"] + ["tab:red"] * len(dropped))
    axes.bar_label(bars, padding=3)
    axes.invert_yaxis()
    axes.set(xlabel="rows", title="rows kept and dropped, by reason")
    return _png(figure)


def png_html(png: bytes, caption: str) -> str:
    """A PNG embedded in HTML as a figure with a caption, for ZenML visualizations."""
    encoded = base64.b64encode(png).decode()
    return f'<figure><img src="data:image/png;base64,{encoded}" alt="{caption}"/><figcaption>{caption}</figcaption></figure>'
