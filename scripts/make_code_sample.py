"""Regenerate data/code_sample/: Python problems in the MBPP shape (google-research-datasets/mbpp), made offline.

Each row has ``task_id``, ``text`` (the task), ``code`` (a reference solution), ``test_list`` (three asserts),
``test_setup_code`` (""), ``challenge_test_list`` ([]) and ``task`` (its family). Twelve families of short
functions, four of them with twice the share (add a constant, multiply by a constant, the first item, the last item)
and eight others (count a character, reverse a string, parity, the largest of three, a factorial, a palindrome
test, vowels, a clamp). What the quickstart's tiny model can learn differs by family: where the body is fixed and
only the function's name (from a few) or one character comes from the prompt, it learns the family; where the body
must copy numbers from the prompt (add, multiply, clamp), it gets few or none right (README, "Code domain").
Every reference solution is checked against its tests here. Deterministic: the same seed writes the same file.

    .venv/bin/python scripts/make_code_sample.py [--out data/code_sample/code_sample.jsonl] [--seed 11] [--rows 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = {"first_item": ["first", "get_first", "head", "first_item", "front", "first_element"],
         "last_item": ["last", "get_last", "tail_item", "last_item", "back", "last_element"]}
WORDS = ["level", "apple", "radar", "banana", "noon", "kayak", "python", "civic", "stats", "orange", "refer",
         "grape", "madam", "lemon", "rotor", "melon", "tenet", "peach", "solos", "mango"]


def _word(rng: random.Random) -> str:
    return rng.choice(WORDS) if rng.random() < 0.5 else "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 7)))


def _list(rng: random.Random) -> list[int]:
    return [rng.randint(-20, 99) for _ in range(rng.randint(2, 6))]


def make(family: str, rng: random.Random) -> tuple[str, str, list[str]]:
    """(text, code, tests) of one problem of ``family``."""
    if family in ("add_constant", "multiply_constant"):
        n = rng.randint(2, 99)
        name, op, word = (f"add_{n}", "+", "plus") if family == "add_constant" else (f"times_{n}", "*", "times")
        xs = rng.sample(range(-50, 100), 3)
        return (f"Write a function {name}(x) that returns x {word} {n}.", f"def {name}(x):\n    return x {op} {n}",
                [f"assert {name}({x}) == {eval(f'{x} {op} {n}')}" for x in xs])
    if family in ("first_item", "last_item"):
        name = rng.choice(NAMES[family])
        which, index = ("first", 0) if family == "first_item" else ("last", -1)
        lists = [_list(rng) for _ in range(3)]
        return (f"Write a function {name}(items) that returns the {which} item of a list.",
                f"def {name}(items):\n    return items[{index}]", [f"assert {name}({xs}) == {xs[index]}" for xs in lists])
    if family == "count_char":
        c = rng.choice("aeiourstln")
        words = [_word(rng) + c * rng.randint(0, 2) for _ in range(3)]
        return (f"Write a function count_{c}(s) that counts how many times '{c}' occurs in the string s.",
                f"def count_{c}(s):\n    return s.count('{c}')", [f"assert count_{c}('{w}') == {w.count(c)}" for w in words])
    if family == "reverse_string":
        name = rng.choice(["reverse", "reverse_string", "backwards", "flip"])
        words = [_word(rng) for _ in range(3)]
        return (f"Write a function {name}(s) that returns the string s reversed.",
                f"def {name}(s):\n    return s[::-1]", [f"assert {name}('{w}') == '{w[::-1]}'" for w in words])
    if family == "parity":
        name = rng.choice(["is_even", "even", "check_even"])
        xs = rng.sample(range(-30, 200), 3)
        return (f"Write a function {name}(n) that returns True if n is even and False otherwise.",
                f"def {name}(n):\n    return n % 2 == 0", [f"assert {name}({x}) == {x % 2 == 0}" for x in xs])
    if family == "largest_of_three":
        name = rng.choice(["largest", "max_of_three", "biggest"])
        triples = [rng.sample(range(-40, 100), 3) for _ in range(3)]
        return (f"Write a function {name}(a, b, c) that returns the largest of three numbers.",
                f"def {name}(a, b, c):\n    return max(a, b, c)",
                [f"assert {name}({a}, {b}, {c}) == {max(a, b, c)}" for a, b, c in triples])
    if family == "factorial":
        name = rng.choice(["factorial", "fact", "product_up_to"])
        xs = rng.sample(range(0, 12), 3)
        fact = [1]
        for i in range(1, 12):
            fact.append(fact[-1] * i)
        return (f"Write a function {name}(n) that returns the factorial of n.",
                f"def {name}(n):\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result",
                [f"assert {name}({x}) == {fact[x]}" for x in xs])
    if family == "palindrome":
        name = rng.choice(["is_palindrome", "palindrome", "reads_same_backwards"])
        words = [_word(rng) for _ in range(3)]
        return (f"Write a function {name}(s) that checks whether the string s is a palindrome.",
                f"def {name}(s):\n    return s == s[::-1]", [f"assert {name}('{w}') == {w == w[::-1]}" for w in words])
    if family == "count_vowels":
        name = rng.choice(["count_vowels", "vowels", "number_of_vowels"])
        words = [_word(rng) for _ in range(3)]
        return (f"Write a function {name}(s) that counts the vowels (a, e, i, o, u) in the string s.",
                f"def {name}(s):\n    return sum(1 for ch in s if ch in 'aeiou')",
                [f"assert {name}('{w}') == {sum(ch in 'aeiou' for ch in w)}" for w in words])
    if family == "clamp":
        low, high = sorted(rng.sample(range(-20, 60), 2))
        name = f"clamp_{low}_{high}".replace("-", "m")
        xs = [rng.randint(low - 30, high + 30) for _ in range(3)]
        return (f"Write a function {name}(x) that limits x to the range from {low} to {high}.",
                f"def {name}(x):\n    return min(max(x, {low}), {high})",
                [f"assert {name}({x}) == {min(max(x, low), high)}" for x in xs])
    raise ValueError(family)


DOUBLE_SHARE = ("add_constant", "multiply_constant", "first_item", "last_item")
OTHERS = ("count_char", "reverse_string", "parity", "largest_of_three", "factorial", "palindrome", "count_vowels",
          "clamp")


def main() -> None:
    """Write the sample: four families twice as often as the others, every reference checked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "code_sample" / "code_sample.jsonl")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    families = [*DOUBLE_SHARE, *DOUBLE_SHARE, *OTHERS]
    records, seen = [], set()
    while len(records) < args.rows:
        family = families[len(records) % len(families)]
        text, code, tests = make(family, rng)
        if (text, tuple(tests)) in seen:
            continue
        seen.add((text, tuple(tests)))
        namespace: dict = {}
        exec(code + "\n" + "\n".join(tests), namespace)  # noqa: S102 - our own reference solutions
        records.append({"task_id": len(records) + 1, "text": text, "code": code, "test_list": tests,
                        "test_setup_code": "", "challenge_test_list": [], "task": family})
    rng.shuffle(records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    print(f"wrote {len(records)} rows in {len(set(families))} task families to {args.out}")


if __name__ == "__main__":
    main()
