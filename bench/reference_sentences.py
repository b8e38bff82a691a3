"""References written as sentences: how many correct solutions the checker accepts, and how many it still
rejects when each solution is paired with another problem's reference.

Real reference answers are often sentences ("The limit exists and is equal to 3", "No such values",
"f(x)=0 or f(x)=1", "1000 (i.e., all values)"). Each set below holds correct solutions (PRM800K-like endings:
"# Answer", boxed, "Final answer:", prose) with such references. Three checkers run on the same pairs:

- math-verify alone: ``verify(parse("$reference$"), parse(solution))``, as many projects use it;
- the checker without sentence reading (``ScoringSettings(read_sentences=False)``): the reference read as before;
- the checker as it is (``read_sentences=True``).

Matching pairs must be accepted; cross pairs (solution i with the reference of row i + N/2, a fixed derangement;
the sets hold no two rows with equal answers at that distance) must be rejected.

    .venv/bin/python -m bench.reference_sentences [--show-misses]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llm_trainer.evaluation.math_verifier import MathVerifier
from llm_trainer.evaluation.scoring import ScoringSettings, score_many

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
# "development": written first, the reading rules were tuned on it. "held-out": written after the rules were
# done; its first measurement was 33/40, and the bugs it showed were then fixed (so it is no longer clean).
# "blind": written after the last rule change and measured once; nothing was changed after it (the clean figure).
SETS = {"development": FIXTURES / "reference_sentences.jsonl",
        "held-out": FIXTURES / "reference_sentences_heldout.jsonl",
        "blind": FIXTURES / "reference_sentences_blind.jsonl"}
CHECKERS = {"checker without sentence reading": ScoringSettings(read_sentences=False),
            "checker with sentence reading": ScoringSettings(read_sentences=True)}


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cross_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """Each solution with the reference of the row half the set away."""
    n = len(rows)
    return [(row["solution"], rows[(index + n // 2) % n]["reference"]) for index, row in enumerate(rows)]


def math_verify_alone(pairs: list[tuple[str, str]]) -> list[bool]:
    from math_verify import parse, verify

    return [bool(verify(parse(f"${reference}$"), parse(solution))) for solution, reference in pairs]


def measure(rows: list[dict], verifier: MathVerifier) -> dict[str, dict]:
    """{checker: {"accepted": [bool per row], "rejected": [bool per row], "rows": scored rows}}."""
    own = [(row["solution"], row["reference"]) for row in rows]
    others = cross_pairs(rows)
    results = {"math-verify alone": {"accepted": math_verify_alone(own),
                                     "rejected": [not v for v in math_verify_alone(others)], "rows": []}}
    for name, settings in CHECKERS.items():
        scored = score_many([s for s, _ in own], [r for _, r in own], settings, verifier)
        crossed = score_many([s for s, _ in others], [r for _, r in others], settings, verifier)
        results[name] = {"accepted": [bool(r["correct"]) for r in scored],
                         "rejected": [not r["correct"] for r in crossed], "rows": scored}
    return results


def main(show_misses: bool = False) -> dict:
    summary = {}
    verifier = MathVerifier()
    try:
        for set_name, path in SETS.items():
            rows = load(path)
            started = time.perf_counter()
            results = measure(rows, verifier)
            seconds = time.perf_counter() - started
            print(f"{set_name} set ({path.name}): {len(rows)} matching pairs, {len(rows)} cross pairs "
                  f"({seconds:.1f} s)")
            summary[set_name] = {}
            for name, result in results.items():
                accepted, rejected = sum(result["accepted"]), sum(result["rejected"])
                summary[set_name][name] = {"accepted": accepted, "rejected": rejected, "n": len(rows)}
                print(f"  {name:34s} accepts {accepted:3d} of {len(rows)}, rejects {rejected:3d} of {len(rows)}")
            if show_misses:
                _show_misses(rows, results["checker with sentence reading"])
    finally:
        verifier.close()
    return summary


def _show_misses(rows: list[dict], result: dict) -> None:
    n = len(rows)
    for row, accepted, scored in zip(rows, result["accepted"], result["rows"]):
        if not accepted:
            print(f"    MISS {row['id']} [{row['style']}] reference={row['reference']!r} "
                  f"read={scored['extracted']!r} ({scored['extraction']}, {scored['judge']})")
    for index, rejected in enumerate(result["rejected"]):
        if not rejected:
            print(f"    FALSE ACCEPT {rows[index]['id']} with the reference of {rows[(index + n // 2) % n]['id']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--show-misses", action="store_true")
    main(parser.parse_args().show_misses)
