"""Building the offline tiny base model from a natural_reasoning-shaped train split (about 3.7 KB a row).

project: the quickstart's budgeted build (model.tiny.tokenizer_max_chars, model.tiny.pretrain_max_tokens; 20
pre-training passes, model.tiny.pretrain_epochs, stopped by the token budget) on 100,000 rows,
from the train split's chat messages as the tokenize step passes them  
baseline: the same build without budgets (every text, 3 pre-training epochs, as before the budgets, which read at
most the first 50,000 texts) on a small split, timed, and its cost per row

    .venv/bin/python -m bench.bench_tiny_build [--rows 100000] [--baseline-rows 300]
"""

from __future__ import annotations

import argparse
import os
import random
import time

from bench import common


def train_split(rows: int, seed: int = 0):
    import datasets

    rng = random.Random(seed)
    words = [f"{stem}{suffix}" for stem in ("integr", "deriv", "matri", "prob", "vect", "ener", "tens", "limi",
                                            "theor", "equat", "funct", "momen") for suffix in
             ("al", "ate", "ion", "ity", "ive", "es", "ing", "ed", "s", "")] + [str(n) for n in range(100)]

    def text(count: int) -> str:
        return " ".join(rng.choice(words) for _ in range(count))

    system = "You are a careful assistant. Reason step by step, then end with a line 'Final answer: <answer>'."
    return datasets.Dataset.from_dict({"messages": [
        [{"role": "system", "content": system}, {"role": "user", "content": text(55) + "?"},
         {"role": "assistant", "content": text(400) + ".\n\nFinal answer: " + text(3)}] for _ in range(rows)]})


def build(rows: int, overrides: list[str]) -> dict:
    from llm_trainer.config import load_config
    from llm_trainer.base_model import prepare_tokenizer, resolve_base_model
    from llm_trainer.tiny_model import build_info

    split = train_split(rows)
    cfg = load_config(common.QUICKSTART, overrides)
    started = time.perf_counter()
    tokenizer = prepare_tokenizer(cfg.model, split)
    tokenizer_s = time.perf_counter() - started
    folder = resolve_base_model(cfg.model, tokenizer, cfg.seed).name_or_path
    total = time.perf_counter() - started
    return {"rows": rows, "tokenizer_s": round(tokenizer_s, 1), "total_s": round(total, 1), **build_info(folder)}


def main(rows: int = 100_000, baseline_rows: int = 300) -> dict:
    os.environ["LLM_TRAINER_HOME"] = str(common.scratch("tiny-build"))  # nothing cached
    project = build(rows, [])
    unbudgeted = ["model.tiny.tokenizer_max_chars=1000000000", "model.tiny.pretrain_max_tokens=1000000000",
                  "model.tiny.pretrain_epochs=3"]  # the build before the budgets made 3 passes
    baseline = build(baseline_rows, unbudgeted)
    per_row = baseline["total_s"] / baseline_rows
    print(f"tiny base model from {rows:,} rows: {project['total_s']} s (tokenizer {project['tokenizer_s']} s, "
          f"{project['pretrain_tokens']:,} pre-training tokens, {project['corpus_chars']:,} characters)")
    print(f"without budgets, {baseline_rows} rows: {baseline['total_s']} s ({baseline['pretrain_tokens']:,} tokens); "
          f"{per_row:.3f} s a row; the build before the budgets read at most 50,000 texts (25,000 rows), so about "
          f"{per_row * min(rows, 25_000) / 60:.0f} min for {rows:,} rows")
    return {"project": project, "baseline": baseline,
            "baseline_extrapolated_min": round(per_row * min(rows, 25_000) / 60, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=300)
    args = parser.parse_args()
    main(args.rows, args.baseline_rows)
