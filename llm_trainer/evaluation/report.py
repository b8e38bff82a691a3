"""Self-contained HTML for the ZenML dashboard: headline metrics, comparison, worst examples."""

from __future__ import annotations

from html import escape
from typing import Any

HEADLINE = ("accuracy", "exact_match", "numeric_match", "token_f1", "eval_loss", "perplexity", "scored",
            "no_reference", "generation_tokens_per_second")
STYLE = ("<style>body{font-family:sans-serif;font-size:14px}table{border-collapse:collapse;margin:8px 0}"
         "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
         "th{background:#f3f3f3}.bad{color:#b00}.good{color:#080}</style>")


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))


def metrics_table(columns: dict[str, dict[str, Any]]) -> str:
    """One column per model (e.g. base, fine-tuned), one row per headline metric."""
    names = [m for m in HEADLINE if any(m in metrics for metrics in columns.values())]
    head = "".join(f"<th>{escape(title)}</th>" for title in columns)
    rows = "".join(
        f"<tr><th>{escape(name)}</th>" + "".join(f"<td>{_value(c.get(name, '-'))}</td>" for c in columns.values())
        + "</tr>" for name in names)
    return f"<table><tr><th>metric</th>{head}</tr>{rows}</table>"


def worst_examples(examples: list[dict[str, Any]], limit: int = 10) -> list[dict[str, Any]]:
    scored = [e for e in examples if e.get("scored")]
    return sorted(scored, key=lambda e: (bool(e.get("correct")), float(e.get("token_f1", 0.0))))[:limit]


def examples_table(examples: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{escape(str(e['question']))}</td><td>{escape(str(e['reference']))}</td>"
        f"<td><pre style='white-space:pre-wrap;margin:0'>{escape(str(e['generation']))}</pre></td>"
        f"<td>{escape(str(e.get('extracted', '')))}</td>"
        f"<td class='{'good' if e.get('correct') else 'bad'}'>{'yes' if e.get('correct') else 'no'}</td></tr>"
        for e in examples)
    return ("<table><tr><th>question</th><th>reference</th><th>generation</th><th>extracted</th><th>correct</th>"
            f"</tr>{rows}</table>")


def evaluation_html(title: str, metrics: dict[str, Any], examples: list[dict[str, Any]]) -> str:
    return (f"<html><head>{STYLE}</head><body><h2>{escape(title)}</h2>{metrics_table({title: metrics})}"
            f"<h3>Worst examples</h3>{examples_table(worst_examples(examples))}</body></html>")


def promotion_html(decision: dict[str, Any], columns: dict[str, dict[str, Any]]) -> str:
    verdict = "promoted to production" if decision["promote"] else "kept in staging"
    return (f"<html><head>{STYLE}</head><body><h2>Model version {escape(verdict)}</h2>"
            f"<p>{escape(decision['reason'])}</p>{metrics_table(columns)}</body></html>")
