"""Tests for scripts/make_sample_data.py and its committed output."""

from __future__ import annotations

import json
import re
import sys
from fractions import Fraction
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = REPO_ROOT / "scripts"
SAMPLE_PATH = REPO_ROOT / "data" / "sample" / "natural_reasoning_sample.jsonl"

if str(SCRIPTS_DIR) not in sys.path:
    sys.path.insert(0, str(SCRIPTS_DIR))

import make_sample_data  # noqa: E402


def _num(text: str) -> Fraction:
    return Fraction(text)


def _fmt(value: Fraction) -> str:
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.6f}".rstrip("0").rstrip(".")


def _sequence_next(m: re.Match) -> Fraction:
    terms = [int(t) for t in m.group("terms").split(", ")]
    diffs = {b - a for a, b in zip(terms, terms[1:])}
    assert len(diffs) == 1, f"not an arithmetic sequence: {terms}"
    return Fraction(terms[-1] + diffs.pop())


def _linear(m: re.Match) -> Fraction:
    a, b, c = int(m.group("a")), int(m.group("b")), int(m.group("c"))
    if m.group("op") == "-":
        b = -b
    return Fraction(c - b, a)


N = r"(-?\d+)"
# kind -> (list of question patterns, independent solver from the match)
SOLVERS = {
    "addition": (
        [rf"What is (?P<a>\d+) \+ (?P<b>\d+)\?",
         rf"Compute the sum of (?P<a>\d+) and (?P<b>\d+)\.",
         rf"A shelf holds (?P<a>\d+) books and another shelf holds (?P<b>\d+) books\. How many books are there in total\?"],
        lambda m: _num(m["a"]) + _num(m["b"]),
    ),
    "subtraction": (
        [rf"What is (?P<a>\d+) - (?P<b>\d+)\?",
         rf"Subtract (?P<b>\d+) from (?P<a>\d+)\.",
         rf"\w+ had (?P<a>\d+) stickers and gave away (?P<b>\d+) of them\. How many stickers are left\?"],
        lambda m: _num(m["a"]) - _num(m["b"]),
    ),
    "multiplication": (
        [rf"What is (?P<a>\d+) × (?P<b>\d+)\?",
         rf"Multiply (?P<a>\d+) by (?P<b>\d+)\.",
         rf"A crate holds (?P<a>\d+) rows of (?P<b>\d+) eggs\. How many eggs are in the crate\?"],
        lambda m: _num(m["a"]) * _num(m["b"]),
    ),
    "division": (
        [rf"What is (?P<a>\d+) ÷ (?P<b>\d+)\?",
         rf"Divide (?P<a>\d+) by (?P<b>\d+)\.",
         rf"(?P<a>\d+) candies are shared equally among (?P<b>\d+) children\. How many candies does each child get\?"],
        lambda m: _num(m["a"]) / _num(m["b"]),
    ),
    "percentage": (
        [rf"What is (?P<p>\d+)% of (?P<x>\d+)\?",
         rf"Find (?P<p>\d+) percent of (?P<x>\d+)\.",
         rf"A jacket costs \$(?P<x>\d+) and is discounted by (?P<p>\d+)%\. How many dollars does the discount save\?"],
        lambda m: _num(m["p"]) * _num(m["x"]) / 100,
    ),
    "unit_price": (
        [rf"(?P<n1>\d+) \w+ cost \$(?P<t>\d+)\. How much do (?P<n2>\d+) \w+ cost\?",
         rf"If (?P<n1>\d+) \w+ cost \$(?P<t>\d+) in total, what is the cost of (?P<n2>\d+) \w+\?",
         rf"A store sells (?P<n1>\d+) \w+ for \$(?P<t>\d+)\. At the same price per item, how much would (?P<n2>\d+) \w+ cost\?"],
        lambda m: _num(m["t"]) / _num(m["n1"]) * _num(m["n2"]),
    ),
    "speed_distance": (
        [rf"An? \w+ travels at (?P<v>\d+) km/h for (?P<t>\d+) hours\. How far does it travel in km\?"],
        lambda m: _num(m["v"]) * _num(m["t"]),
    ),
    "speed_speed": (
        [rf"An? \w+ covers (?P<d>\d+) km in (?P<t>\d+) hours\. What is its average speed in km/h\?"],
        lambda m: _num(m["d"]) / _num(m["t"]),
    ),
    "speed_time": (
        [rf"How many hours does it take an? \w+ to travel (?P<d>\d+) km at (?P<v>\d+) km/h\?"],
        lambda m: _num(m["d"]) / _num(m["v"]),
    ),
    "ages_future": (
        [rf"(?P<A>\w+) is (?P<k>\d+) years older than (?P<B>\w+)\. In (?P<y>\d+) years, (?P=A) will be (?P<x>\d+) years old\. How old is (?P=B) now\?"],
        lambda m: _num(m["x"]) - _num(m["y"]) - _num(m["k"]),
    ),
    "ages_times": (
        [rf"(?P<A>\w+) is (?P<m>\d+) times as old as (?P<B>\w+)\. (?P=B) is (?P<b>\d+) years old\. How old is (?P=A)\?"],
        lambda m: _num(m["m"]) * _num(m["b"]),
    ),
    "ages_sum": (
        [rf"The ages of (?P<A>\w+) and (?P<B>\w+) add up to (?P<s>\d+)\. (?P=A) is (?P<d>\d+) years older than (?P=B)\. How old is (?P=B)\?"],
        lambda m: (_num(m["s"]) - _num(m["d"])) / 2,
    ),
    "linear_equation": (
        [rf"Solve for x: (?P<a>\d+)x (?P<op>[+-]) (?P<b>\d+) = (?P<c>-?\d+)",
         rf"Find x if (?P<a>\d+)x (?P<op>[+-]) (?P<b>\d+) = (?P<c>-?\d+)\.",
         rf"What value of x satisfies (?P<a>\d+)x (?P<op>[+-]) (?P<b>\d+) = (?P<c>-?\d+)\?"],
        _linear,
    ),
    "sequence": (
        [rf"What is the next term in the sequence (?P<terms>-?\d+(?:, -?\d+)+), \.\.\.\?",
         rf"Find the next number in the arithmetic sequence: (?P<terms>-?\d+(?:, -?\d+)+)\.",
         rf"The sequence (?P<terms>-?\d+(?:, -?\d+)+) changes by a constant amount\. What number comes next\?"],
        _sequence_next,
    ),
    "rectangle_area": (
        [rf"A rectangle is (?P<l>\d+) (?P<u>c?m) long and (?P<w>\d+) (?P=u) wide\. What is its area in square (?P=u)\?",
         rf"What is the area of a rectangle with length (?P<l>\d+) (?P<u>c?m) and width (?P<w>\d+) (?P=u)\?",
         rf"A rectangular garden measures (?P<l>\d+) (?P<u>c?m) by (?P<w>\d+) (?P=u)\. What is its area in square (?P=u)\?"],
        lambda m: _num(m["l"]) * _num(m["w"]),
    ),
    "rectangle_perimeter": (
        [rf"A rectangle is (?P<l>\d+) (?P<u>c?m) long and (?P<w>\d+) (?P=u) wide\. What is its perimeter in (?P=u)\?",
         rf"What is the perimeter of a rectangle with length (?P<l>\d+) (?P<u>c?m) and width (?P<w>\d+) (?P=u)\?",
         rf"A rectangular field measures (?P<l>\d+) (?P<u>c?m) by (?P<w>\d+) (?P=u)\. How much fencing in (?P=u) is needed to go around it\?"],
        lambda m: 2 * (_num(m["l"]) + _num(m["w"])),
    ),
    # The learnable families (make_sample_data.LEARNABLE_TASKS).
    "larger_number": (
        [rf"\w+ asks: which is larger, (?P<a>\d) or (?P<b>\d)\?"],
        lambda m: max(_num(m["a"]), _num(m["b"])),
    ),
    "last_word": (
        [rf"What is the last word of: (?P<p>[a-z ]+)\?"],
        lambda m: m["p"].split()[-1],
    ),
    "parity": (
        [rf"\w+ asks: is (?P<n>\d) even or odd\?"],
        lambda m: "odd" if int(m["n"]) % 2 else "even",
    ),
    "digit_sum": (
        [rf"\w+ asks: what is (?P<a>\d) plus (?P<b>\d)\?"],
        lambda m: _num(m["a"]) + _num(m["b"]),
    ),
}
FAMILY = {kind: kind.split("_")[0] if kind.startswith(("speed", "ages")) else kind for kind in SOLVERS}
COMPILED = {kind: ([re.compile(p) for p in pats], solve) for kind, (pats, solve) in SOLVERS.items()}


