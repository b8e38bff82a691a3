"""Registered versions of a model side by side: a terminal table, a PNG of bars and an HTML page.

The input is one plain dict per version (``VersionRecord`` keys; the caller reads them from the registry, so this
module never imports zenml): its number, stage, data fingerprint, base model, trainer, evaluation metrics, the base
model's metrics from the same evaluation, and the version it replaced in production (if it was promoted). Shown:
the metrics the promotion gate uses (``registry.promotion_metric`` and ``registry.guard_metrics``), each beside the
base model's, and accuracy per answer type, per task family or per SQL complexity where the evaluator gives it.
"""

from __future__ import annotations

import math
import re
from html import escape
from typing import Any, TypedDict

from llm_trainer.evaluation.answer_types import LOWER_IS_BETTER

_BREAKDOWN = re.compile(r"^(accuracy|execution_accuracy)[_.]")
MAX_PLOTTED = 12  # metrics drawn in the PNG (gate metrics first)


class VersionRecord(TypedDict, total=False):
    """One registered version as the comparison reads it."""

    number: int
    stage: str  # production, staging, archived or "-"
    data: str  # the data fingerprint (8 characters) or "-"
    base_model: str
    trainer: str
    created: str
    metrics: dict[str, float]
    base_metrics: dict[str, float]
    replaced: int | None  # the version that was production before this one was promoted


def compared_metrics(records: list[VersionRecord], promotion_metric: str,
                     guard_metrics: list[str] | tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(the gate's metrics, the per-type/per-task/per-complexity accuracies any version has), in display order."""
    gate = list(dict.fromkeys([promotion_metric, *guard_metrics]))
    found = {name for record in records for name, value in (record.get("metrics") or {}).items()
             if _is_number(value)}
    prefixes = (f"{promotion_metric}_", f"{promotion_metric}.")
    breakdown = sorted(name for name in found if name not in gate and "count" not in name
                       and (_BREAKDOWN.match(name) or name.startswith(prefixes)))
    return gate, breakdown


def production_history(records: list[VersionRecord]) -> str:
    """Which version is in production and which it replaced, with the command that rolls back to that one."""
    current = [r for r in records if r.get("stage") == "production"]
    if not current:
        return "production: no version (promote one with `run_pipeline.py models promote N`)"
    version = current[-1]
    line = f"production: version {version['number']}"
    if version.get("replaced") is not None:
        return (f"{line}; before it: version {version['replaced']} (roll back: `run_pipeline.py models promote "
                f"{version['replaced']}`)")
    return f"{line}; no earlier production version is recorded"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))


def _fmt(value: Any) -> str:
    if not _is_number(value):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def against_base(record: VersionRecord, metric: str) -> str:
    """'0.5 (base 0.375)': the version's value and the base model's from the same evaluation."""
    value = (record.get("metrics") or {}).get(metric)
    base = (record.get("base_metrics") or {}).get(metric)
    if not _is_number(value):
        return "-"
    return f"{_fmt(value)} (base {_fmt(base)})" if _is_number(base) else _fmt(value)


def _short_model(name: str | None) -> str:
    """A base model as a Hub id, or the last two parts of a local path (a built model's folder is often just
    ``model``; the part above it tells two builds apart)."""
    if not name:
        return "-"
    return ".../" + "/".join(name.rstrip("/").split("/")[-2:]) if name.startswith(("/", ".")) else name


def table_rows(records: list[VersionRecord], gate: list[str]) -> tuple[list[str], list[list[str]]]:
    """The header and one row of cells per version (the terminal table and the HTML page share them)."""
    header = ["#", "stage", "data", "base model", "trainer", *gate, "replaced"]
    rows = [[str(r["number"]), r.get("stage") or "-", r.get("data") or "-", _short_model(r.get("base_model")),
             r.get("trainer") or "-", *(against_base(r, m) for m in gate),
             str(r["replaced"]) if r.get("replaced") is not None else "-"] for r in records]
    return header, rows


