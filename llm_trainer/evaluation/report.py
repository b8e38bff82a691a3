"""Self-contained HTML for the ZenML dashboard: headline metrics, metrics per answer type and per task family,
judges, comparison of models, worst examples."""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

from llm_trainer.evaluation.answer_types import ANSWER_TYPES

HEADLINE = ("accuracy", "exact_match", "numeric_match", "math_match", "token_f1", "extraction_failed",
            "verify_timeout", "eval_loss", "perplexity", "scored", "no_reference", "judge_agreement",
            "generation_tokens_per_second", "hit_token_cap")
PER_TYPE = (("accuracy", "accuracy_{}"), ("token F1", "token_f1_{}"), ("ROUGE-L", "rouge_l_{}"))
STYLE = ("<style>body{font-family:sans-serif;font-size:14px}table{border-collapse:collapse;margin:8px 0}"
         "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
         "th{background:#f3f3f3}.bad{color:#b00}.good{color:#080}</style>")


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))


def metrics_table(columns: dict[str, dict[str, Any]]) -> str:
    """One column per model (e.g. base, fine-tuned), one row per headline metric."""
    names = [m for m in HEADLINE if any(m in metrics for metrics in columns.values())]
    names += sorted({m for metrics in columns.values() for m in metrics if m.startswith("benchmark.")})
    head = "".join(f"<th>{escape(title)}</th>" for title in columns)
    rows = "".join(
        f"<tr><th>{escape(name)}</th>" + "".join(f"<td>{_value(c.get(name, '-'))}</td>" for c in columns.values())
        + "</tr>" for name in names)
    return f"<table><tr><th>metric</th>{head}</tr>{rows}</table>"


def per_type_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """[{"type": "short", "count": 12, "accuracy": 0.5, ...}] for the types that occur, as the card counts them."""
    rows = []
    for kind in ANSWER_TYPES:
        count = metrics.get(f"count_{kind}", 0)
        if not count:
            continue
        row: dict[str, Any] = {"type": kind, "count": count}
        for label, pattern in PER_TYPE:
            if pattern.format(kind) in metrics:
                row[label] = metrics[pattern.format(kind)]
        if kind == "long" and "judge_accuracy_long" in metrics:
            row["accuracy"] = metrics["judge_accuracy_long"]
        rows.append(row)
    return rows


def per_type_table(columns: dict[str, dict[str, Any]]) -> str:
    """Answer types as rows; for each model its count and accuracy (verifiable) or F1 / ROUGE-L (long)."""
    head = "".join(f"<th>{escape(title)}</th>" for title in columns)
    body = ""
    for kind in ANSWER_TYPES:
        if not any(metrics.get(f"count_{kind}") for metrics in columns.values()):
            continue
        cells = []
        for metrics in columns.values():
            row = next((r for r in per_type_rows(metrics) if r["type"] == kind), {"count": 0})
            shown = [f"{label} {_value(row[label])}" for label, _ in PER_TYPE if label in row]
            cells.append(f"<td>n={row['count']}" + "".join(f"<br>{s}" for s in shown) + "</td>")
        body += f"<tr><th>{kind}</th>{''.join(cells)}</tr>"
    return f"<table><tr><th>answer type</th>{head}</tr>{body}</table>" if body else ""


def per_type_text(columns: dict[str, dict[str, Any]]) -> list[str]:
    """The per-type table as terminal lines (the CLI's run summary)."""
    lines = [f"{'answer type':<13}{'count':>6}  " + "".join(f"{title:<26}" for title in columns)]
    for kind in ANSWER_TYPES:
        rows = [next((r for r in per_type_rows(m) if r["type"] == kind), None) for m in columns.values()]
        if not any(rows):
            continue
        count = next(r["count"] for r in rows if r)
        cells = []
        for row in rows:
            shown = [f"{label} {row[label]:.3f}" for label, _ in PER_TYPE if row and label in row]
            cells.append(f"{', '.join(shown) or ('-' if kind != 'none' else 'scored by loss'):<26}")
        lines.append(f"{kind:<13}{count:>6}  " + "".join(cells))
    if all("extraction_failed" in m for m in columns.values()):
        lines.append(f"{'no answer extracted':<21}" + "".join(f"{m['extraction_failed']:<26.1%}" for m in columns.values()))
    return lines


def task_families(columns: dict[str, dict[str, Any]]) -> list[str]:
    """The task families (metric keys) that any model's metrics break accuracy down by."""
    return sorted({name[len("count_task_"):] for metrics in columns.values() for name in metrics
                   if name.startswith("count_task_")})


