#!/usr/bin/env python3
"""Generate a small, deterministic, offline reasoning data set.

The rows follow the schema of ``facebook/natural_reasoning``::

    {"question": str,
     "reference_answer": str,
     "responses": [{"response_model": str, "response": str}],
     "task": str}

plus ``task``, the template family that made the row (optional for the
pipeline: the evaluator reports accuracy per family when the column is there).

Every problem is a short arithmetic or word problem whose answer is computed
here in Python, so the answers are verifiable. Most families (multi-digit
arithmetic, ages, speeds, ...) are beyond the quickstart's tiny model; the
LEARNABLE_TASKS (the larger of two digits, the last word of a phrase, even or
odd, one-digit sums) are short, fixed-shape questions it can learn within the
quickstart's budget, and get twice the share of rows. About 10% of the rows
get an empty ``reference_answer`` (the real data set has rows without one);
their response still solves the problem.

Only the standard library is used and all randomness comes from one
``random.Random(seed)``, so the same ``--rows``/``--seed`` always give a
byte-identical file.

Usage::

    python scripts/make_sample_data.py [--rows N] [--seed S] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from fractions import Fraction
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "data" / "sample" / "natural_reasoning_sample.jsonl"
DEFAULT_ROWS = 2400
DEFAULT_SEED = 0
RESPONSE_MODEL = "llm-trainer-sample-generator"
EMPTY_REFERENCE_SHARE = 0.10

NAMES = [
    "Alice", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo",
    "Ines", "Jonas", "Kira", "Leo", "Maria", "Nadia", "Omar", "Priya",
    "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Yusuf", "Zoe",
]
# (singular, plural)
ITEMS = [
    ("pen", "pens"), ("notebook", "notebooks"), ("apple", "apples"),
    ("ticket", "tickets"), ("mug", "mugs"), ("candle", "candles"),
    ("book", "books"), ("sandwich", "sandwiches"),
]
# Everyday nouns for the word and counting tasks.
WORDS = [
    "apple", "river", "stone", "lamp", "chair", "cloud", "bread", "horse", "garden", "window",
    "pencil", "bottle", "forest", "candle", "mirror", "basket", "rocket", "tiger", "lemon", "bridge",
    "castle", "island", "jacket", "kettle", "ladder", "magnet", "needle", "orange", "pillow", "violin",
]
# vehicle -> (min speed, max speed) in km/h, multiples of 5
VEHICLES = {"car": (40, 110), "train": (60, 150), "cyclist": (10, 30), "bus": (30, 80)}

Problem = tuple[str, str, str]  # (question, answer, response)


def fmt(value: Fraction | int) -> str:
    """Format an exact number as a plain decimal string ("68", "7.5", "-3")."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    if Fraction(text) != value:
        raise ValueError(f"{value} has no short exact decimal form")
    return text


# --------------------------------------------------------------------------
# Templates. Each takes the shared Random and returns (question, answer,
# response). The answer is always computed, never typed.
# --------------------------------------------------------------------------


def t_addition(rng: random.Random) -> Problem:
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    s = a + b
    form = rng.randrange(3)
    if form == 0:
        q = f"What is {a} + {b}?"
    elif form == 1:
        q = f"Compute the sum of {a} and {b}."
    else:
        q = (f"A shelf holds {a} books and another shelf holds {b} books. "
             f"How many books are there in total?")
    r = f"We need the total of {a} and {b}. {a} + {b} = {s}."
    return q, fmt(s), r


def t_subtraction(rng: random.Random) -> Problem:
    a = rng.randint(20, 999)
    b = rng.randint(5, a - 1)
    d = a - b
    form = rng.randrange(3)
    if form == 0:
        q = f"What is {a} - {b}?"
    elif form == 1:
        q = f"Subtract {b} from {a}."
    else:
        name = rng.choice(NAMES)
        q = (f"{name} had {a} stickers and gave away {b} of them. "
             f"How many stickers are left?")
    r = f"We take {b} away from {a}. {a} - {b} = {d}."
    return q, fmt(d), r


