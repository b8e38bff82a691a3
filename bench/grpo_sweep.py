"""GRPO (or DPO) after the quickstart's SFT: test accuracy of the SFT adapter against variants over several seeds.

    python bench/grpo_sweep.py --variants shipped --seeds 42 1 2 --out bench/grpo_sweep.json
    python bench/grpo_sweep.py --config configs/dpo_quickstart.yaml --seeds 42 1 2

Trains the quickstart's SFT adapter once (configs/quickstart.yaml; its run folder is reused), evaluates it on the
quickstart's own test rows with the quickstart's evaluation settings, then for each variant and seed goes on from it
with configs/grpo_quickstart.yaml plus the variant's overrides, and evaluates the result the same way. Prints and
writes accuracy overall and per task family, the gain over SFT, the reward curve and the wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEARNABLE = ("larger_number", "parity", "last_word", "digit_sum")  # make_sample_data.LEARNABLE_TASKS
VARIANTS: dict[str, list[str]] = {  # a name here, or overrides separated by ";"
    "shipped": [],  # configs/grpo_quickstart.yaml as it is
    "format_only": ["training.grpo.rewards={format: 1.0}", "training.grpo.variance_filter_samples=0"],
    "correct": ["training.grpo.rewards={answer_correct: 1.0, format: 0.2}", "training.grpo.variance_filter_samples=0"],
    "correct_filtered": ["training.grpo.rewards={answer_correct: 1.0, format: 0.2}",
                         "training.grpo.variance_filter_samples=8"],
}


def family_accuracy(metrics: dict, families: tuple[str, ...]) -> tuple[float, int]:
    """Accuracy over the rows of some task families, from the per-family metrics, and their row count."""
    rows = {f: int(metrics.get(f"count_task_{f}", 0)) for f in families}
    correct = sum(metrics.get(f"accuracy_task_{f}", 0.0) * n for f, n in rows.items())
    total = sum(rows.values())
    return (correct / total if total else 0.0), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["shipped"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--config", default=str(ROOT / "configs" / "grpo_quickstart.yaml"),
                        help="the config that goes on from the SFT adapter (GRPO or DPO)")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every GRPO run")
    parser.add_argument("--work", default="/tmp/grpo-sweep", help="run folders (the SFT run is reused from here)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from llm_trainer.base_model import prepare_tokenizer, resolve_base_model
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor
    from llm_trainer.evaluation.base import evaluate_model_on_test
    from llm_trainer.training import run_training

    work = Path(args.work)
    quickstart = load_config(ROOT / "configs" / "quickstart.yaml")
    processor = build_processor(quickstart.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(quickstart.model, processed["train"])
    tokenized, _ = processor.tokenize(processed, tokenizer)
    base_model = resolve_base_model(quickstart.model, tokenizer, quickstart.seed).name_or_path

    def evaluate(adapter: Path) -> dict:
        result = evaluate_model_on_test(quickstart, tokenizer, base_model, adapter, processed["test"],
                                        tokenized["test"])
        learnable, rows = family_accuracy(result.metrics, LEARNABLE)
        return {"accuracy": result.metrics["accuracy"], "learnable": learnable, "learnable_rows": rows,
                "rows": int(result.metrics.get("count_single_word", 0) + result.metrics.get("count_short", 0)),
                **{f: result.metrics.get(f"accuracy_task_{f}") for f in LEARNABLE}}

    started = time.time()
    sft = run_training(quickstart, tokenized, tokenizer, work / "sft", base_model=base_model)
    sft_scores = {"train_s": round(time.time() - started, 1), **evaluate(sft.adapter.path)}
    print("sft", json.dumps(sft_scores), flush=True)
    results = {"sft": sft_scores, "runs": []}
    for variant in args.variants:
        for seed in args.seeds:
            overrides = [*VARIANTS.get(variant, variant.split(";")), *args.set, f"seed={seed}",
                         f"model.init_adapter={sft.adapter.path}"]
            cfg = load_config(args.config, overrides)
            started = time.time()
            # a finished run of the same config and overrides is reused
            key = hashlib.sha256("|".join([cfg.model_dump_json(), *overrides]).encode()).hexdigest()[:12]
            grpo = run_training(cfg, tokenized, tokenizer, work / f"{cfg.training.trainer}-{key}", base_model=base_model,
                                processed=processed)
            seconds = round(time.time() - started, 1)
            scores = evaluate(grpo.adapter.path)
            curve_key = "reward" if cfg.training.trainer == "grpo" else "rewards/margins"
            curve = [round(h[curve_key], 3) for h in grpo.history if curve_key in h and "loss" in h]
            run = {"variant": variant, "seed": seed, "train_s": seconds, **scores,
                   "gain": round(scores["accuracy"] - sft_scores["accuracy"], 4),
                   "learnable_gain": round(scores["learnable"] - sft_scores["learnable"], 4),
                   "reward_curve": curve, "kept_rows": grpo.metrics.get("grpo_rows"),
                   **{k: v for k, v in grpo.metrics.items() if k.startswith(("grpo_rows_", "grpo_variance", "pairs", "dpo_", "held_out"))}}
            results["runs"].append(run)
            print(cfg.training.trainer, json.dumps(run), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
