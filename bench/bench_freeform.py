"""How well the scorer reads answers out of free-form solutions, against math-verify alone.

bench/data/freeform_solutions.jsonl holds correct solutions written the way instruct models write them
(prose conclusions, boxed, display math, yes/no, expressions), each with a verified reference. Every
solution is scored against its own reference (recall: it must be accepted) and against the reference of
another problem (precision: it must be rejected). The baseline is math-verify alone on the whole solution,
as many projects use it.

    .venv/bin/python -m bench.bench_freeform [--show-misses]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llm_trainer.evaluation.math_verifier import MathVerifier
from llm_trainer.evaluation.scoring import ScoringSettings, score_many

DATA = Path(__file__).parent / "data"
# "development": the set the extraction rules were tuned on; "held-out": written separately, never looked at
# while tuning (measure on it, don't tune on it).
SETS = {"development": DATA / "freeform_solutions.jsonl", "held-out": DATA / "freeform_heldout.jsonl"}


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mismatched(rows: list[dict]) -> list[tuple[str, str]]:
    """Each solution with the reference of the problem half the set away (never an equal reference)."""
    pairs, n = [], len(rows)
    for index, row in enumerate(rows):
        other = rows[(index + n // 2) % n]
        if other["reference"].strip().lower() != row["reference"].strip().lower():
            pairs.append((row["solution"], other["reference"]))
    return pairs


def math_verify_alone(pairs: list[tuple[str, str]]) -> list[bool]:
    from math_verify import parse, verify

    return [bool(verify(parse(f"${reference}$"), parse(solution))) for solution, reference in pairs]


def main(show_misses: bool = False) -> dict:
    return {name: measure(name, load(path), show_misses) for name, path in SETS.items()}


def measure(name: str, rows: list[dict], show_misses: bool) -> dict:
    own = [(r["solution"], r["reference"]) for r in rows]
    others = mismatched(rows)
    verifier = MathVerifier()
    started = time.perf_counter()
    accepted = score_many([s for s, _ in own], [r for _, r in own], ScoringSettings(), verifier)
    rejected = score_many([s for s, _ in others], [r for _, r in others], ScoringSettings(), verifier)
    seconds = time.perf_counter() - started
    verifier.close()
    baseline_own, baseline_others = math_verify_alone(own), math_verify_alone(others)
    result = {
        "solutions": len(own), "mismatched_pairs": len(others),
        "accepted": sum(bool(r["correct"]) for r in accepted) / len(own),
        "rejected": sum(not r["correct"] for r in rejected) / len(others),
        "baseline_accepted": sum(baseline_own) / len(own),
        "baseline_rejected": sum(not v for v in baseline_others) / len(others),
        "seconds": round(seconds, 2),
    }
    by_style: dict[str, list[bool]] = {}
    for row, scored in zip(rows, accepted):
        by_style.setdefault(row["style"], []).append(bool(scored["correct"]))
    result["accepted_by_style"] = {k: f"{sum(v)}/{len(v)}" for k, v in sorted(by_style.items())}
    print(f"{name} set of free-form solutions: {len(own)} correct, {len(others)} mismatched ({seconds:.1f} s)")
    print(f"  project scorer:    accepts {result['accepted']:.1%} of correct, rejects {result['rejected']:.1%} "
          "of mismatched")
    print(f"  math-verify alone: accepts {result['baseline_accepted']:.1%} of correct, rejects "
          f"{result['baseline_rejected']:.1%} of mismatched")
    print("  accepted by style:", result["accepted_by_style"])
    if show_misses:
        for row, scored in zip(rows, accepted):
            if not scored["correct"]:
                print(f"MISS {row['id']} [{row['style']}] ref={row['reference']!r} got={scored['extracted']!r} "
                      f"({scored['extraction']}, {scored['judge']}, {scored['answer_type']})")
        for (solution, reference), scored in zip(others, rejected):
            if scored["correct"]:
                print(f"FALSE ACCEPT ref={reference!r} got={scored['extracted']!r} ({scored['judge']})")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--show-misses", action="store_true")
    main(parser.parse_args().show_misses)
