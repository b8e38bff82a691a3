"""Scoring a model's solution against a reference answer: a small public API to extend for new domains.

    score("... 2 x 4 = 8 dollars.\\n\\nFinal answer: 8", "8")["correct"]  -> True
    score("So the answer is $2\\\\sqrt{2}$.", "\\\\sqrt{8}")["judge"]   -> "math_verify"

The answer is read out of the solution (``extraction``), the reference is typed (none, single word, short,
long). Short and single-word references are judged correct or wrong by the first judge that applies:
exact text, a multiple-choice letter, yes/no, numbers (exact unless ``numeric_tolerance``), a phrase the
conclusion states, then math-verify (symbolic, bounded in time). Long references get token F1 and ROUGE-L, not
a verdict (``correct`` is None) unless an LLM judge is configured. See the README's table of what counts as
equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from llm_trainer.evaluation import answer_types as types
from llm_trainer.evaluation.extraction import (ALTERNATIVES, NUMBER, Extraction, clean, extract, extract_answer,
                                               is_sentence, list_values, polarity, sentence_answers)
from llm_trainer.evaluation.math_verifier import EQUAL, MathVerifier, shared_verifier
from llm_trainer.evaluation.text_metrics import (choice_letter, is_math, none_exist, normalize_answer, numbers_equal,
                                                 parse_number, rouge_l, token_f1, words, yes_no)

__all__ = ["ScoringSettings", "aggregate", "extract_answer", "normalize_answer", "parse_number", "score",
           "score_many", "token_f1"]

EXPLICIT = ("final_line", "boxed", "answer_is")
FAILED_EXTRACTION = ("none", "last_line", "last_number")


@dataclass(frozen=True)
class ScoringSettings:
    """How an answer is judged: numeric tolerance, math-verify timeout, when a reference is long."""

    numeric_tolerance: float = 0.0  # relative; 0 accepts exact values only (a rounded 0.3333 is not 1/3)
    verify_timeout: int = 3  # seconds per math-verify parse or comparison
    short_max_words: int = 20  # longer references are "long": overlap scores, no verdict
    read_sentences: bool = True  # read the answer out of a reference written as a sentence (False: as before)

    @classmethod
    def from_config(cls, section: Any) -> ScoringSettings:
        """From the evaluation section or a TrainSpec's ``scoring`` (both name the fields alike); defaults for None."""
        if section is None:
            return cls()
        return cls(section.numeric_tolerance, section.verify_timeout_seconds, section.short_answer_max_words)


def reference_readings(reference: str, sentences: bool = True) -> list[str]:
    """The reference and each alternative it packs ("2*C(10,5), or equivalently 504"; "k-2 (i.e., all)"); with
    ``sentences``, also the answer each states as a sentence ("The limit exists and is equal to 3" -> 3) and
    the values of "x = 7 or x = -7" together ("7, -7", which a solution's "\\pm 7" equals)."""
    whole = clean(reference)
    parts = [clean(_unclosed(part) if sentences else part.rstrip(")")) for part in ALTERNATIVES.split(whole)]
    inner = [clean(p) for p in (whole, *parts) if p.startswith("$") and p.endswith("$") and len(p) > 1]
    stated: list[str] = []
    if sentences:
        stated = [answer for p in dict.fromkeys((whole, *parts)) for answer in sentence_answers(p)]
        stated.append(list_values(parts) if len(parts) > 1 else "")
    return list(dict.fromkeys(p for p in (whole, *parts, *inner, *stated) if p))


def _unclosed(part: str) -> str:
    """"1000 (i.e., all values)" splits into "1000" and "all values)": drop the parenthesis the split left open
    (not the one closing "The probability is 3/8 (0.375)", whose loose "3/8 (0.375" math-verify read as 3)."""
    return part[:-1] if part.endswith(")") and part.count(")") > part.count("(") else part


def _several_numbers(text: str) -> bool:
    """"1 and 3", "25 percent of 80": not one number with a unit, though ``parse_number`` reads them so."""
    return len(NUMBER.findall(re.sub(r"\^\{?\d+\}?|[²³]", "", text))) > 1


