"""The public scoring API: extraction rules and their priority, normalisation, F1, score, aggregate."""

from __future__ import annotations

import pytest

from llm_trainer.evaluation.scoring import aggregate, extract_answer, normalize_answer, parse_number, score, token_f1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 x 4 = 8.\n\nFinal answer: 8", "8"),
        ("Final answer: 9\nthen 8 more things", "9"),  # the final-answer line beats a later number
        ("Final answer: 3\nWait.\nFinal Answer: 4", "4"),  # last of several
        ("**Final answer:** 12", "12"),
        ("so the final answer is 7.", "7"),
        ("We get \\boxed{\\frac{1}{2}} and the answer is 3", "\\frac{1}{2}"),  # boxed beats "answer is"
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("Final answer: \\boxed{42}", "42"),
        ("Thus the answer is blue.", "blue"),
        ("Answer: x = 5", "x = 5"),
        ("It costs 1,234 dollars, not 99", "99"),
        ("The total is 1,234", "1,234"),
        ("A half is 3/4 of nothing", "3/4"),
        ("drops by -2.5 degrees", "-2.5"),
        ("no numbers here\nlast line ", "last line"),
        ("", ""),
        ("   \n ", ""),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8", 8.0), ("-3", -3.0), ("0.50", 0.5), ("1,000.0", 1000.0), ("50%", 50.0), ("$12", 12.0),
        ("12 dollars", 12.0), ("5 km", 5.0), ("3/4", 0.75), ("\\frac{3}{4}", 0.75), ("1e-3", 0.001),
        ("€ 7.5", 7.5), ("x = 5", None), ("blue", None), ("1/0", None), ("12,34", None), ("", None),
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,000.0", "1000"), ("0.50", "0.5"), ("$12", "12"), ("50%", "50"), ("7 apples", "7"), ("-4.0", "-4"),
        ("\\text{Paris}", "paris"), ("  Blue  Whale. ", "blue whale"), ("**42**", "42"), ("$\\frac{1}{2}$", "1/2"),
        ("\\dfrac{1}{2}", "1/2"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_token_f1_by_hand():
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)  # P = 1, R = 2/3
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("a dog", "the cat") == 0.0
    assert token_f1("Paris, France!", "paris france") == 1.0


def test_score_realistic_generations():
    right = "One apple costs 36 ÷ 9 = 4 dollars. So 2 apples cost 2 × 4 = 8 dollars.\n\nFinal answer: 8"
    result = score(right, "8")
    assert result == {"extracted": "8", "exact_match": 1.0, "numeric_match": 1.0, "token_f1": 1.0, "correct": True}
    wrong = score(right.replace("Final answer: 8", "Final answer: 9"), "8")
    assert wrong["correct"] is False and wrong["exact_match"] == 0.0 and wrong["numeric_match"] == 0.0
    assert score("Final answer: 0.75", "3/4")["numeric_match"] == 1.0
    assert score("Final answer: 0.75", "3/4")["exact_match"] == 0.0
    assert score("Final answer: 12 dollars", "$12")["exact_match"] == 1.0


def test_numeric_tolerance_boundary():
    assert score("Final answer: 100.009", "100", numeric_tolerance=1e-4)["numeric_match"] == 1.0
    assert score("Final answer: 100.02", "100", numeric_tolerance=1e-4)["numeric_match"] == 0.0
    assert score("Final answer: 0.00005", "0", numeric_tolerance=1e-4)["numeric_match"] == 1.0


def test_empty_reference_raises():
    with pytest.raises(ValueError, match="score by loss"):
        score("Final answer: 3", "  ")


def test_aggregate():
    scores = [score("Final answer: 8", "8"), score("Final answer: 9", "8"), score("the answer is 0.5", "1/2")]
    result = aggregate(scores)
    assert result["count"] == 3
    assert result["exact_match"] == pytest.approx(1 / 3)
    assert result["numeric_match"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert aggregate([]) == {"exact_match": 0.0, "numeric_match": 0.0, "token_f1": 0.0, "accuracy": 0.0, "count": 0}
