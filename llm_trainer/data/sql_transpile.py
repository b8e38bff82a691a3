"""Gold queries from MySQL or PostgreSQL rendered as SQLite, date functions included.

sqlglot transpiles most of a query, but leaves the common date functions in forms SQLite cannot run (sqlglot 30.30:
``YEAR(hired)`` becomes ``YEAR(DATE(hired))``, ``NOW()`` stays ``NOW()``, ``DATE_SUB(CURDATE(), INTERVAL 1 YEAR)``
becomes ``DATE_SUB(CURRENT_DATE, '1', YEAR)``). Before rendering, these are rewritten into SQLite's own date
functions:

- ``YEAR``/``MONTH``/``DAY``/``HOUR``/``MINUTE``/``SECOND``/``DAYOFYEAR``/``DAYOFWEEK``/``QUARTER`` and
  ``EXTRACT(part FROM x)`` / ``DATE_PART('part', x)`` -> ``CAST(STRFTIME('%Y', x) AS INTEGER)`` and the like;
- ``NOW()``, ``SYSDATE()``, ``LOCALTIMESTAMP`` -> ``CURRENT_TIMESTAMP``; ``UNIX_TIMESTAMP(x)`` -> ``STRFTIME('%s', x)``;
- ``DATE_ADD``/``DATE_SUB``/``ADDDATE``/``SUBDATE`` and ``x +/- INTERVAL n unit`` -> ``DATE(x, '+n unit')`` (or
  ``DATETIME`` for a timestamp or a unit below a day), weeks as 7 days and quarters as 3 months;
- ``DATE_TRUNC('year'|'month'|'day', x)`` -> ``STRFTIME('%Y-01-01', x)`` / ``STRFTIME('%Y-%m-01', x)`` / ``DATE(x)``.

A function still unknown to SQLite makes the row's drop reason ``gold_no_such_function: NAME`` (see data/sql.py).
"""

from __future__ import annotations

from typing import Any

_PARTS = {"YEAR": "%Y", "MONTH": "%m", "DAY": "%d", "HOUR": "%H", "MINUTE": "%M", "SECOND": "%S", "DOY": "%j",
          "DAYOFYEAR": "%j", "DOW": "%w", "EPOCH": "%s"}
_SHIFT_UNITS = {"YEAR": ("year", 1), "MONTH": ("month", 1), "DAY": ("day", 1), "HOUR": ("hour", 1),
                "MINUTE": ("minute", 1), "SECOND": ("second", 1), "WEEK": ("day", 7), "QUARTER": ("month", 3)}
_TIME_UNITS = {"hour", "minute", "second"}
_NOW = {"NOW", "SYSDATE", "LOCALTIME", "LOCALTIMESTAMP", "CURRENT_TIMESTAMP"}


def transpile_to_sqlite(sql: str, dialect: str) -> str | None:
    """``sql`` rendered as SQLite by sqlglot, date functions rewritten for SQLite; None when sqlglot cannot."""
    import sqlglot
    from sqlglot.errors import SqlglotError

    try:
        expressions = [e for e in sqlglot.parse(sql, read=dialect) if e is not None]
        statements = [sqlite_dates(e).sql(dialect="sqlite") for e in expressions]
    except (SqlglotError, RecursionError, ValueError):
        return None
    return ";\n".join(statements) if statements else None


def sqlite_dates(expression: Any) -> Any:
    """A sqlglot expression with its MySQL/PostgreSQL date functions rewritten as SQLite ones (children first)."""
    for node in reversed(list(expression.walk(bfs=False))):
        replacement = _rewrite(node)
        if replacement is not None and replacement is not node:
            if node is expression:
                expression = replacement
            else:
                node.replace(replacement)
    return expression


def _unit(node: Any) -> str:
    name = (node.name if node is not None else "").upper()
    return name[:-1] if name.endswith("S") and name[:-1] in _SHIFT_UNITS else name


def _value(node: Any) -> Any:
    """x for sqlglot's own DATE(x)/TIMESTAMP(x) wrappers, which strftime does not need."""
    from sqlglot import exp

    return node.this if isinstance(node, exp.TsOrDsToDate | exp.TsOrDsToTimestamp) else node


def _strftime(fmt: str, value: Any) -> Any:
    from sqlglot import exp

    return exp.Anonymous(this="STRFTIME", expressions=[exp.Literal.string(fmt), _value(value)])


