"""Scoring 1,000 examples: the project's scorer (extraction, text and numeric judges, math-verify in bounded
worker processes) against plain math-verify in-process on the same pairs (no time bound, no extraction).

The examples are generated with a fixed seed and all differ (no cache hits): solutions of ~150 words that end
the way models end, with references shaped like natural_reasoning's short ones (integers, decimals, LaTeX
fractions, surds, polynomials, intervals, sets, yes/no, words) and some long references. Half the answers are
right in another form, half are wrong.

    .venv/bin/python -m bench.bench_scoring [--examples 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from llm_trainer.evaluation.math_verifier import MathVerifier
from llm_trainer.evaluation.scoring import ScoringSettings, score_many

FILLER = ("We start from the definitions and write down what is given. Each quantity is named, the units are "
          "checked, and the relation between them is set up before any arithmetic. Then we simplify step by "
          "step, keeping intermediate results such as {a}, {b} and {c} exact until the end. ")
ENDINGS = ["Final answer: {x}", "Therefore, the answer is {x}.", "So the result is ${x}$.", "Thus we get \\boxed{{{x}}}.",
           "**Final Answer:** {x}", "Hence the value is {x}. Let me know if you want more detail!"]
WORDS = ["Paris", "Mercury", "octagon", "carbon", "Newton", "isosceles", "hydrogen", "Euler"]


def pair(rng: random.Random, right: bool) -> tuple[str, str]:
    a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9)
    kind = rng.randrange(10)
    if kind == 0:
        reference, good, bad = str(a * b), str(a * b), str(a * b + c)
    elif kind == 1:
        reference, good, bad = f"\\frac{{{a}}}{{{a + b}}}", f"\\frac{{{2 * a}}}{{{2 * (a + b)}}}", f"\\frac{{{a + 1}}}{{{a + b}}}"
    elif kind == 2:
        reference, good, bad = f"{a}.{c}5", f"{a}.{c}5", f"{a}.{c}6"
    elif kind == 3:
        reference, good, bad = f"\\sqrt{{{c * c * b}}}", f"{c}\\sqrt{{{b}}}", f"{c + 1}\\sqrt{{{b}}}"
    elif kind == 4:
        reference, good, bad = f"(x+{c})^2", f"x^2+{2 * c}x+{c * c}", f"x^2+{c}x+{c * c}"
    elif kind == 5:
        reference, good, bad = f"[{-a}, {b}]", f"[{-a},{b}]", f"({-a}, {b})"
    elif kind == 6:
        reference, good, bad = f"\\{{{a}, {b + 41}, {c}\\}}", f"\\{{{c}, {a}, {b + 41}\\}}", f"\\{{{a}, {c}\\}}"
    elif kind == 7:
        reference, good, bad = rng.choice([("Yes", "yes", "no"), ("No", "no", "yes")])
    elif kind == 8:
        word = rng.choice(WORDS)
        reference, good, bad = word, word.lower(), rng.choice([w for w in WORDS if w != word])
    else:
        reference = " ".join(rng.choice(FILLER.split()) for _ in range(40)).replace("{", "").replace("}", "")
        good = bad = " ".join(reference.split()[: rng.randint(10, 40)])
    body = FILLER.format(a=a, b=b, c=c) * 2
    return body + "\n\n" + rng.choice(ENDINGS).format(x=good if right else bad), reference


def examples(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    pairs = [pair(rng, index % 2 == 0) for index in range(count)]
    return [p for p, _ in pairs], [r for _, r in pairs]


def plain_math_verify(predictions: list[str], references: list[str]) -> list[bool]:
    from math_verify import parse, verify

    return [bool(verify(parse(f"${r}$"), parse(p))) for p, r in zip(predictions, references)]


def main(count: int = 1000, repeats: int = 3) -> dict:
    project, baseline = [], []
    for repeat in range(repeats):
        predictions, references = examples(count, seed=repeat)
        verifier = MathVerifier()
        started = time.perf_counter()
        rows = score_many(predictions, references, ScoringSettings(), verifier)
        project.append(time.perf_counter() - started)  # worker start-up included
        verifier.close()
        started = time.perf_counter()
        plain = plain_math_verify(predictions, references)
        baseline.append(time.perf_counter() - started)
    verdicts = [r["correct"] for r in rows if r["correct"] is not None]
    right = [r["correct"] for i, r in enumerate(rows) if i % 2 == 0 and r["correct"] is not None]
    result = {
        "examples": count, "project_s": round(statistics.median(project), 2),
        "plain_math_verify_s": round(statistics.median(baseline), 2),
        "project_accepts_right": round(sum(right) / len(right), 3),
        "project_accepts_wrong": round((sum(verdicts) - sum(right)) / (len(verdicts) - len(right)), 3),
        "plain_accepts_right": round(sum(plain[0::2]) / len(plain[0::2]), 3),
        "plain_accepts_wrong": round(sum(plain[1::2]) / len(plain[1::2]), 3),
    }
    print(f"scoring {count} examples (median of {repeats}): project {result['project_s']} s "
          f"(min {min(project):.2f}, max {max(project):.2f}), plain math-verify in-process "
          f"{result['plain_math_verify_s']} s")
    print(f"  right answers accepted: project {result['project_accepts_right']:.1%}, plain "
          f"{result['plain_accepts_right']:.1%}; wrong accepted: project {result['project_accepts_wrong']:.1%}, "
          f"plain {result['plain_accepts_wrong']:.1%}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.examples, args.repeats)