def _classify(question: str) -> list[tuple[str, re.Match]]:
    hits = []
    for kind, (patterns, _) in COMPILED.items():
        for pattern in patterns:
            m = pattern.fullmatch(question)
            if m:
                hits.append((kind, m))
    return hits


def _mentions(text: str, value: str) -> bool:
    return re.search(rf"(?<![\w.\-]){re.escape(value)}(?!\.?\w)", text) is not None


def _answer_text(value: Fraction | str) -> str:
    return value if isinstance(value, str) else _fmt(value)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    assert SAMPLE_PATH.is_file(), f"missing {SAMPLE_PATH}; run scripts/make_sample_data.py"
    with SAMPLE_PATH.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_committed_file_is_deterministic_and_up_to_date(tmp_path):
    out = make_sample_data.write_jsonl(make_sample_data.generate_rows(2400, 0), tmp_path / "a.jsonl")
    again = make_sample_data.write_jsonl(make_sample_data.generate_rows(2400, 0), tmp_path / "b.jsonl")
    assert out.read_bytes() == again.read_bytes()
    assert out.read_bytes() == SAMPLE_PATH.read_bytes(), (
        "data/sample/natural_reasoning_sample.jsonl is stale; rerun scripts/make_sample_data.py"
    )


def test_seed_changes_output():
    a = make_sample_data.generate_rows(50, 0)
    b = make_sample_data.generate_rows(50, 1)
    assert [r["question"] for r in a] != [r["question"] for r in b]


