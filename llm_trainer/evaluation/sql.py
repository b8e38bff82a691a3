"""SqlEvaluator: text-to-SQL judged by running the SQL.

For each test row the generation's SQL (a ```sql fence, or else the unfenced statements: sql_extraction.py) and
the gold query run in a fresh in-memory SQLite database built from the row's context (``sql_sandbox``: model output
is hostile input). The prediction is right when the result multisets are equal; order counts only when the gold query has ORDER BY.
Metrics: execution accuracy, exact match of sqlglot-normalised SQL and the share of valid SQL (SQLite runs it
without an error), overall and per ``sql_complexity``; failures are counted by reason.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any

from llm_trainer.evaluation.base import BaseEvaluator, EvalResult
from llm_trainer.evaluation.sql_extraction import extract_sql  # noqa: F401 (imported from here too)
from llm_trainer.sql_sandbox import ERRORS, MAX_QUERY_CHARS, Sandbox

SCORES = ("execution_accuracy", "exact_match", "valid_sql")
COUNTS = ("examples", "no_sql_found", *(f"error_{reason}" for reason in ERRORS))
GENERATION = ("generated_tokens", "generation_tokens_per_second", "hit_token_cap")
LOSS = ("eval_loss", "perplexity", "loss_tokens")

_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)


def _parse_one(sql: str) -> Any:
    """The one statement in ``sql`` as a sqlglot expression, or None (not parseable, empty, several, too long)."""
    import sqlglot
    from sqlglot.errors import SqlglotError

    if not sql.strip() or len(sql) > MAX_QUERY_CHARS:
        return None
    try:
        expressions = [e for e in sqlglot.parse(sql, read="sqlite") if e is not None]
    except (SqlglotError, RecursionError, ValueError):
        return None
    return expressions[0] if len(expressions) == 1 else None


def normalize_sql(sql: str) -> str | None:
    """sqlglot's canonical SQLite rendering (identifiers lower-cased, spacing and keyword case unified); None if
    sqlglot cannot parse it."""
    expression = _parse_one(sql)
    return None if expression is None else expression.sql(dialect="sqlite", normalize=True)


@lru_cache(maxsize=8192)
def gold_facts(gold_sql: str) -> tuple[str | None, bool]:
    """The gold query's normalised text, and whether its outermost statement has ORDER BY (then the order of the
    rows counts). Cached: every evaluated model is scored against the same gold queries, and parsing dominates."""
    expression = _parse_one(gold_sql)
    if expression is None:
        return None, bool(_ORDER_BY.search(gold_sql))
    return expression.sql(dialect="sqlite", normalize=True), expression.args.get("order") is not None


def is_ordered(gold_sql: str) -> bool:
    """Whether the gold query's outermost ORDER BY makes the row order part of the answer."""
    return gold_facts(gold_sql)[1]


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).rstrip(";").rstrip() == " ".join(b.split()).rstrip(";").rstrip()


def _canonical_value(value: Any) -> Any:
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        return round(value, 6)
    return value


def _canonical_rows(rows: list[tuple]) -> list[tuple]:
    return [tuple(_canonical_value(v) for v in row) for row in rows]


def results_match(predicted: list[tuple], gold: list[tuple], ordered: bool) -> bool:
    """Whether two query results hold the same rows (in order when ``ordered``), floats rounded."""
    predicted, gold = _canonical_rows(predicted), _canonical_rows(gold)
    if ordered:
        return predicted == gold
    return Counter(predicted) == Counter(gold)


def score_sql(generation: str, gold_sql: str, context: str, timeout_seconds: float = 2.0,
              max_rows: int = 10_000) -> dict[str, Any]:
    """One example's verdict: extracted SQL, correct (same result), exact match, valid, and the error reason."""
    predicted = extract_sql(generation)
    row: dict[str, Any] = {"predicted_sql": predicted[:2000], "correct": False, "exact_match": False,
                           "valid_sql": False, "error": None, "error_detail": ""}
    if not predicted:
        row["error"] = "no_sql_found"
        return row
    gold_normal, ordered = gold_facts(gold_sql)
    row["exact_match"] = gold_normal is not None and (_same_text(predicted, gold_sql)
                                                      or normalize_sql(predicted) == gold_normal)
    with Sandbox(context, timeout_seconds, max_rows) as sandbox:
        gold = sandbox.run(gold_sql)
        if not gold.ok:
            row.update(error="gold_failed", error_detail=gold.detail)
            return row
        result = sandbox.run(predicted)
    if not result.ok:
        row.update(error=result.error, error_detail=result.detail)
        return row
    row["valid_sql"] = True
    row["correct"] = results_match(result.rows or [], gold.rows or [], ordered)
    return row


def slug(value: str) -> str:
    """A metric-name key: lowercase letters and digits joined by _ ('unknown' when empty)."""
    return re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_") or "unknown"


def aggregate_sql(rows: list[dict[str, Any]], complexities: list[str]) -> dict[str, float]:
    """The shares over all examples and per complexity, and counts of failures by reason."""
    metrics: dict[str, float] = {"examples": len(rows)}
    groups: dict[str, list[dict[str, Any]]] = {"": rows}
    for row, complexity in zip(rows, complexities):
        groups.setdefault(slug(complexity or "unknown"), []).append(row)
    for group, members in groups.items():
        suffix = f".{group}" if group else ""
        count = max(len(members), 1)
        metrics[f"execution_accuracy{suffix}"] = sum(r["correct"] for r in members) / count
        metrics[f"exact_match{suffix}"] = sum(r["exact_match"] for r in members) / count
        metrics[f"valid_sql{suffix}"] = sum(r["valid_sql"] for r in members) / count
        if group:
            metrics[f"count.{group}"] = len(members)
    reasons = Counter(r["error"] for r in rows if r["error"])
    metrics["no_sql_found"] = reasons.pop("no_sql_found", 0)
    for reason in ERRORS:
        metrics[f"error_{reason}"] = reasons.pop(reason, 0)
    metrics.update({f"error_{reason}": n for reason, n in reasons.items()})  # e.g. gold_failed
    return metrics


class SqlEvaluator(BaseEvaluator):
    """``evaluation.evaluator: sql``: execution accuracy of predicted queries in the SQL sandbox."""

    # The fixed names; the per-complexity ones (execution_accuracy.basic_sql, count.basic_sql, ...) depend on the data.
    metric_names = (*SCORES, *COUNTS, "error_gold_failed", *GENERATION, *LOSS)

    def evaluate(self, model: Any, tokenizer: Any, processed_test: Any, tokenized_test: Any) -> EvalResult:
        """Each predicted query run beside the gold one; accuracy overall and per complexity."""
        cfg = self.cfg.evaluation
        answers = self.answer_test_questions(model, tokenizer, processed_test)
        rows, prompts, generations = answers.rows, answers.prompts, answers.generations
        complexities = list(rows["sql_complexity"])
        examples = []
        for row_id, question, gold, context, complexity, generation in zip(
                rows["row_id"], rows["question"], rows["reference_answer"], rows["sql_context"], complexities,
                generations):
            verdict = score_sql(generation.text, gold, context, cfg.sql_timeout_seconds, cfg.sql_max_rows)
            examples.append({"row_id": row_id, "question": question, "reference": gold, "sql_complexity": complexity,
                             "generation": generation.text, "scored": True, **verdict})
        metrics: dict[str, Any] = aggregate_sql(examples, complexities)
        metrics.update({
            **answers.speed(),
            **self.loss_metrics(model, tokenizer, tokenized_test),
        })
        return EvalResult(metrics=metrics, examples=examples)