def _phrase_in(reference: str, text: str) -> bool:
    expected, found = words(reference), words(text)
    if not expected or not found:
        return False
    if len(expected) == 1:  # a single word must be most of a short answer, not anywhere in a sentence
        return len(found) <= 6 and expected[0] in found
    return any(found[i:i + len(expected)] == expected for i in range(len(found) - len(expected) + 1))


def _text_key(answer: str, sentences: bool = False) -> str:
    """Normalised text; math also without spaces ("[-1, 1]" is "[-1,1]"). With ``sentences``, a sentence or a
    phrase of several numbers is compared as text, never as the number it starts with."""
    key = normalize_answer(answer, numbers=not (sentences and (is_sentence(answer) or _several_numbers(answer))))
    return key.replace(" ", "") if is_math(answer) else key


def _rules(extraction: Extraction, references: list[str], tolerance: float,
           sentences: bool = False) -> tuple[bool | None, str, dict]:
    """A verdict from the cheap judges, or (None, ...) when only math-verify can decide. With ``sentences``, the
    numeric judge and math-verify see no sentence among the references (see ``math_readings``)."""
    candidates = extraction.candidates
    values = math_readings(references) if sentences else references
    numbers = [r for r in values if not _several_numbers(r)] if sentences else references
    detail = {"exact_match": 0.0, "numeric_match": 0.0}
    normalized = {_text_key(r, sentences) for r in references}
    if any(_text_key(c, sentences) in normalized for c in candidates):
        return True, "exact_text", {"exact_match": 1.0, "numeric_match": float(parse_number(candidates[0]) is not None)}
    letter = choice_letter(references[0]) if len(references[0].strip("() .")) == 1 else None
    if letter:
        return any(choice_letter(c) == letter for c in candidates), "choice_letter", detail
    expected = next((v for r in references if (v := _yes_no(r, sentences))), None)
    if expected:
        stated = next((v for c in candidates if (v := _yes_no(c, sentences))), None)
        if stated is None:  # a stated number is an answer of its own: then only an opening yes/no counts
            numeric_answer = any(parse_number(c) is not None for c in candidates)
            # ... unless nothing exists is the answer: "x^2 + y^2 = 3 has no integer solutions" states a number too
            strong_only = numeric_answer and not (sentences and any(map(none_exist, references)))
            stated = polarity(extraction.sentence or " ".join(candidates), strong_only=strong_only)
        return stated == expected, "yes_no", detail
    numeric = [numbers_equal(c, r, tolerance) for c in candidates for r in numbers]
    if any(numeric):
        return True, "numeric", {**detail, "numeric_match": 1.0}
    text = extraction.sentence or " ".join(candidates)
    if any(not is_math(r) and _phrase_in(r, text) for r in references):
        return True, "phrase", detail
    if numeric and all(v is not None for v in numeric):  # plain numbers on both sides: nothing left to try
        return False, "numeric", detail
    if any(is_math(r) for r in values) and any(is_math(c) for c in candidates):
        return None, "math_verify", detail
    return False, "exact_text", detail


def _yes_no(text: str, sentences: bool) -> str | None:
    """``yes_no``; with ``sentences`` also "no" for an answer that nothing exists ("No such values", "DNE") and
    an opening "True." or "False," ("True. (2a+1)(2b+1) is odd.")."""
    found = yes_no(text)
    if found or not sentences:
        return found
    if none_exist(text):
        return "no"
    opening = re.match(r"\s*\**(true|false)\**\s*[,;:.(—-]", text, re.IGNORECASE)
    return ({"true": "yes", "false": "no"}[opening.group(1).lower()]) if opening else None


def math_readings(readings: list[str]) -> list[str]:
    """The readings math-verify may compare: no sentences. math-verify reads "The answer is 2 when n is even and
    3 when n is odd" as 2; the answers read out of a sentence are compared instead."""
    return [r for r in readings if not is_sentence(r)]


def _with_stated_answers(extraction: Extraction) -> Extraction:
    """An explicit answer written as a sentence ("Answer: The original price was $31.25.") is read like one."""
    if extraction.method not in EXPLICIT or not any(map(is_sentence, extraction.candidates)):
        return extraction
    stated = [a for c in extraction.candidates if is_sentence(c) for a in sentence_answers(c)]
    return replace(extraction, candidates=list(dict.fromkeys(extraction.candidates + stated)))


