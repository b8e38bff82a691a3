"""Errors that the CLI turns into one clear line and exit status 2, and the helpers that turn any exception into
one line (its message folded, the chain of exceptions behind it)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (config, paths, data); shown without a traceback."""


class ConfigError(UserError):
    """The configuration is invalid; the message names the key path."""


class DataError(UserError):
    """The data cannot be used (missing source, no usable row, a bad row in strict mode)."""


def one_line(exc: BaseException, limit: int | None = 300) -> str:
    """The exception's message with its whitespace folded to single spaces, cut at ``limit`` characters (None:
    whole); the exception's type name when the message is empty."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


def one_line_with_type(exc: BaseException, width: int = 200) -> str:
    """``Type: message`` on one line, shortened to ``width`` characters ending in "..." when longer."""
    text = f"{type(exc).__name__}: {one_line(exc, None)}"
    return text if len(text) <= width else text[: width - 3] + "..."


def exception_chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and the exceptions behind it (``__cause__``, else ``__context__``), outermost first, each once."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain
