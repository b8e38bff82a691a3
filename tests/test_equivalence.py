"""Hand-labelled answer pairs: what a careful grader counts as equal and what it does not.

Every pair is (reference, the answer a model states, expected verdict). Each is scored in both directions
where equality is symmetric, as a "Final answer:" line. Near misses sit next to the pairs they resemble.
"""

from __future__ import annotations

import pytest

from llm_trainer.evaluation.scoring import ScoringSettings, score, score_many

EQUAL = [
    # surds, powers, fractions, decimals, percent, scientific notation
    (r"\sqrt{8}", r"2\sqrt{2}"),
    (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}"),
    ("2^{10}", "1024"),
    (r"\frac{1}{4}", r"25\%"),
    (r"\frac{1}{4}", "0.25"),
    ("3/4", r"\dfrac{3}{4}"),
    ("0.5", r"\frac12"),
    ("1.5e3", "1500"),
    (r"1.5 \times 10^{3}", "1500"),
    ("1,000", "1000"),
    ("-3", "−3"),
    # pi and symbols
    (r"2\pi", "2π"),
    (r"\frac{\pi}{2}", r"\pi/2"),
    # equations and variables
    ("x = 3", "3"),
    ("y = 2x + 1", "y - 2x = 1"),
    ("x = 4", "x=4"),
    # polynomial and trigonometric identities
    ("x^2+2x+1", "(x+1)^2"),
    ("(x-3)(x+3)", "x^2 - 9"),
    (r"\sin^2 x + \cos^2 x", "1"),
    (r"\sin(2x)", r"2\sin x\cos x"),
    # intervals (same closure), sets (unordered), tuples
    ("[-1, 1]", "[-1,1]"),
    (r"(-\infty, 2]", r"(-\infty,2]"),
    (r"\{1,2,3\}", r"\{3,2,1\}"),
    ("(3, -1)", "(3,-1)"),
    # units and text wrappers
    ("5 m", r"5 \text{ m}"),
    ("12", r"12 \text{ apples}"),
    (r"\text{Paris}", "Paris"),
    ("$12", "12 dollars"),
    # multiple choice and words
    ("B", "(B)"),
    ("(C)", "C"),
    ("No", "no"),
    ("True", "true"),
    ("octagon", "an octagon"),
    # inexact references accept a more precise value
    ("3.14", "3.14159"),
    # more of the same kinds, as natural_reasoning writes them
    (r"\frac{6}{8}", r"\frac{3}{4}"),
    ("50%", "0.5"),
    ("1/2", "0.50"),
    (r"-\frac{1}{2}", "-0.5"),
    ("10^{-3}", "0.001"),
    (r"4\sqrt{3}", r"\sqrt{48}"),
    (r"xe^x - e^x + C", r"e^{x}(x-1) + C"),
    (r"\{2, 3, 5\}", r"\{5, 3, 2\}"),
]

DIFFERENT = [
    (r"\frac{\pi}{3}", r"\frac{\pi}{6}"),
    ("n(n-1)/2", r"\frac{n(n+1)}{2}"),
    ("(0,1)", "[0,1]"),
    ("[0, 1)", "[0, 1]"),
    ("(1, 2)", "(2, 1)"),
    ("1/3", "0.3333"),  # rounded value for an exact reference
    ("1/3", "0.33"),
    (r"\sqrt{8}", "2.83"),
    ("2^{10}", "1000"),
    ("x^2+2x+1", "(x-1)^2"),
    (r"\{1,2,3\}", r"\{1,2\}"),
    ("x = 3", "x = -3"),
    (r"\frac{1}{4}", r"4\%"),
    ("B", "C"),
    ("No", "Yes"),
    ("True", "False"),
    ("Paris", "Lyon"),
    ("12", "21"),
    ("0.5", "5"),
    ("3.14", "3.15"),
    ("-2", "2"),
    (r"2\pi", r"\pi"),
    ("9.8", "9.81"),  # one decimal written: no rounding allowance
    ("On", "No"),  # words are not products of symbols
    (r"\sqrt{48}", r"4\sqrt{2}"),
    ("10^{-3}", "0.01"),
    ("x^2 - 9", "(x-3)^2"),
    ("[2, 5]", "(2, 5)"),
    ("Mercury", "Venus"),
]


@pytest.mark.parametrize(("reference", "answer"), EQUAL)
def test_equal_answers_are_correct_both_ways(reference, answer):
    forward = score(f"Some work first.\n\nFinal answer: {answer}", reference)
    assert forward["correct"] is True, forward
    backward = score(f"Some work first.\n\nFinal answer: {reference}", answer)
    if reference not in ("3.14", "octagon", "12"):  # a precise reference is not matched by a rounded answer
        assert backward["correct"] is True, backward


@pytest.mark.parametrize(("reference", "answer"), DIFFERENT)
def test_different_answers_are_wrong_both_ways(reference, answer):
    assert score(f"Final answer: {answer}", reference)["correct"] is False
    assert score(f"Final answer: {reference}", answer)["correct"] is False


def test_enough_hand_labelled_pairs():
    assert len(EQUAL) + len(DIFFERENT) >= 60


def test_numeric_tolerance_is_a_setting():
    assert score("Final answer: 0.3333", "1/3")["correct"] is False
    assert score("Final answer: 0.3333", "1/3", numeric_tolerance=1e-3)["correct"] is True
    assert score("Final answer: 100.009", "100", numeric_tolerance=1e-4)["correct"] is True
    assert score("Final answer: 100.02", "100", numeric_tolerance=1e-4)["correct"] is False


@pytest.mark.parametrize(
    ("reference", "judge"),
    [("8", "exact_text"), ("3/4", "numeric"), ("B", "choice_letter"), ("No", "yes_no"),
     (r"2\sqrt{2}", "math_verify"), ("Paris", "phrase")],
)
def test_each_example_names_the_judge_that_decided(reference, judge):
    answers = {"8": "8", "3/4": "0.75", "B": "(B)", "No": "no, it cannot", r"2\sqrt{2}": r"\sqrt{8}",
               "Paris": "Paris, France"}
    result = score(f"Final answer: {answers[reference]}", reference)
    assert result["correct"] is True and result["judge"] == judge


def test_packed_reference_alternatives_match_any():
    assert score("Therefore the count is 504.", "2*C(10,5), or equivalently 504")["correct"] is True
    assert score("Final answer: k-2", "k-2 (i.e., all of them)")["correct"] is True
    assert score("Final answer: 66", "C(12,2), i.e. 66")["correct"] is True
    assert score("Final answer: 505", "2*C(10,5), or equivalently 504")["correct"] is False


def test_score_many_matches_score_one_by_one():
    pairs = [("Final answer: 2\\sqrt{2}", "\\sqrt{8}"), ("Final answer: 7", "8"), ("So it is Paris.", "Paris")]
    together = score_many([p for p, _ in pairs], [r for _, r in pairs], ScoringSettings())
    assert [r["correct"] for r in together] == [score(p, r)["correct"] for p, r in pairs] == [True, False, True]
