"""The public scoring API: extraction from free-form solutions, answer types, per-type metrics, bounded time."""

from __future__ import annotations

import threading

import pytest

from llm_trainer.evaluation.answer_types import answer_type, metric_names
from llm_trainer.evaluation.extraction import extract, extract_answer
from llm_trainer.evaluation.math_verifier import MathVerifier
from llm_trainer.evaluation.scoring import ScoringSettings, aggregate, score, score_many
from llm_trainer.evaluation.text_metrics import normalize_answer, parse_number, rouge_l, token_f1


@pytest.mark.parametrize(
    ("text", "expected", "method"),
    [
        ("2 x 4 = 8.\n\nFinal answer: 8", "8", "final_line"),
        ("Final answer: 9\nthen 8 more things", "9", "final_line"),  # the final-answer line beats a later number
        ("Final answer: 3\nWait.\nFinal Answer: 4", "4", "final_line"),  # last of several
        ("**Final answer:** 12", "12", "final_line"),
        ("**Final Answer:** $\\boxed{7}$", "7", "final_line"),
        # an answer heading: the line under it (PRM800K's "# Answer"; "**Final Answer**" alone on its line)
        ("Then the total is 7.\n\nSo the sum is 12.\n\n# Answer\n\n12", "12", "final_line"),
        ("Work: 3 + 4 = 7.\n\n**Final Answer**\n\n$\\boxed{5}$", "5", "final_line"),
        ("Final answer: 3\n\n### Answer\nx = 4", "x = 4", "final_line"),  # the last of both kinds
        ("So the sum is 12.\n\n# Answer\n", "12", "conclusion"),  # nothing under the heading
        ("We get \\boxed{\\frac{1}{2}} and the answer is 3", "\\frac{1}{2}", "boxed"),  # boxed beats "answer is"
        ("first \\boxed{1}, then \\boxed{2}", "2", "boxed"),
        ("Thus the answer is blue.", "blue", "answer_is"),
        ("Answer: x = 5", "x = 5", "answer_is"),
        # prose conclusions, the way instruct models end
        ("Each place has 2 choices.\n\nTherefore, there are 239 such strings of length 6.", "239", "conclusion"),
        ("So the total cost is $45. Let me know if you need anything else!", "$45", "conclusion"),
        ("Hence the number of diagonals is given by the expression n(n-3)/2.", "n(n-3)/2", "conclusion"),
        ("So the mean is 18. (For comparison, the median is 15.5.)", "18", "conclusion"),
        ("Work.\n\nThus 7!/(4! 3!) = 5040/144 = 35", "35", "conclusion"),
        ("We add them.\n\nIt still takes just 5 minutes for 100 machines.\n\nSo it takes 5 minutes for 100 machines.",
         "5", "conclusion"),
        ("Some facts.\n\nThe capital of France is Paris.", "Paris", "conclusion"),
        ("Water boils at **212 °F** at sea level.", "212 °F", "conclusion"),
        ("The sum is\n\\[ S = n(n+1)2^{n-2} \\]\nwhich we wanted.", "S = n(n+1)2^{n-2}", "conclusion"),
        ("Consider\n\\[ 2^{10} \\]\n\nDone!", "2^{10}", "display_math"),
        ("It costs 1,234 dollars, not 99", "99", "last_number"),
        ("no numbers here\nlast line ", "last line", "last_line"),
        ("", "", "none"),
        ("   \n ", "", "none"),
    ],
)
def test_extraction(text, expected, method):
    found = extract(text)
    assert (found.answer, found.method) == (expected, method)
    assert extract_answer(text) == expected


def test_readings_of_a_stated_answer():
    found = extract("Therefore, the derivative is $f'(x) = 2x\\cos(x^2)$, valid everywhere.")
    assert "2x\\cos(x^2)" in found.candidates  # the right side of the stated equation
    assert "2.02 s" in extract("So $t \\approx 2.02$ s.\n\n# Answer\n\nt \\approx 2.02 s").candidates
    candidates = extract("Thus the probability is $\\frac{3}{8}$, or 0.375.").candidates
    assert candidates[0] == "$\\frac{3}{8}$, or 0.375" and {"\\frac{3}{8}", "0.375"} <= set(candidates)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8", 8.0), ("-3", -3.0), ("0.50", 0.5), ("1,000.0", 1000.0), ("50%", 50.0), ("$12", 12.0),
     ("12 dollars", 12.0), ("5 km", 5.0), ("9.8 m/s^2", 9.8), ("3/4", 0.75), ("\\frac{3}{4}", 0.75),
     ("1e-3", 0.001), ("€ 7.5", 7.5), ("x = 5", None), ("blue", None), ("1/0", None), ("12,34", None), ("", None)],
)
def test_parse_number(text, expected):
    assert parse_number(text) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,000.0", "1000"), ("0.50", "0.5"), ("$12", "12"), ("50%", "50"), ("7 apples", "7"), ("-4.0", "-4"),
     ("\\text{Paris}", "paris"), ("  Blue  Whale. ", "blue whale"), ("**42**", "42"), ("$\\frac{1}{2}$", "1/2"),
     ("\\dfrac{1}{2}", "1/2"), ("The Octagon", "octagon")],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_token_f1_and_rouge_l_by_hand():
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)  # P = 1, R = 2/3
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("a dog", "the cat") == 0.0
    # LCS of "a b c d" and "a c d e" is "a c d": P = R = 3/4.
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_l("x y", "a b") == 0.0


