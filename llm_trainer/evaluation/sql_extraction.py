"""Where the SQL is in a model's answer, fenced or not.

A ```sql (or ```sqlite, or bare) fence wins: its content is the query, whatever prose surrounds it. Unfenced output
is read with sqlglot rather than cut at the first ';' or blank line:

- the SQL starts at the first statement keyword (SELECT, WITH, but also ATTACH, PRAGMA, DELETE, DROP, ...) from
  which some text up to a line end or a ';' parses as one SQL statement, keywords that begin a line tried before
  those within a line; prose that merely contains a keyword ("with a join:", "values are") does not parse as a
  statement and is passed over;
- a statement ends where the longest such text ends, and never past a blank line, so a sentence after the query
  ("This returns the average.") is left out;
- a statement right after it (after a ';' or on the next line) is kept with it, and so is a statement right before
  it (ended by a ';'): ``SELECT 5; DELETE FROM t`` and ``ATTACH DATABASE 'x' AS p; SELECT ...`` reach the sandbox
  whole, which scores them wrong (multiple statements, denied), instead of being trimmed to a harmless SELECT.

Statements sqlglot does not model (VACUUM, EXPLAIN, BEGIN: its ``Command`` fallback) count only when their keyword
is upper-case, as in SQL, since "Create a query..." or "explain:" in prose parse the same way.
"""

from __future__ import annotations

import logging
import re
from itertools import islice
from typing import Any

from llm_trainer.sql_sandbox import MAX_QUERY_CHARS

_FENCE = re.compile(r"```[ \t]*(?:sql|sqlite)?[ \t]*\n?(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)
_KEYWORD = re.compile(r"\b(SELECT|WITH|VALUES|INSERT|REPLACE|UPDATE|DELETE|CREATE|DROP|ALTER|ATTACH|DETACH|PRAGMA|"
                      r"VACUUM|REINDEX|ANALYZE|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|EXPLAIN)\b", re.IGNORECASE)
_QUERY_START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)
_CUT = re.compile(r"[;\n]")
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")
MAX_CANDIDATES = 32  # keyword positions tried as the start of the SQL (at line starts, then within lines)
MAX_CUTS = 256  # line ends and ';' tried as the end of one statement


def extract_sql(generation: str) -> str:
    """The SQL in a ```sql fence, or else the unfenced statements (see the module docstring); "" if none."""
    fence = _FENCE.search(generation)
    if fence and fence.group(1).strip():
        return fence.group(1).strip()
    span = sql_span(generation)
    if span is not None:
        return generation[span[0]:span[1]].strip()
    start = _QUERY_START.search(generation)  # sqlglot parses none of it: the old cut, for the sandbox to judge
    if start is None:
        return ""
    return _first_statement(generation[start.start():]).strip()


def sql_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the unfenced SQL in ``text``: the first parseable statement with the statements right
    before and after it; None when no keyword starts a parseable statement."""
    keywords = list(_KEYWORD.finditer(text))
    at_line_start = [k.start() for k in keywords if not text[text.rfind("\n", 0, k.start()) + 1:k.start()].strip()]
    within_lines = [k.start() for k in keywords if k.start() not in at_line_start]
    with _quiet_sqlglot():
        for candidate in [*at_line_start[:MAX_CANDIDATES], *within_lines[:MAX_CANDIDATES]]:
            end = statement_end(text, candidate)
            if end is None:
                continue
            start = _statement_before(text, candidate)
            while (following := _next_statement_start(text, end)) is not None:
                next_end = statement_end(text, following)
                if next_end is None:
                    break
                end = next_end
            return start, end
    return None


def statement_end(text: str, start: int) -> int | None:
    """The end of the longest text from ``start`` to a line end or ';' (before a blank line) that sqlglot parses as
    one statement."""
    best = None
    limit = min(len(text), start + MAX_QUERY_CHARS)
    blank_line = _BLANK_LINE.search(text, start, limit)
    limit = blank_line.start() if blank_line else limit
    cuts = [m.start() for m in islice(_CUT.finditer(text, start, limit), MAX_CUTS)] + [limit]
    for cut in cuts:
        parsed = _parse(text[start:cut])
        if parsed is None:
            continue
        if len(parsed) > 1:  # past a ';' that ends the statement: longer texts hold more
            break
        if _is_statement(parsed[0], text[start:cut]):
            best = cut
    return best


def _parse(sql: str) -> list[Any] | None:
    import sqlglot
    from sqlglot.errors import SqlglotError

    if not sql.strip():
        return None
    try:
        expressions = [e for e in sqlglot.parse(sql, read="sqlite") if e is not None]
    except (SqlglotError, RecursionError, ValueError):
        return None
    return expressions or None


def _is_statement(expression: Any, sql: str) -> bool:
    """A statement SQLite could run, not a bare expression ("values are" parses as a column alias); sqlglot's
    catch-all statements only when written in upper case."""
    from sqlglot import exp

    if isinstance(expression, exp.Query | exp.Values | exp.DML | exp.DDL | exp.Drop | exp.Alter | exp.Attach
                  | exp.Detach | exp.Pragma | exp.Analyze):
        return True
    if isinstance(expression, exp.Command | exp.Transaction | exp.Commit | exp.Rollback):
        word = sql.split(None, 1)[0] if sql.strip() else ""
        return word.isupper()
    return False


def _next_statement_start(text: str, end: int) -> int | None:
    """Where a statement right after ``end`` begins (past a ';' and white space), if a keyword is there."""
    position = end
    while position < len(text) and text[position] in " \t\r\n;":
        position += 1
    return position if _KEYWORD.match(text, position) else None


def _statement_before(text: str, start: int) -> int:
    """``start``, or where the statement ended by a ';' just before it begins: its keyword in upper case, or a
    statement other than a query in any case (one sqlglot does not know, as ``VACUUM;``, is caught here)."""
    before = text[:start].rstrip()
    if not before.endswith(";"):
        return start
    line_start = before.rfind("\n", 0, len(before) - 1) + 1
    for keyword in _KEYWORD.finditer(text, line_start, start):  # "I'll select the rows;" is prose, not SQL
        if keyword.group(0).isupper() or _parses_as_a_command(text, keyword.start()):
            return keyword.start()
    return start


def _parses_as_a_command(text: str, start: int) -> bool:
    """Whether a statement other than a query (ATTACH, PRAGMA, DELETE...) starts at ``start``."""
    from sqlglot import exp

    end = statement_end(text, start)
    parsed = _parse(text[start:end]) if end is not None else None
    return bool(parsed) and not isinstance(parsed[0], exp.Query | exp.Values)


def _first_statement(text: str) -> str:
    """Up to the first ';' outside quotes (or a blank line, where prose usually resumes)."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
        elif char == ";":
            return text[:i]
        elif char == "\n" and text[i + 1:i + 2] == "\n":
            return text[:i]
    return text


class _quiet_sqlglot:
    """sqlglot warns on each statement it falls back to parsing as a Command; extraction tries many on purpose."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("sqlglot")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)
