"""Text-level judges: normalisation, numbers (with the exactness rules of a careful grader), token F1, ROUGE-L."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter

FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
LATEX_WRAPPERS = re.compile(r"\\(?:text|mathrm|mathbf|textbf|operatorname|textit|mbox)\{([^{}]*)\}")
LATEX_SPACING = re.compile(r"\\[,!;: ]|\\left|\\right|\\quad|\\qquad")
CURRENCY = "$€£¥"
ARTICLES = re.compile(r"\b(a|an|the)\b")
NUMBER_TEXT = re.compile(r"(-?[\d,]*\.?\d+(?:e[-+]?\d+)?)\s*(?:/\s*(-?\d+(?:\.\d+)?))?\s*(%)?\s*"
                         r"(?:[a-zA-Z][a-zA-Z /.²³^\d]*)?", re.IGNORECASE)
ROUGE_TOKEN = re.compile(r"[a-z0-9]+")
CHOICE = re.compile(r"^\(?([A-Ha-h])\)?(?:[.):]|\s|$)")
MATHY = re.compile(r"[\d\\^_=+*/()\[\]{}<>|]|^[a-zA-Z]$|π|√|∞")
YES = {"yes", "true", "correct", "possible", "exists", "it exists", "valid"}
NO = {"no", "false", "incorrect", "impossible", "not possible", "does not exist", "none", "invalid", "never"}
# "No such values", "There is no such polynomial", "No real solutions exist", "The limit does not exist": answers
# that nothing exists, which a solution's "there are no such values" or "DNE" states as well.
NONE_EXIST = re.compile(r"(?:there (?:is|are|exist|exists) )?no (?:such |real |integer |positive |rational |valid )*"
                        r"[a-z]+(?: of [a-z]+)?(?: exists?)?|(?:[a-z]+ ){0,3}(?:does|do) not exist|dne")


def strip_latex(text: str) -> str:
    """Text without LaTeX markup: fractions as a/b, text and font wrappers unwrapped, spacing and $ dropped."""
    text = FRAC.sub(r"\1/\2", text)
    previous = None
    while previous != text:
        previous, text = text, LATEX_WRAPPERS.sub(r"\1", text)
    return LATEX_SPACING.sub(" ", text).replace("\\%", "%").replace("$", "")


def parse_number(text: str | None) -> float | None:
    """The single number a short answer states (sign, separators, decimals, fractions, %, currency, units)."""
    parsed = _number(text)
    return parsed[0] if parsed else None


def _number(text: str | None) -> tuple[float, bool, int] | None:
    """(value, written as a percent, decimals written) of a short numeric answer, else None."""
    if text is None:
        return None
    value = strip_latex(unicodedata.normalize("NFKC", text)).strip().rstrip(".").strip()
    value = value.lstrip(CURRENCY).replace("−", "-").strip()
    match = NUMBER_TEXT.fullmatch(value)
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
    if not math.isfinite(parsed):
        return None
    decimals = len(number.split(".")[1]) if "." in number and "e" not in number.lower() and not match.group(2) else 0
    return parsed, match.group(3) is not None, decimals


def numbers_equal(prediction: str, reference: str, tolerance: float = 0.0) -> bool | None:
    """None when either is not a plain number. Exact by default; a reference written with 2+ decimals
    (an inexact value such as 3.14) accepts a prediction that rounds to it; ``tolerance`` is relative."""
    predicted, expected = _number(prediction), _number(reference)
    if predicted is None or expected is None:
        return None
    values = {predicted[0]}
    if predicted[1] != expected[1]:  # 25% against 0.25
        values |= {predicted[0] / 100} if predicted[1] else {predicted[0] * 100}
    target = expected[0]
    for value in values:
        if math.isclose(value, target, rel_tol=1e-12, abs_tol=1e-12):
            return True
        if tolerance and abs(value - target) <= tolerance * max(1.0, abs(target)):
            return True
        if expected[2] >= 2 and predicted[2] > expected[2] and round(value, expected[2]) == round(target, expected[2]):
            return True
    return False


def _format_number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def normalize_answer(text: str, numbers: bool = True) -> str:
    """Canonical text: LaTeX, bold, quotes, case and spacing removed; whole-number answers canonicalised (unless
    not ``numbers``: "20 is 25 percent of 80" parses as 20, with the unit "is 25 percent of 80")."""
    value = strip_latex(unicodedata.normalize("NFKC", text or "")).strip().strip("*\"'`").strip()
    value = value.rstrip(".").strip()
    number = parse_number(value) if numbers else None
    if number is not None and "/" not in value:
        return _format_number(number)
    if number is not None:  # keep fractions as written, without spaces
        return re.sub(r"\s+", "", value.lstrip(CURRENCY)).lower()
    return re.sub(r"^(?:a|an|the)\s+", "", " ".join(value.lower().split()))


def words(text: str) -> list[str]:
    """Lower-case words without punctuation or articles (SQuAD's normalisation)."""
    text = "".join(ch for ch in (text or "").lower() if ch not in string.punctuation)
    return ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style bag-of-tokens F1 (lower case, no punctuation, no articles)."""
    predicted, expected = words(prediction), words(reference)
    if not predicted and not expected:
        return 1.0
    if not predicted or not expected:
        return 0.0
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure on lower-cased alphanumeric tokens, as google's rouge-score computes it without
    stemming (that package imports nltk and scipy: seconds per process for one longest common subsequence)."""
    predicted, expected = ROUGE_TOKEN.findall(prediction.lower()), ROUGE_TOKEN.findall(reference.lower())
    if not predicted or not expected:
        return float(predicted == expected)
    common = _lcs_length(predicted, expected)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def is_math(text: str) -> bool:
    """Worth a symbolic comparison: digits, LaTeX, operators, brackets or a single variable."""
    return bool(MATHY.search(text.strip()))


def choice_letter(text: str) -> str | None:
    """The letter of a multiple-choice answer such as '(B)' or 'c.', upper-cased; None if not one."""
    match = CHOICE.match(text.strip())
    return match.group(1).upper() if match else None


def none_exist(text: str) -> bool:
    """An answer that nothing exists ("No such values", "There is no such polynomial", "The limit does not exist")."""
    return bool(NONE_EXIST.fullmatch(" ".join(words(text))))


def yes_no(text: str) -> str | None:
    """"yes"/"no" for a yes/no answer, including one that opens with the word ("No, it diverges")."""
    value = " ".join(words(text))
    if value in YES or value in NO:
        return "yes" if value in YES else "no"
    opening = re.match(r"\s*\**(yes|no)\**\s*[,;:.(—-]", text, re.IGNORECASE)
    return opening.group(1).lower() if opening else None
