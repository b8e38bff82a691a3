#!/usr/bin/env python3
"""Generate natural_reasoning-shaped rows at scale: the size profile of the real set, not its content.

facebook/natural_reasoning has 1.15M rows in 4.2 GB, about 3.7 KB a row: questions of about 55 words,
responses of about 400 words, and reference answers that are 18% empty, 10% one word, 22% short and 50% long.
These rows follow that profile (word counts drawn around those means, so lengths spread like real data) with
text made of pseudo-words from a fixed syllable set, so any tokenizer splits them into several tokens a word.

The text of every row is a slice of one shared random word pool, so writing 300k rows (about 1.1 GB) takes
seconds, not minutes. Deterministic for a given ``--rows``/``--seed``. Never commit the output.

    python scripts/make_scale_data.py --rows 100000 --output /tmp/nr_100k.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESPONSE_MODEL = "Llama-3.3-70B-Instruct"
QUESTION_WORDS = 55
RESPONSE_WORDS = 400
# Reference answers: (share, low, high) word counts; 0 words = no reference.
REFERENCE_KINDS = {"empty": (0.18, 0, 0), "one_word": (0.10, 1, 1), "short": (0.22, 2, 12), "long": (0.50, 13, 120)}
SYLLABLES = ["ka", "ro", "mi", "te", "su", "lan", "dor", "vi", "pe", "qua", "nth", "ex", "ol", "br", "ist", "um",
             "gre", "fa", "zo", "ct", "ion", "al", "ve", "sh", "ou", "yn", "tr", "ab", "ic", "er"]
POOL_WORDS = 4_000_000


def word_pool(rng: np.random.Generator, vocabulary: int = 20_000) -> tuple[str, np.ndarray]:
    """One long text of Zipf-distributed pseudo-words, and the character offset where each word starts."""
    parts = rng.integers(0, len(SYLLABLES), size=(vocabulary, 5))
    sizes = rng.integers(1, 4, size=vocabulary)
    words = np.array(["".join(SYLLABLES[p] for p in row[:n]) for row, n in zip(parts, sizes)])
    weights = 1.0 / (np.arange(vocabulary) + 10.0)  # a flattened Zipf law: frequent words, and a long tail
    chosen = words[rng.choice(vocabulary, size=POOL_WORDS, p=weights / weights.sum())]
    starts = np.concatenate([[0], np.cumsum(np.char.str_len(chosen) + 1)[:-1]])
    return " ".join(chosen.tolist()), starts


def word_counts(rng: np.random.Generator, mean: int, rows: int, spread: float) -> np.ndarray:
    """Log-normal counts with the given mean (about half the rows below it, a long tail above)."""
    sigma = spread
    return np.maximum(1, rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, size=rows)).astype(np.int64)


def reference_counts(rng: np.random.Generator, rows: int) -> np.ndarray:
    shares = np.array([share for share, _, _ in REFERENCE_KINDS.values()])
    kind = rng.choice(len(shares), size=rows, p=shares / shares.sum())
    low = np.array([lo for _, lo, _ in REFERENCE_KINDS.values()])[kind]
    high = np.array([hi for _, _, hi in REFERENCE_KINDS.values()])[kind]
    return rng.integers(low, high + 1)


def write_rows(path: Path, rows: int, seed: int = 0, chunk: int = 20_000) -> Path:
    rng = np.random.default_rng(seed)
    text, starts = word_pool(rng)
    total_words = len(starts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for first in range(0, rows, chunk):
            n = min(chunk, rows - first)
            counts = {"q": word_counts(rng, QUESTION_WORDS, n, 0.45), "r": word_counts(rng, RESPONSE_WORDS, n, 0.5),
                      "a": reference_counts(rng, n)}
            begin = {k: rng.integers(0, total_words - int(c.max()) - 1, size=n) for k, c in counts.items()}
            lines = []
            for i in range(n):
                q, r, a = (_slice(text, starts, int(begin[k][i]), int(counts[k][i])) for k in ("q", "r", "a"))
                lines.append(json.dumps({
                    "question": f"Problem {first + i}: {q}?",  # the number keeps every question unique
                    "reference_answer": a,
                    "responses": [{"response_model": RESPONSE_MODEL, "response": r}],
                }))
            handle.write("\n".join(lines) + "\n")
    tmp.rename(path)
    return path


def _slice(text: str, starts: np.ndarray, first_word: int, words: int) -> str:
    if words == 0:
        return ""
    return text[starts[first_word]: starts[first_word + words] - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    path = write_rows(args.output, args.rows, args.seed)
    size = path.stat().st_size
    print(f"{args.rows:,} rows, {size / 1e6:.1f} MB ({size / args.rows:.0f} bytes a row) -> {path}")


if __name__ == "__main__":
    main()