@pytest.mark.parametrize(
    ("reference", "expected"),
    [("", "none"), ("   ", "none"), ("42", "single_word"), ("\\frac{1}{2}", "single_word"),
     ("$x = \\frac{-b \\pm \\sqrt{b^2-4ac}}{2a}$", "single_word"), ("No integer solutions", "short"),
     ("2*C(10,5), or equivalently 504", "short"), (" ".join(["word"] * 20), "short"),
     (" ".join(["word"] * 21), "long")],
)
def test_answer_types_as_the_card_counts_them(reference, expected):
    assert answer_type(reference) == expected


def test_realistic_generation_row():
    right = "One apple costs 36 ÷ 9 = 4 dollars. So 2 apples cost 2 × 4 = 8 dollars.\n\nFinal answer: 8"
    result = score(right, "8")
    assert (result["extracted"], result["extraction"], result["answer_type"], result["judge"]) == (
        "8", "final_line", "single_word", "exact_text")
    assert result["correct"] is True and result["exact_match"] == 1.0 and result["token_f1"] == 1.0
    wrong = score(right.replace("Final answer: 8", "Final answer: 9"), "8")
    assert wrong["correct"] is False and wrong["exact_match"] == 0.0 and wrong["numeric_match"] == 0.0


def test_long_references_get_overlap_scores_not_a_verdict():
    reference = ("The function is continuous on the closed interval and differentiable on the open interval, "
                 "so by the mean value theorem there is a point where the derivative equals the average slope.")
    result = score("Final answer: by the mean value theorem there is a point where the derivative equals the "
                   "average slope", reference)
    assert result["answer_type"] == "long" and result["correct"] is None and result["judge"] == "text_overlap"
    assert 0.3 < result["token_f1"] < 1.0 and 0.3 < result["rouge_l"] < 1.0


def test_empty_reference_raises():
    with pytest.raises(ValueError, match="score by loss"):
        score("Final answer: 3", "  ")


def test_per_type_metrics_on_a_fixed_table():
    long_reference = " ".join(f"w{i}" for i in range(30))
    predictions = ["Final answer: 8", "Final answer: 9", "Final answer: No integer solutions", "Final answer: 5",
                   "I am not sure.", f"Final answer: {' '.join(f'w{i}' for i in range(15))}", "Final answer: 3"]
    references = ["8", "8", "No integer solutions", "There are exactly five of them", "12", long_reference, ""]
    rows = score_many(predictions, references)
    metrics = aggregate(rows)
    assert [r["answer_type"] for r in rows] == ["single_word", "single_word", "short", "short", "single_word",
                                                "long", "none"]
    assert [r["correct"] for r in rows] == [True, False, True, False, False, None, None]
    assert metrics["count_single_word"] == 3 and metrics["count_short"] == 2
    assert metrics["count_long"] == 1 and metrics["count_none"] == 1
    assert metrics["accuracy"] == pytest.approx(2 / 5)
    assert metrics["accuracy_single_word"] == pytest.approx(1 / 3)
    assert metrics["accuracy_short"] == pytest.approx(1 / 2)
    # Half the reference's words, in order: P = 1, R = 1/2.
    assert metrics["token_f1_long"] == pytest.approx(2 / 3) and metrics["rouge_l_long"] == pytest.approx(2 / 3)
    assert metrics["extraction_failed"] == pytest.approx(1 / 6)  # "I am not sure." of the six with a reference
    assert set(metrics) <= set(metric_names())


PATHOLOGICAL = ["10^{10^{10^{10}}}", "9^{9^{9}}", "(" * 300 + "1" + ")" * 300, "1+" * 50_000 + "1"]


def test_pathological_answers_are_wrong_and_counted_never_a_hang():
    verifier = MathVerifier(timeout=1)
    try:
        rows = score_many([f"Final answer: {p}" for p in PATHOLOGICAL] + ["Final answer: 2\\sqrt{2}"],
                          ["5"] * len(PATHOLOGICAL) + ["\\sqrt{8}"], ScoringSettings(verify_timeout=1), verifier)
    finally:
        verifier.close()
    assert [r["correct"] for r in rows] == [False] * len(PATHOLOGICAL) + [True]
    statuses = [r["verify_status"] for r in rows[:len(PATHOLOGICAL)]]
    # refused before math-verify: a tower of powers, deep nesting; the 100,000-character sum is too long
    assert statuses == ["too_complex", "too_complex", "too_complex", "too_long"]
    assert aggregate(rows)["verify_timeout"] == 4 == verifier.timeouts


def test_a_worker_stuck_past_its_deadline_is_killed_and_replaced():
    """Below math-verify's own signal timeouts: a hard deadline kills the worker process."""
    verifier = MathVerifier(workers=1, timeout=1)
    verifier.deadline = 0.0  # every comparison overruns: the worker is killed each time
    try:
        statuses = verifier.compare_many([(("x^2",), ("x*x",)), (("2",), ("3",))])
        first = verifier._pool[0][0].pid
        verifier.deadline = 30
        assert verifier.compare_many([(("\\sqrt{8}",), ("2\\sqrt{2}",))]) == ["equal"]
        assert verifier._pool[0][0].pid == first  # the replacement worker serves the next job
    finally:
        verifier.close()
    assert statuses == ["timeout", "timeout"] and verifier.timeouts == 2


def test_scoring_works_outside_the_main_thread():
    """math-verify's own timeouts need the main thread; the worker processes make it work anywhere."""
    results = []
    thread = threading.Thread(target=lambda: results.append(score("Final answer: 2\\sqrt{2}", "\\sqrt{8}")))
    thread.start()
    thread.join(timeout=120)
    assert results and results[0]["correct"] is True and results[0]["judge"] == "math_verify"