def t_multiplication(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 99), rng.randint(2, 30)
    p = a * b
    form = rng.randrange(3)
    if form == 0:
        q = f"What is {a} × {b}?"
    elif form == 1:
        q = f"Multiply {a} by {b}."
    else:
        q = f"A crate holds {a} rows of {b} eggs. How many eggs are in the crate?"
    r = f"We multiply {a} by {b}. {a} × {b} = {p}."
    return q, fmt(p), r


def t_division(rng: random.Random) -> Problem:
    b, quotient = rng.randint(2, 20), rng.randint(2, 50)
    a = b * quotient
    form = rng.randrange(3)
    if form == 0:
        q = f"What is {a} ÷ {b}?"
    elif form == 1:
        q = f"Divide {a} by {b}."
    else:
        q = (f"{a} candies are shared equally among {b} children. "
             f"How many candies does each child get?")
    r = f"We divide {a} into {b} equal parts. {a} ÷ {b} = {quotient}."
    return q, fmt(quotient), r


def t_percentage(rng: random.Random) -> Problem:
    p = rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 80])
    base = 10 * rng.randint(2, 200)
    result = Fraction(p * base, 100)
    form = rng.randrange(3)
    if form == 0:
        q = f"What is {p}% of {base}?"
    elif form == 1:
        q = f"Find {p} percent of {base}."
    else:
        q = (f"A jacket costs ${base} and is discounted by {p}%. "
             f"How many dollars does the discount save?")
    r = f"{p}% means {p}/100. So we compute {p}/100 × {base} = {fmt(result)}."
    return q, fmt(result), r


def t_unit_price(rng: random.Random) -> Problem:
    single, plural = rng.choice(ITEMS)
    n1 = rng.randint(2, 9)
    n2 = rng.choice([n for n in range(2, 13) if n != n1])
    unit = rng.randint(1, 25)
    total1, total2 = n1 * unit, n2 * unit
    form = rng.randrange(3)
    if form == 0:
        q = f"{n1} {plural} cost ${total1}. How much do {n2} {plural} cost?"
    elif form == 1:
        q = f"If {n1} {plural} cost ${total1} in total, what is the cost of {n2} {plural}?"
    else:
        q = (f"A store sells {n1} {plural} for ${total1}. At the same price per "
             f"item, how much would {n2} {plural} cost?")
    r = (f"One {single} costs {total1} ÷ {n1} = {unit} dollars. "
         f"So {n2} {plural} cost {n2} × {unit} = {total2} dollars.")
    return q, fmt(total2), r


