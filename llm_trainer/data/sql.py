"""SqlDataProcessor: text-to-SQL rows (the gretelai/synthetic_text_to_sql schema) -> chat messages.

Schema: ``sql_prompt`` (the question), ``sql_context`` (CREATE TABLE and INSERT statements), ``sql`` (the gold
query), ``sql_explanation``, ``domain`` and ``sql_complexity``. The prompt holds the schema and the question; the
target is the SQL in a ```sql fence, optionally preceded by the explanation (``data.sql_with_explanation``).

Every kept row is executable: its context builds an in-memory SQLite database and its gold query runs there (in
the same sandbox that runs model output). A gold query SQLite rejects is transpiled from ``data.sql_dialect`` with
sqlglot (MySQL and PostgreSQL date functions rewritten with SQLite's strftime, see sql_transpile.py) and tried
again; the rows that needed it are counted in the report (``gold_transpiled``). A gold query that still calls a
function SQLite lacks is dropped as ``gold_no_such_function: NAME``, other failures as ``gold_query_fails``.
"""

from __future__ import annotations

import re
from typing import Any

import datasets

from llm_trainer.data.base import TOO_LONG, BaseDataProcessor
from llm_trainer.data.sql_transpile import transpile_to_sqlite
from llm_trainer.data.text import clean_text, dedup_key
from llm_trainer.sql_sandbox import Sandbox

DEFAULT_SYSTEM_PROMPT = ("You translate questions into SQLite queries. Answer with one SQL query in a ```sql "
                         "code block.")
GOLD_TIMEOUT_SECONDS = 2.0
GOLD_MAX_ROWS = 100_000
_NO_SUCH_FUNCTION = re.compile(r"no such function: (\w+)")


def sql_prompt(context: str, question: str) -> str:
    """The user turn of a text-to-SQL row: the database schema, then the question."""
    return f"Database schema:\n{context}\n\nQuestion: {question}"


def sql_target(sql: str, explanation: str | None) -> str:
    """The assistant turn of a text-to-SQL row: the SQL in a ```sql fence, after the explanation if any."""
    fenced = f"```sql\n{sql}\n```"
    return f"{explanation}\n\n{fenced}" if explanation else fenced


def gold_failure_reason(detail: str) -> str:
    """The drop reason of a gold query SQLite rejects: ``gold_no_such_function: YEAR`` names a function SQLite
    lacks (after transpiling), anything else is ``gold_query_fails``."""
    function = _NO_SUCH_FUNCTION.search(detail)
    return f"gold_no_such_function: {function.group(1).upper()}" if function else "gold_query_fails"


class SqlDataProcessor(BaseDataProcessor):
    """``data.processor: sql``: text-to-SQL rows whose gold query runs on their schema."""

    extra_columns = ("sql_context", "sql_complexity", "gold_transpiled")
    domain_system_prompt = DEFAULT_SYSTEM_PROMPT

    def format_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Text-to-SQL rows -> chat messages and the columns the SQL evaluator reads."""
        out, columns = self.begin_batch(batch, "load_error", "sql_prompt", "sql_context", "sql", "sql_explanation",
                                        "sql_complexity")
        for load_error, question, context, gold, explanation, complexity in zip(*columns):
            if load_error is not None:
                reason, values = load_error, None
            else:
                reason, values = self._format_row(question, context, gold, explanation)
            messages, question_text, gold_sql, context_sql, transpiled = values or ([], "", "", "", False)
            out["messages"].append(messages)
            out["question"].append(question_text)
            out["reference_answer"].append(gold_sql)
            out["sql_context"].append(context_sql)
            out["sql_complexity"].append(complexity if isinstance(complexity, str) and complexity else "unknown")
            out["gold_transpiled"].append(transpiled)
            out["dedup_text"].append(dedup_key(f"{question_text}\n{context_sql}"))
            out["drop_reason"].append(reason)
        return out

    def _format_row(self, question: Any, context: Any, gold: Any, explanation: Any) -> tuple[str | None, Any]:
        for name, value in (("sql_prompt", question), ("sql_context", context), ("sql", gold)):
            if not isinstance(value, str) or not value.strip():
                return f"missing_{name}", None
        question, context, gold = clean_text(question), clean_text(context), clean_text(gold)
        context, gold, transpiled, reason = self._executable(context, gold)
        if reason:
            return reason, None
        explanation = clean_text(explanation) if self.cfg.sql_with_explanation and isinstance(explanation, str) else ""
        target = sql_target(gold, explanation)
        user = sql_prompt(context, question)
        if len(user) + len(target) > self.cfg.max_chars:
            return TOO_LONG, None
        messages = self.with_system_prompt([{"role": "user", "content": user}, {"role": "assistant", "content": target}])
        return None, (messages, question, gold, context, transpiled)

    def _executable(self, context: str, gold: str) -> tuple[str, str, bool, str | None]:
        """(context and gold SQL for SQLite, whether the gold was transpiled, drop reason or None)."""
        dialect = self.cfg.sql_dialect
        with Sandbox(context, GOLD_TIMEOUT_SECONDS, GOLD_MAX_ROWS) as sandbox:
            if sandbox.build_error is None:
                return (context, *self._runnable_gold(sandbox, gold))
        transpiled = transpile_to_sqlite(context, dialect) if dialect != "sqlite" else None
        if transpiled is None:
            return context, gold, False, "context_does_not_build"
        with Sandbox(transpiled, GOLD_TIMEOUT_SECONDS, GOLD_MAX_ROWS) as sandbox:
            if sandbox.build_error is not None:
                return context, gold, False, "context_does_not_build"
            return (transpiled, *self._runnable_gold(sandbox, gold))

    def _runnable_gold(self, sandbox: Sandbox, gold: str) -> tuple[str, bool, str | None]:
        result = sandbox.run(gold)
        if result.ok:
            return gold, False, None
        if self.cfg.sql_dialect != "sqlite" and result.error == "sql_error":
            transpiled = transpile_to_sqlite(gold, self.cfg.sql_dialect)
            if transpiled is not None and transpiled != gold:
                retried = sandbox.run(transpiled)
                if retried.ok:
                    return transpiled, True, None
                if retried.error == "sql_error":
                    result = retried  # the function the transpiled query still lacks, if that is why
        if result.error in ("denied", "multiple_statements"):
            return gold, False, "gold_not_a_single_select"
        return gold, False, gold_failure_reason(result.detail)

    def preprocess(self, raw: datasets.Dataset) -> tuple[datasets.DatasetDict, dict[str, Any]]:
        """As the base's, with the count of gold queries transpiled to SQLite in the report."""
        processed, report = super().preprocess(raw)
        report["gold_transpiled"] = sum(sum(split["gold_transpiled"]) for split in processed.values())
        report["sql_dialect"] = self.cfg.sql_dialect
        return processed, report
