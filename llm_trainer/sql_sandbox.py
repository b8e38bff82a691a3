"""Run untrusted SQL (model output is hostile input) in a fresh in-memory SQLite database.

A database is built from a row's context (CREATE TABLE / INSERT statements), then queried. Nothing here opens a
file: the database is ``:memory:``, temporary storage stays in memory, and ATTACH is impossible (limit 0 and
denied). A query runs under:

- an authorizer that allows exactly one read-only SELECT/WITH statement: reading tables and calling functions
  other than ``load_extension``; ATTACH/DETACH, PRAGMA and every write or schema change are denied;
- a progress-handler deadline, so an endless recursive CTE or a huge cross join is interrupted;
- caps on the query length, on the size of any one value, on the rows read and on the bytes read.

Every failure is a reason string (``QueryResult.error``), never an exception. The SQL processor runs each gold query
here and the SQL evaluator each predicted one, so it stands below both data/ and evaluation/.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from llm_trainer.errors import one_line

MAX_QUERY_CHARS = 20_000
MAX_CONTEXT_CHARS = 2_000_000
MAX_VALUE_BYTES = 1_000_000
MAX_RESULT_BYTES = 32_000_000
PROGRESS_EVERY = 1_000  # SQLite VM instructions between deadline checks

# Reasons a query is not scored; "denied" covers writes, PRAGMA, ATTACH and load_extension.
ERRORS = ("query_too_long", "multiple_statements", "denied", "timeout", "too_many_rows", "result_too_large",
          "sql_error")

_READ_ONLY = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_NEVER = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_PRAGMA}
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}


@dataclass
class QueryResult:
    """A query's rows, or why it has none (an error kind and its detail)."""

    rows: list[tuple] | None = None
    error: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether the query ran and returned rows within the limits."""
        return self.error is None


def _authorize_build(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    if action in _NEVER or (action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _authorize_query(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    if action not in _READ_ONLY or (action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class Sandbox:
    """One fresh in-memory database built from ``context``; ``run`` queries it read-only. Use as a context manager."""

    def __init__(self, context: str, timeout_seconds: float = 2.0, max_rows: int = 10_000):
        self.timeout_seconds = timeout_seconds
        self.max_rows = max_rows
        self._deadline = 0.0
        self.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        self.conn.execute("PRAGMA temp_store = MEMORY")  # large sorts must not spill to temporary files
        self.conn.execute("PRAGMA trusted_schema = OFF")
        self.conn.set_progress_handler(self._past_deadline, PROGRESS_EVERY)
        self.build_error = self._build(context)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the in-memory database."""
        self.conn.close()

    def _past_deadline(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def _build(self, context: str) -> str | None:
        if len(context) > MAX_CONTEXT_CHARS:
            return "context_too_long"
        self.conn.set_authorizer(_authorize_build)
        self._deadline = time.monotonic() + self.timeout_seconds
        try:
            self.conn.executescript(context)
        except sqlite3.Error as exc:
            return one_line(exc)
        except ValueError as exc:  # e.g. a NUL character in the script
            return one_line(exc)
        finally:
            self.conn.set_authorizer(_authorize_query)
        return None

    def run(self, sql: str) -> QueryResult:
        """Run one read-only query within the deadline and the row and size limits; a failure is a QueryResult error."""
        if self.build_error is not None:
            return QueryResult(error="sql_error", detail=f"context: {self.build_error}")
        if len(sql) > MAX_QUERY_CHARS:
            return QueryResult(error="query_too_long", detail=f"{len(sql)} characters")
        self._deadline = time.monotonic() + self.timeout_seconds
        try:
            cursor = self.conn.execute(sql)
            rows, size = [], 0
            while len(rows) <= self.max_rows:
                chunk = cursor.fetchmany(256)
                if not chunk:
                    break
                rows.extend(chunk)
                size += sum(_value_size(value) for row in chunk for value in row)
                if size > MAX_RESULT_BYTES:
                    return QueryResult(error="result_too_large", detail=f"over {MAX_RESULT_BYTES} bytes")
            if len(rows) > self.max_rows:
                return QueryResult(error="too_many_rows", detail=f"over {self.max_rows} rows")
            return QueryResult(rows=rows)
        except sqlite3.ProgrammingError as exc:
            if "one statement" in str(exc):
                return QueryResult(error="multiple_statements", detail=one_line(exc))
            return QueryResult(error="sql_error", detail=one_line(exc))
        except sqlite3.DatabaseError as exc:
            message = str(exc)
            if "interrupted" in message:
                return QueryResult(error="timeout", detail=f"over {self.timeout_seconds:g} s")
            if "authoriz" in message or "prohibited" in message:
                return QueryResult(error="denied", detail=one_line(exc))
            return QueryResult(error="sql_error", detail=one_line(exc))
        except (ValueError, OverflowError, MemoryError) as exc:  # NUL characters, huge integers, a result too big
            return QueryResult(error="sql_error", detail=one_line(exc))


def _value_size(value: object) -> int:
    return len(value) if isinstance(value, str | bytes) else 8