def breakdown_rows(records: list[VersionRecord], breakdown: list[str]) -> tuple[list[str], list[list[str]]]:
    """One row per per-type/per-task accuracy, one column per version (each against its base model)."""
    header = ["metric", *(f"v{r['number']}" for r in records)]
    return header, [[name, *(against_base(r, name) for r in records)] for name in breakdown]


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
            for line in [header, *rows]]


def compare_text(name: str, records: list[VersionRecord], promotion_metric: str,
                 guard_metrics: list[str] | tuple[str, ...] = ()) -> str:
    """The comparison as terminal lines: the versions' table, the breakdown table and the production history."""
    if not records:
        return f"model '{name}' has no versions yet"
    gate, breakdown = compared_metrics(records, promotion_metric, guard_metrics)
    lines = [f"model '{name}': {len(records)} version{'s' if len(records) != 1 else ''}; each metric beside the "
             "base model's from the same evaluation (data: fingerprint of the training data; replaced: the version "
             "it replaced in production)"]
    lines += _text_table(*table_rows(records, gate))
    if breakdown:
        lines += ["", "accuracy per answer type, task family or complexity:", *_text_table(*breakdown_rows(
            records, breakdown))]
    lines += ["", production_history(records)]
    return "\n".join(lines)


def compare_png(name: str, records: list[VersionRecord], promotion_metric: str,
                guard_metrics: list[str] | tuple[str, ...] = ()) -> bytes:
    """Bars per metric and version (one panel per metric, its own scale), the base model's value as a dashed
    line; the production version's bar in green."""
    from llm_trainer.reporting import _png, _pyplot

    gate, breakdown = compared_metrics(records, promotion_metric, guard_metrics)
    metrics = [*gate, *breakdown][:MAX_PLOTTED] or [promotion_metric]
    plt = _pyplot()
    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), dpi=100, squeeze=False)
    labels = [f"v{r['number']}" for r in records]
    colors = ["tab:green" if r.get("stage") == "production" else "tab:gray" if r.get("stage") == "archived"
              else "tab:blue" for r in records]
    for panel, metric in zip(axes.flat, metrics):
        values = [(r.get("metrics") or {}).get(metric) for r in records]
        panel.bar(labels, [v if _is_number(v) else 0 for v in values], color=colors)
        bases = [(r.get("base_metrics") or {}).get(metric) for r in records]
        if any(_is_number(b) for b in bases):
            panel.plot(labels, [b if _is_number(b) else float("nan") for b in bases], "k--", marker="_",
                       markersize=18, label="base model")
            panel.legend(fontsize=7, loc="best", framealpha=0.6)
        better = "lower" if metric in LOWER_IS_BETTER else "higher"
        panel.set_title(f"{metric} ({better} is better)", fontsize=9)
    for panel in list(axes.flat)[len(metrics):]:
        panel.set_visible(False)
    figure.suptitle(f"{name}: versions (green: production, gray: archived, blue: staging)", fontsize=10)
    return _png(figure)


def compare_html(name: str, records: list[VersionRecord], promotion_metric: str,
                 guard_metrics: list[str] | tuple[str, ...] = ()) -> str:
    """The comparison as a self-contained HTML page (tables and the PNG), for the ZenML dashboard."""
    from llm_trainer.evaluation.report import STYLE
    from llm_trainer.reporting import png_html

    if not records:
        return f"<html><head>{STYLE}</head><body><p>model {escape(name)} has no versions yet</p></body></html>"
    gate, breakdown = compared_metrics(records, promotion_metric, guard_metrics)
    parts = [f"<h2>{escape(name)}: registered versions</h2>",
             "<p>Each metric beside the base model's from the same evaluation; replaced: the version it replaced "
             "in production.</p>", _html_table(*table_rows(records, gate)),
             f"<p><b>{escape(production_history(records))}</b></p>"]
    if breakdown:
        parts += ["<h3>Accuracy per answer type, task family or complexity</h3>",
                  _html_table(*breakdown_rows(records, breakdown))]
    parts.append(png_html(compare_png(name, records, promotion_metric, guard_metrics), "metrics per version"))
    return f"<html><head>{STYLE}</head><body>{''.join(parts)}</body></html>"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
