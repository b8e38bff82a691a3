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

from dataclasses import dataclass
from typing import Any

from llm_trainer.evaluation import answer_types as types
from llm_trainer.evaluation.extraction import ALTERNATIVES, NUMBER, Extraction, clean, extract, extract_answer, polarity
from llm_trainer.evaluation.math_verifier import EQUAL, MathVerifier, shared_verifier
from llm_trainer.evaluation.text_metrics import (choice_letter, is_math, normalize_answer, numbers_equal,
                                                 parse_number, rouge_l, token_f1, words, yes_no)

__all__ = ["ScoringSettings", "aggregate", "extract_answer", "normalize_answer", "parse_number", "score",
           "score_many", "token_f1"]

EXPLICIT = ("final_line", "boxed", "answer_is")
FAILED_EXTRACTION = ("none", "last_line", "last_number")


@dataclass(frozen=True)
class ScoringSettings:
    numeric_tolerance: float = 0.0  # relative; 0 accepts exact values only (a rounded 0.3333 is not 1/3)
    verify_timeout: int = 3  # seconds per math-verify parse or comparison
    short_max_words: int = 20  # longer references are "long": overlap scores, no verdict

    @classmethod
    def from_config(cls, section: Any) -> ScoringSettings:
        """From the evaluation section or a TrainSpec's ``scoring`` (both name the fields alike); defaults for None."""
        if section is None:
            return cls()
        return cls(section.numeric_tolerance, section.verify_timeout_seconds, section.short_answer_max_words)


def reference_readings(reference: str) -> list[str]:
    """The reference and each alternative it packs ("2*C(10,5), or equivalently 504"; "k-2 (i.e., all)")."""
    whole = clean(reference)
    parts = [clean(part.rstrip(")")) for part in ALTERNATIVES.split(whole)]
    inner = [clean(p) for p in (whole, *parts) if p.startswith("$") and p.endswith("$") and len(p) > 1]
    return list(dict.fromkeys(p for p in (whole, *parts, *inner) if p))


def _phrase_in(reference: str, text: str) -> bool:
    expected, found = words(reference), words(text)
    if not expected or not found:
        return False
    if len(expected) == 1:  # a single word must be most of a short answer, not anywhere in a sentence
        return len(found) <= 6 and expected[0] in found
    return any(found[i:i + len(expected)] == expected for i in range(len(found) - len(expected) + 1))


def _text_key(answer: str) -> str:
    """Normalised text; math also without spaces ("[-1, 1]" is "[-1,1]")."""
    key = normalize_answer(answer)
    return key.replace(" ", "") if is_math(answer) else key


def _rules(extraction: Extraction, references: list[str], tolerance: float) -> tuple[bool | None, str, dict]:
    """A verdict from the cheap judges, or (None, ...) when only math-verify can decide."""
    candidates = extraction.candidates
    detail = {"exact_match": 0.0, "numeric_match": 0.0}
    normalized = {_text_key(r) for r in references}
    if any(_text_key(c) in normalized for c in candidates):
        return True, "exact_text", {"exact_match": 1.0, "numeric_match": float(parse_number(candidates[0]) is not None)}
    letter = choice_letter(references[0]) if len(references[0].strip("() .")) == 1 else None
    if letter:
        return any(choice_letter(c) == letter for c in candidates), "choice_letter", detail
    expected = next((v for v in map(yes_no, references) if v), None)
    if expected:
        stated = next((v for v in map(yes_no, candidates) if v), None)
        if stated is None:  # a stated number is an answer of its own: then only an opening yes/no counts
            numeric_answer = any(parse_number(c) is not None for c in candidates)
            stated = polarity(extraction.sentence or " ".join(candidates), strong_only=numeric_answer)
        return stated == expected, "yes_no", detail
    numeric = [numbers_equal(c, r, tolerance) for c in candidates for r in references]
    if any(numeric):
        return True, "numeric", {**detail, "numeric_match": 1.0}
    text = extraction.sentence or " ".join(candidates)
    if any(not is_math(r) and _phrase_in(r, text) for r in references):
        return True, "phrase", detail
    if numeric and all(v is not None for v in numeric):  # plain numbers on both sides: nothing left to try
        return False, "numeric", detail
    if any(is_math(r) for r in references) and any(is_math(c) for c in candidates):
        return None, "math_verify", detail
    return False, "exact_text", detail


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
        references_read = reference_readings(reference)
        verdict, judge, detail = _rules(extraction, references_read, settings.numeric_tolerance)
        row.update(detail, judge=judge, correct=verdict)
        if verdict is None:
            jobs.append((tuple(r for r in references_read if is_math(r)),
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