def test_cli_writes_requested_rows(tmp_path):
    out = tmp_path / "nested" / "cli.jsonl"
    assert make_sample_data.main(["--rows", "37", "--seed", "5", "--output", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 37
    assert [json.loads(x) for x in lines] == make_sample_data.generate_rows(37, 5)


def test_schema_and_shape(rows):
    assert len(rows) >= 2000
    for row in rows:
        assert list(row) == ["question", "reference_answer", "responses", "task"]
        assert row["task"] in make_sample_data.TEMPLATES
        assert isinstance(row["question"], str) and row["question"].strip()
        assert isinstance(row["reference_answer"], str)
        assert isinstance(row["responses"], list) and len(row["responses"]) == 1
        resp = row["responses"][0]
        assert resp == {"response_model": "llm-trainer-sample-generator", "response": resp["response"]}
        assert isinstance(resp["response"], str) and resp["response"].strip()
        assert len(row["question"]) < 200
        assert len(resp["response"]) < 300
        assert "final answer" not in resp["response"].lower()
    questions = [r["question"] for r in rows]
    assert len(set(questions)) == len(questions), "duplicate questions"
    empty_share = sum(1 for r in rows if r["reference_answer"] == "") / len(rows)
    assert 0.05 <= empty_share <= 0.15, empty_share


def test_reference_answers_are_correct(rows):
    counts: dict[str, int] = {}
    for row in rows:
        q = row["question"]
        hits = _classify(q)
        assert len(hits) == 1, f"question matches {len(hits)} templates: {q!r}"
        kind, m = hits[0]
        assert row["task"] == FAMILY[kind], (q, row["task"])
        counts[kind] = counts.get(kind, 0) + 1
        expected = COMPILED[kind][1](m)
        if row["reference_answer"]:
            if isinstance(expected, Fraction):
                assert _num(row["reference_answer"]) == expected, (q, row["reference_answer"], expected)
            assert row["reference_answer"] == _answer_text(expected), (q, row["reference_answer"])
        # Whether or not a reference is given, the response must reach the right value.
        assert _mentions(row["responses"][0]["response"], _answer_text(expected)), (q, row["responses"][0])
    families = set(map(FAMILY.get, counts))
    assert len(families) >= 12 and families >= set(make_sample_data.LEARNABLE_TASKS), families
    assert all(n >= 20 for n in counts.values()), counts
    hardest_share = max(n for kind, n in counts.items() if FAMILY[kind] == kind
                        and kind not in make_sample_data.LEARNABLE_TASKS)
    assert all(counts[kind] > 1.5 * hardest_share for kind in make_sample_data.LEARNABLE_TASKS), counts


def test_response_mentions_reference(rows):
    with_ref = [r for r in rows if r["reference_answer"]]
    assert with_ref
    for row in with_ref:
        assert _mentions(row["responses"][0]["response"], row["reference_answer"]), row
