"""argparse types for the CLI's numeric options (run_pipeline's and serve's): each parses a number and refuses one out of range in one line."""

from __future__ import annotations

import argparse
from typing import Any


def number(kind: type, low: float, high: float | None = None, low_open: bool = False) -> Any:
    """An argparse type: a number in [low, high] (or (low, high] with ``low_open``)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low or (low_open and value == low) or (high is not None and value > high):
            bound = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {bound} (got {text})")
        return value
    return parse


def positive(kind: type) -> Any:
    """An argparse type: a number above 0."""
    return number(kind, 0, low_open=True)


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0: any free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535 (got {text})")
    return value