def per_task_table(columns: dict[str, dict[str, Any]]) -> str:
    """Task families as rows (when the test data names them); for each model its accuracy and count."""
    head = "".join(f"<th>{escape(title)}</th>" for title in columns)
    body = "".join(
        f"<tr><th>{escape(task)}</th>" + "".join(
            f"<td>{_value(m.get(f'accuracy_task_{task}', '-'))} <small>(n={m.get(f'count_task_{task}', 0)})</small></td>"
            for m in columns.values()) + "</tr>"
        for task in task_families(columns))
    return f"<h3>Accuracy by task family</h3><table><tr><th>task</th>{head}</tr>{body}</table>" if body else ""


def per_task_text(columns: dict[str, dict[str, Any]]) -> list[str]:
    """Accuracy per task family as terminal lines (the CLI's run summary); no lines without families."""
    tasks = task_families(columns)
    if not tasks:
        return []
    width = max(13, *(len(t) + 2 for t in tasks))
    lines = [f"{'task':<{width}}{'count':>6}  " + "".join(f"{title:<14}" for title in columns)]
    for task in tasks:
        count = max(int(m.get(f"count_task_{task}", 0)) for m in columns.values())
        cells = "".join(f"{m[f'accuracy_task_{task}']:<14.1%}" if f"accuracy_task_{task}" in m else f"{'-':<14}"
                        for m in columns.values())
        lines.append(f"{task:<{width}}{count:>6}  {cells}")
    return lines


def judges_table(examples: list[dict[str, Any]]) -> str:
    """HTML table: how many scored examples each judge decided, by answer type and verdict."""
    counts = Counter((e.get("answer_type", "?"), e.get("judge") or "-", e.get("correct")) for e in examples
                     if e.get("scored"))
    rows = "".join(f"<tr><td>{escape(kind)}</td><td>{escape(judge)}</td><td>{_verdict(correct)}</td><td>{n}</td></tr>"
                   for (kind, judge, correct), n in sorted(counts.items(), key=lambda x: (x[0][0], x[0][1], str(x[0][2]))))
    return ("<table><tr><th>answer type</th><th>decided by</th><th>verdict</th><th>examples</th></tr>"
            f"{rows}</table>")


def _verdict(correct: Any) -> str:
    return "correct" if correct is True else "wrong" if correct is False else "scored by overlap"


def worst_examples(examples: list[dict[str, Any]], limit: int = 10) -> list[dict[str, Any]]:
    """The scored examples to look at first: wrong ones, lowest overlap first."""
    scored = [e for e in examples if e.get("scored")]
    return sorted(scored, key=lambda e: (e.get("correct") is True, float(e.get("rouge_l") or 0.0),
                                         float(e.get("token_f1") or 0.0)))[:limit]


def examples_table(examples: list[dict[str, Any]]) -> str:
    """HTML table of examples: question, reference, generation, extracted answer and verdict."""
    rows = "".join(
        f"<tr><td>{escape(str(e['question']))}</td><td>{escape(str(e['reference']))}</td>"
        f"<td><pre style='white-space:pre-wrap;margin:0'>{escape(str(e['generation']))}</pre></td>"
        f"<td>{escape(str(e.get('extracted', '')))}<br><small>{escape(str(e.get('extraction', '')))}</small></td>"
        f"<td>{escape(str(e.get('answer_type', '')))}</td><td>{escape(str(e.get('judge', '')))}</td>"
        f"<td class='{'good' if e.get('correct') else 'bad'}'>{_verdict(e.get('correct'))}</td></tr>"
        for e in examples)
    return ("<table><tr><th>question</th><th>reference</th><th>generation</th><th>extracted (how)</th>"
            f"<th>answer type</th><th>judge</th><th>verdict</th></tr>{rows}</table>")


def evaluation_html(title: str, metrics: dict[str, Any], examples: list[dict[str, Any]]) -> str:
    """The evaluation step's HTML visualization: metrics, per type and task, judges, worst examples."""
    return (f"<html><head>{STYLE}</head><body><h2>{escape(title)}</h2>{metrics_table({title: metrics})}"
            f"<h3>By answer type</h3>{per_type_table({title: metrics})}{per_task_table({title: metrics})}"
            f"<h3>Who decided</h3>{judges_table(examples)}"
            f"<h3>Worst examples</h3>{examples_table(worst_examples(examples))}</body></html>")


def promotion_html(decision: dict[str, Any], columns: dict[str, dict[str, Any]]) -> str:
    """The promotion step's HTML visualization: the decision, its reason and the compared metrics."""
    verdict = "promoted to production" if decision["promote"] else "kept in staging"
    return (f"<html><head>{STYLE}</head><body><h2>Model version {escape(verdict)}</h2>"
            f"<p>{escape(decision['reason'])}</p>{metrics_table(columns)}"
            f"<h3>By answer type</h3>{per_type_table(columns)}{per_task_table(columns)}</body></html>")
