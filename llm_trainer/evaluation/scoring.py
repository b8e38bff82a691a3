"""Answer extraction and scoring: a small public API to extend for new domains.

    score("... 2 x 4 = 8 dollars.\\n\\nFinal answer: 8", "8")
    -> {"extracted": "8", "exact_match": 1.0, "numeric_match": 1.0, "token_f1": 1.0, "correct": True}

Extraction order: the last explicit final-answer line, else the last ``\\boxed{...}``, else the last
"the answer is ..."/"answer: ...", else the last number, else the last non-empty line.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from typing import Any

FINAL_LINE = re.compile(r"final\s+answer\s*(?:is|:)?\**\s*:?\s*(.+)", re.IGNORECASE)
ANSWER_IS = re.compile(r"(?:the\s+answer\s+is|answer\s*:)\s*(.+)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?:\s*/\s*\d+)?", re.IGNORECASE)
FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
LATEX_WRAPPERS = re.compile(r"\\(?:text|mathrm|mathbf|textbf|operatorname)\{([^{}]*)\}")
LATEX_SPACING = re.compile(r"\\[,!;: ]|\\left|\\right|\\quad|\\qquad")
CURRENCY = "$€£¥"
ARTICLES = re.compile(r"\b(a|an|the)\b")


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with nested braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[begin:index].strip()
    return text[begin:].strip()


def _clean_tail(answer: str) -> str:
    return answer.strip().strip("*").strip().rstrip(".").strip()


def extract_answer(text: str) -> str:
    if not text or not text.strip():
        return ""
    finals = [m.group(1) for line in text.splitlines() if (m := FINAL_LINE.search(line))]
    if finals:
        boxed = _boxed(finals[-1])
        return boxed if boxed is not None else _clean_tail(finals[-1])
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    stated = [m.group(1) for line in text.splitlines() if (m := ANSWER_IS.search(line))]
    if stated:
        return _clean_tail(stated[-1])
    numbers = NUMBER.findall(text)
    if numbers:
        return numbers[-1].strip()
    return next(line.strip() for line in reversed(text.splitlines()) if line.strip())


def _strip_latex(text: str) -> str:
    text = FRAC.sub(r"\1/\2", text)
    previous = None
    while previous != text:
        previous, text = text, LATEX_WRAPPERS.sub(r"\1", text)
    return LATEX_SPACING.sub(" ", text).replace("$", "")


def parse_number(text: str) -> float | None:
    """The single number a short answer states (sign, separators, decimals, fractions, %, currency, units)."""
    if text is None:
        return None
    value = _strip_latex(unicodedata.normalize("NFKC", text)).strip().rstrip(".").strip()
    value = value.lstrip(CURRENCY).replace("−", "-").strip()
    match = re.fullmatch(r"(-?[\d,]*\.?\d+(?:e[-+]?\d+)?)\s*(?:/\s*(-?\d+(?:\.\d+)?))?\s*%?\s*([a-zA-Z][a-zA-Z /.²³]*)?",
                         value, re.IGNORECASE)
    if not match:
        return None
    number = match.group(1)
    if "," in number and not re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", number):
        return None
    try:
        parsed = float(number.replace(",", ""))
        if match.group(2) is not None:
            denominator = float(match.group(2))
            if denominator == 0:
                return None
            parsed /= denominator
    except ValueError:
        return None
    return parsed if math.isfinite(parsed) else None


def _format_number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def normalize_answer(text: str) -> str:
    """Canonical text: LaTeX, bold, quotes, case and spacing removed; whole-number answers canonicalised."""
    value = _strip_latex(unicodedata.normalize("NFKC", text or "")).strip().strip("*\"'`").strip()
    value = value.rstrip(".").strip()
    number = parse_number(value)
    if number is not None and "/" not in value:
        return _format_number(number)
    if number is not None:  # keep fractions as written, without spaces
        return re.sub(r"\s+", "", value.lstrip(CURRENCY)).lower()
    return " ".join(value.lower().split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style bag-of-tokens F1 (lower case, no punctuation, no articles)."""
    def tokens(text: str) -> list[str]:
        text = "".join(ch for ch in (text or "").lower() if ch not in string.punctuation)
        return ARTICLES.sub(" ", text).split()

    predicted, expected = tokens(prediction), tokens(reference)
    if not predicted and not expected:
        return 1.0
    if not predicted or not expected:
        return 0.0
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def score(prediction: str, reference: str, numeric_tolerance: float = 1e-4) -> dict[str, Any]:
    """Score a full generation against a reference answer; an empty reference is an error."""
    if not reference or not reference.strip():
        raise ValueError("reference answer is empty: score by loss instead")
    extracted = extract_answer(prediction)
    exact = float(normalize_answer(extracted) == normalize_answer(reference))
    predicted_number, reference_number = parse_number(extracted), parse_number(reference)
    numeric = float(predicted_number is not None and reference_number is not None
                    and abs(predicted_number - reference_number) <= numeric_tolerance * max(1.0, abs(reference_number)))
    return {"extracted": extracted, "exact_match": exact, "numeric_match": numeric,
            "token_f1": token_f1(extracted, reference), "correct": bool(exact or numeric)}


def aggregate(scores: list[dict[str, Any]]) -> dict[str, float]:
    if not scores:
        return {"exact_match": 0.0, "numeric_match": 0.0, "token_f1": 0.0, "accuracy": 0.0, "count": 0}
    n = len(scores)
    return {
        "exact_match": sum(s["exact_match"] for s in scores) / n,
        "numeric_match": sum(s["numeric_match"] for s in scores) / n,
        "token_f1": sum(s["token_f1"] for s in scores) / n,
        "accuracy": sum(bool(s["correct"]) for s in scores) / n,
        "count": n,
    }