def score_many(predictions: list[str], references: list[str | None], settings: ScoringSettings = ScoringSettings(),
               verifier: MathVerifier | None = None) -> list[dict[str, Any]]:
    """One row per (prediction, reference); symbolic comparisons run together in the bounded verifier."""
    rows: list[dict[str, Any]] = []
    jobs, waiting = [], []
    for prediction, reference in zip(predictions, references, strict=True):
        kind = types.answer_type(reference, settings.short_max_words)
        extraction = extract(prediction)
        row = {"extracted": extraction.answer, "extraction": extraction.method, "answer_type": kind, "judge": "",
               "correct": None, "exact_match": 0.0, "numeric_match": 0.0, "math_match": 0.0, "token_f1": 0.0,
               "rouge_l": 0.0, "verify_status": "", "scored": kind != types.NONE,
               "extraction_failed": extraction.method in FAILED_EXTRACTION}
        rows.append(row)
        if kind == types.NONE:
            continue
        stated = extraction.answer if extraction.method in EXPLICIT else prediction
        if kind == types.LONG:
            row.update(judge="text_overlap", token_f1=token_f1(stated, reference), rouge_l=rouge_l(stated, reference))
            continue
        row["token_f1"] = token_f1(extraction.answer, reference)
        # "Final answer: 3 ... Final answer: 4" or "3 or 4" must not win by covering both
        if extraction.conflicting or (extraction.hedged and len(set(NUMBER.findall(reference))) < 2):
            row.update(judge="conflicting_answers", correct=False)
            continue
        references_read = reference_readings(reference, settings.read_sentences)
        if settings.read_sentences:
            extraction = _with_stated_answers(extraction)
        verdict, judge, detail = _rules(extraction, references_read, settings.numeric_tolerance,
                                        settings.read_sentences)
        row.update(detail, judge=judge, correct=verdict)
        if verdict is None:
            golds = math_readings(references_read) if settings.read_sentences else references_read
            jobs.append((tuple(r for r in golds if is_math(r)),
                         tuple(c for c in extraction.candidates if is_math(c))))
            waiting.append(row)
    if jobs:
        statuses = (verifier or shared_verifier(settings.verify_timeout)).compare_many(jobs)
        for row, status in zip(waiting, statuses):
            row.update(correct=status == EQUAL, math_match=float(status == EQUAL), verify_status=status)
    return rows


def score(prediction: str, reference: str, numeric_tolerance: float = 0.0, *,
          settings: ScoringSettings | None = None, verifier: MathVerifier | None = None) -> dict[str, Any]:
    """Score one full generation against a reference answer; an empty reference is an error."""
    if not reference or not reference.strip():
        raise ValueError("reference answer is empty: score by loss instead")
    settings = settings or ScoringSettings(numeric_tolerance=numeric_tolerance)
    return score_many([prediction], [reference], settings, verifier)[0]


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return sum(float(r[key] or 0.0) for r in rows) / len(rows) if rows else 0.0


def aggregate(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Metrics per answer type, with counts: accuracy on verifiable references, F1 and ROUGE-L on long ones."""
    by_type = {kind: [r for r in rows if r["answer_type"] == kind] for kind in types.ANSWER_TYPES}
    verifiable = by_type[types.SINGLE_WORD] + by_type[types.SHORT]
    scored = [r for r in rows if r["scored"]]
    metrics: dict[str, float] = {
        "accuracy": _mean(verifiable, "correct"),
        "exact_match": _mean(verifiable, "exact_match"),
        "numeric_match": _mean(verifiable, "numeric_match"),
        "math_match": _mean(verifiable, "math_match"),
        "token_f1": _mean(verifiable, "token_f1"),
        **{f"accuracy_{kind}": _mean(by_type[kind], "correct") for kind in types.VERIFIABLE},
        "token_f1_long": _mean(by_type[types.LONG], "token_f1"),
        "rouge_l_long": _mean(by_type[types.LONG], "rouge_l"),
        **{f"count_{kind}": len(by_type[kind]) for kind in types.ANSWER_TYPES},
        "extraction_failed": _mean(scored, "extraction_failed"),
        "verify_timeout": sum(r["verify_status"] in ("timeout", "too_long", "too_complex") for r in rows),
    }
    return metrics