def t_speed(rng: random.Random) -> Problem:
    vehicle = rng.choice(sorted(VEHICLES))
    lo, hi = VEHICLES[vehicle]
    v = 5 * rng.randint(lo // 5, hi // 5)
    t = rng.randint(2, 8)
    d = v * t
    form = rng.randrange(3)
    if form == 0:
        q = f"A {vehicle} travels at {v} km/h for {t} hours. How far does it travel in km?"
        r = f"Distance is speed times time. {v} × {t} = {d}, so it travels {d} km."
        ans = d
    elif form == 1:
        q = f"A {vehicle} covers {d} km in {t} hours. What is its average speed in km/h?"
        r = f"Speed is distance divided by time. {d} ÷ {t} = {v}, so the speed is {v} km/h."
        ans = v
    else:
        q = f"How many hours does it take a {vehicle} to travel {d} km at {v} km/h?"
        r = f"Time is distance divided by speed. {d} ÷ {v} = {t}, so it takes {t} hours."
        ans = t
    return q, fmt(ans), r


def t_ages(rng: random.Random) -> Problem:
    a_name, b_name = rng.sample(NAMES, 2)
    form = rng.randrange(3)
    if form == 0:
        b_now, k, y = rng.randint(2, 40), rng.randint(1, 30), rng.randint(2, 15)
        x = b_now + k + y
        q = (f"{a_name} is {k} years older than {b_name}. In {y} years, {a_name} "
             f"will be {x} years old. How old is {b_name} now?")
        r = (f"{a_name} is {x} - {y} = {x - y} years old now. "
             f"So {b_name} is {x - y} - {k} = {b_now} years old.")
        ans = b_now
    elif form == 1:
        m, b_now = rng.randint(2, 6), rng.randint(2, 15)
        a_now = m * b_now
        q = (f"{a_name} is {m} times as old as {b_name}. {b_name} is {b_now} "
             f"years old. How old is {a_name}?")
        r = f"{a_name}'s age is {m} × {b_now} = {a_now} years."
        ans = a_now
    else:
        b_now, d = rng.randint(2, 40), rng.randint(1, 30)
        s = 2 * b_now + d
        q = (f"The ages of {a_name} and {b_name} add up to {s}. {a_name} is {d} "
             f"years older than {b_name}. How old is {b_name}?")
        r = (f"Removing the difference leaves {s} - {d} = {s - d}, which is twice "
             f"{b_name}'s age. So {b_name} is {s - d} ÷ 2 = {b_now} years old.")
        ans = b_now
    return q, fmt(ans), r


def t_linear(rng: random.Random) -> Problem:
    a, x, b = rng.randint(2, 12), rng.randint(-10, 20), rng.randint(1, 50)
    plus = rng.random() < 0.5
    c = a * x + b if plus else a * x - b
    lhs = f"{a}x + {b}" if plus else f"{a}x - {b}"
    form = rng.randrange(3)
    if form == 0:
        q = f"Solve for x: {lhs} = {c}"
    elif form == 1:
        q = f"Find x if {lhs} = {c}."
    else:
        q = f"What value of x satisfies {lhs} = {c}?"
    if plus:
        step = f"Subtract {b} from both sides: {a}x = {c - b}."
    else:
        step = f"Add {b} to both sides: {a}x = {c + b}."
    r = f"{step} Divide both sides by {a}: x = {x}."
    return q, fmt(x), r


def t_sequence(rng: random.Random) -> Problem:
    start = rng.randint(-20, 50)
    step = rng.choice([d for d in range(-9, 16) if d not in (-1, 0, 1)])
    count = rng.randint(4, 5)
    terms = [start + i * step for i in range(count)]
    nxt = start + count * step
    shown = ", ".join(str(t) for t in terms)
    form = rng.randrange(3)
    if form == 0:
        q = f"What is the next term in the sequence {shown}, ...?"
    elif form == 1:
        q = f"Find the next number in the arithmetic sequence: {shown}."
    else:
        q = f"The sequence {shown} changes by a constant amount. What number comes next?"
    op = f"{terms[-1]} + {step}" if step > 0 else f"{terms[-1]} - {-step}"
    r = (f"Each term differs from the previous one by {step}. "
         f"So the next term is {op} = {nxt}.")
    return q, fmt(nxt), r


def _rectangle(rng: random.Random) -> tuple[int, int, str]:
    length = rng.randint(3, 60)
    width = rng.randint(2, length)
    unit = rng.choice(["cm", "m"])
    return length, width, unit


def t_area(rng: random.Random) -> Problem:
    length, width, unit = _rectangle(rng)
    area = length * width
    form = rng.randrange(3)
    if form == 0:
        q = (f"A rectangle is {length} {unit} long and {width} {unit} wide. "
             f"What is its area in square {unit}?")
    elif form == 1:
        q = f"What is the area of a rectangle with length {length} {unit} and width {width} {unit}?"
    else:
        q = (f"A rectangular garden measures {length} {unit} by {width} {unit}. "
             f"What is its area in square {unit}?")
    r = f"The area of a rectangle is length times width. {length} × {width} = {area}."
    return q, fmt(area), r


def t_perimeter(rng: random.Random) -> Problem:
    length, width, unit = _rectangle(rng)
    perimeter = 2 * (length + width)
    form = rng.randrange(3)
    if form == 0:
        q = (f"A rectangle is {length} {unit} long and {width} {unit} wide. "
             f"What is its perimeter in {unit}?")
    elif form == 1:
        q = (f"What is the perimeter of a rectangle with length {length} {unit} "
             f"and width {width} {unit}?")
    else:
        q = (f"A rectangular field measures {length} {unit} by {width} {unit}. "
             f"How much fencing in {unit} is needed to go around it?")
    r = (f"The perimeter is twice the sum of length and width. "
         f"2 × ({length} + {width}) = {perimeter}.")
    return q, fmt(perimeter), r


# --------------------------------------------------------------------------
# Learnable families: the tiny model (2 layers, 64 wide) cannot carry digits
# or search a long text within its budget, but it can learn to look back a
# fixed number of tokens. So each question has one shape whose operands sit
# at a fixed distance from its end (the leading name only makes questions
# distinct), operands are single digits or single-token words, and the
# response restates them right before the answer.
# --------------------------------------------------------------------------


def t_larger_number(rng: random.Random) -> Problem:
    a, b = rng.sample(range(10), 2)
    q = f"{rng.choice(NAMES)} asks: which is larger, {a} or {b}?"
    r = f"Of {a} and {b}, the larger is {max(a, b)}."
    return q, fmt(max(a, b)), r


def t_last_word(rng: random.Random) -> Problem:
    words = rng.sample(WORDS, rng.randint(3, 5))
    q = f"What is the last word of: {' '.join(words)}?"
    r = f"The last word is {words[-1]}."
    return q, words[-1], r


def t_parity(rng: random.Random) -> Problem:
    n = rng.randrange(10)
    parity = "odd" if n % 2 else "even"
    q = f"{rng.choice(NAMES)} asks: is {n} even or odd?"
    r = f"{n} is {parity}."
    return q, parity, r


def t_digit_sum(rng: random.Random) -> Problem:
    a, b = rng.randrange(10), rng.randrange(10)
    q = f"{rng.choice(NAMES)} asks: what is {a} plus {b}?"
    r = f"{a} plus {b} is {a + b}."
    return q, fmt(a + b), r


TEMPLATES: dict[str, Callable[[random.Random], Problem]] = {
    "addition": t_addition,
    "subtraction": t_subtraction,
    "multiplication": t_multiplication,
    "division": t_division,
    "percentage": t_percentage,
    "unit_price": t_unit_price,
    "speed": t_speed,
    "ages": t_ages,
    "linear_equation": t_linear,
    "sequence": t_sequence,
    "rectangle_area": t_area,
    "rectangle_perimeter": t_perimeter,
    "larger_number": t_larger_number,
    "last_word": t_last_word,
    "parity": t_parity,
    "digit_sum": t_digit_sum,
}
LEARNABLE_TASKS = ("larger_number", "last_word", "parity", "digit_sum")


def generate_rows(n: int, seed: int) -> list[dict]:
    """Return ``n`` rows with unique questions, deterministically from ``seed``."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(seed)
    kinds = list(TEMPLATES) + list(LEARNABLE_TASKS)
    seen: set[str] = set()
    rows: list[dict] = []
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"could not draw {n} unique questions")
        # Cycle through the templates: every kind gets an even share, the learnable ones twice that.
        kind = kinds[len(rows) % len(kinds)]
        question, answer, response = TEMPLATES[kind](rng)
        if question in seen:
            continue
        seen.add(question)
        rows.append({
            "question": question,
            "reference_answer": answer,
            "responses": [{"response_model": RESPONSE_MODEL, "response": response}],
            "task": kind,
        })
    rng.shuffle(rows)
    for i in rng.sample(range(n), round(n * EMPTY_REFERENCE_SHARE)):
        rows[i]["reference_answer"] = ""
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    """Write ``rows`` as UTF-8 JSON lines (one object per line, ``\\n`` endings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="number of rows (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="output JSONL path (default data/sample/natural_reasoning_sample.jsonl in the repo)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be >= 1")
    rows = generate_rows(args.rows, args.seed)
    path = write_jsonl(rows, args.output)
    empty = sum(1 for r in rows if not r["reference_answer"])
    print(f"wrote {len(rows)} rows ({empty} without reference answer) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