def _part(part: str, value: Any) -> Any:
    """The integer date part of ``value`` (None for a part SQLite has no format for)."""
    from sqlglot import exp

    if part == "QUARTER":
        month = _part("MONTH", value)
        return exp.Paren(this=exp.IntDiv(this=exp.Paren(this=exp.Add(this=month, expression=exp.Literal.number(2))),
                                         expression=exp.Literal.number(3)))
    if part not in _PARTS:
        return None
    return exp.Cast(this=_strftime(_PARTS[part], value), to=exp.DataType.build("INT"))


def _shift(value: Any, amount: Any, unit: str, sign: str) -> Any:
    """DATE(value, '+n unit'), or DATETIME(...) for a timestamp or a unit below a day; None for another unit."""
    from sqlglot import exp

    if unit not in _SHIFT_UNITS:
        return None
    name, factor = _SHIFT_UNITS[unit]
    if isinstance(amount, exp.Literal):
        number = float(amount.this) * factor
        modifier: Any = exp.Literal.string(f"{sign}{number:g} {name}")
    else:
        scaled = amount if factor == 1 else exp.Mul(this=amount, expression=exp.Literal.number(factor))
        modifier = exp.DPipe(this=exp.DPipe(this=exp.Literal.string(sign), expression=scaled),
                             expression=exp.Literal.string(f" {name}"))
    timestamp = isinstance(value, exp.CurrentTimestamp | exp.TsOrDsToTimestamp) or name in _TIME_UNITS
    return exp.Anonymous(this="DATETIME" if timestamp else "DATE", expressions=[_value(value), modifier])


def _interval_shift(node: Any, sign: str) -> Any:
    """x + INTERVAL n unit (either side), x - INTERVAL n unit, and CURRENT_DATE - n (days, as in PostgreSQL)."""
    from sqlglot import exp

    left, right = node.this, node.expression
    if isinstance(left, exp.Interval) and sign == "+":
        left, right = right, left
    if isinstance(right, exp.Interval):
        return _shift(left, right.this, _unit(right.args.get("unit")), sign)
    if isinstance(left, exp.CurrentDate) and isinstance(right, exp.Literal) and not right.is_string:
        return _shift(left, right, "DAY", sign)
    return None


def _rewrite(node: Any) -> Any:
    """The SQLite form of one date-function node, or None to leave it as it is."""
    from sqlglot import exp

    simple = {exp.Year: "YEAR", exp.Month: "MONTH", exp.Day: "DAY", exp.DayOfMonth: "DAY", exp.Hour: "HOUR",
              exp.Minute: "MINUTE", exp.Second: "SECOND", exp.DayOfYear: "DAYOFYEAR", exp.Quarter: "QUARTER"}
    kind = type(node)
    if kind in simple:
        return _part(simple[kind], node.this)
    if kind is exp.DayOfWeek:  # MySQL: 1 = Sunday; SQLite's %w: 0 = Sunday
        return exp.Paren(this=exp.Add(this=_part("DOW", node.this), expression=exp.Literal.number(1)))
    if kind is exp.Extract:
        return _part(_unit(node.this), node.expression)
    if kind in (exp.Localtimestamp, exp.CurrentDatetime):
        return exp.CurrentTimestamp()
    if kind in (exp.DateAdd, exp.DateSub):
        return _shift(node.this, node.expression, _unit(node.args.get("unit")) or "DAY",
                      "+" if kind is exp.DateAdd else "-")
    if kind in (exp.Add, exp.Sub):
        return _interval_shift(node, "+" if kind is exp.Add else "-")
    if kind in (exp.DateTrunc, exp.TimestampTrunc):
        unit = _unit(node.args.get("unit"))
        formats = {"YEAR": "%Y-01-01", "MONTH": "%Y-%m-01", "DAY": "%Y-%m-%d"}
        return _strftime(formats[unit], node.this) if unit in formats else None
    if kind is exp.Anonymous:
        return _anonymous(node)
    return None


def _anonymous(node: Any) -> Any:
    """NOW(), SYSDATE(), UNIX_TIMESTAMP(x), ADDDATE(x, n) and SUBDATE(x, n): functions sqlglot does not know."""
    from sqlglot import exp

    name, args = str(node.this).upper(), node.expressions
    if name in _NOW and not args:
        return exp.CurrentTimestamp()
    if name == "UNIX_TIMESTAMP" and len(args) <= 1:
        return _part("EPOCH", args[0] if args else exp.CurrentTimestamp())
    if name in ("ADDDATE", "SUBDATE") and len(args) == 2:
        sign = "+" if name == "ADDDATE" else "-"
        amount = args[1]
        if isinstance(amount, exp.Interval):
            return _shift(args[0], amount.this, _unit(amount.args.get("unit")), sign)
        return _shift(args[0], amount, "DAY", sign)
    return None
