"""Benchmark 1: processing throughput (rows/s) of load -> preprocess -> tokenize (+ packing).

project:  the library functions the process pipeline's steps call (load_source, preprocess: clean,
          de-duplicate, split; tokenize: chat template, prompt masking, packing), quickstart config.
baseline: a plain script that loads the same JSONL with ``datasets`` and applies the same chat template
          and tokenizer in one batched map (no cleaning, de-duplication, splitting, masking or packing).

Both use the same tiny BPE tokenizer (built once, not timed) and run alternately, each in a fresh
subprocess with an empty datasets cache, so no run reuses another's Arrow files. Optionally also times
the ZenML process pipeline (``run_pipeline.py process``) once on the same file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.common import (BENCH_DIR, QUICKSTART, ROOT, emit, median, quickstart_assets, report, row, run_timed,
                          run_worker, scratch, write_reasoning_rows)

FULL_DATASET_ROWS = 1_100_000  # facebook/natural_reasoning


def library_worker(data: Path, tokenizer_dir: str) -> dict:
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor
    from llm_trainer.modeling import load_tokenizer

    cfg = load_config(QUICKSTART, [f"data.source={data}"])
    tokenizer = load_tokenizer(tokenizer_dir, cfg.model)
    processor = build_processor(cfg.data)
    t0 = time.perf_counter()
    raw = processor.load()
    t1 = time.perf_counter()
    processed, prep = processor.preprocess(raw)
    t2 = time.perf_counter()
    tokenized, tok = processor.tokenize(processed, tokenizer)
    t3 = time.perf_counter()
    tokens = sum(s.get("tokens", 0) for s in tok["splits"].values())
    return {"seconds": t3 - t0, "load_s": t1 - t0, "preprocess_s": t2 - t1, "tokenize_s": t3 - t2,
            "rows": len(raw), "rows_kept": prep["rows_kept"], "tokens": tokens,
            "packing_efficiency": tok["splits"]["train"].get("packing_efficiency")}


def baseline_worker(data: Path, tokenizer_dir: str) -> dict:
    import datasets
    from transformers import AutoTokenizer

    from llm_trainer.config import load_config

    data_cfg = load_config(QUICKSTART).data
    system, template = data_cfg.system_prompt, data_cfg.final_answer_template
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def tokenize(batch):
        conversations = []
        for question, reference, responses in zip(batch["question"], batch["reference_answer"], batch["responses"]):
            target = responses[0]["response"] if responses else ""
            if reference:
                target = f"{target}\n\n{template.format(answer=reference)}"
            conversations.append([{"role": "system", "content": system}, {"role": "user", "content": question},
                                  {"role": "assistant", "content": target}])
        texts = tokenizer.apply_chat_template(conversations, tokenize=False)
        return {"input_ids": tokenizer(texts, add_special_tokens=False)["input_ids"]}

    t0 = time.perf_counter()
    raw = datasets.load_dataset("json", data_files=str(data), split="train")
    tokenized = raw.map(tokenize, batched=True, batch_size=data_cfg.map_batch_size, remove_columns=raw.column_names)
    seconds = time.perf_counter() - t0
    tokens = sum(len(ids) for ids in tokenized.with_format("arrow")["input_ids"].to_pylist())
    return {"seconds": seconds, "rows": len(raw), "tokens": tokens}


def main(rows: int = 100_000, repeats: int = 3, pipeline: bool = True) -> dict:
    data = write_reasoning_rows(BENCH_DIR / f"natural_reasoning_{rows}.jsonl", rows)
    _, _, _, tokenizer = quickstart_assets()
    tokenizer_dir = tokenizer.name_or_path
    runs: dict[str, list[dict]] = {"library": [], "baseline": []}
    for _ in range(repeats):
        for kind in runs:
            env = {"HF_DATASETS_CACHE": str(scratch("datasets-cache"))}
            runs[kind].append(run_worker("bench.bench_processing", "--worker", kind, "--data", str(data),
                                         "--tokenizer", tokenizer_dir, env=env))
    lib = {k: median([r[k] for r in runs["library"]]) for k in ("seconds", "load_s", "preprocess_s", "tokenize_s")}
    base_s = median([r["seconds"] for r in runs["baseline"]])
    lib_rps, base_rps = rows / lib["seconds"], rows / base_s
    lib_tokens, base_tokens = runs["library"][0]["tokens"], runs["baseline"][0]["tokens"]
    table = [
        row("rows/s (load -> tokenize)", lib_rps, base_rps, "rows/s", ">= 0.8",
            samples={"project_s": [r["seconds"] for r in runs["library"]],
                     "baseline_s": [r["seconds"] for r in runs["baseline"]]}),
        row("wall time", lib["seconds"], base_s, "s", higher_is_better=False),
        row("tokens/s", lib_tokens / lib["seconds"], base_tokens / base_s, "tokens/s"),
        row(f"extrapolated to {FULL_DATASET_ROWS:,} rows", FULL_DATASET_ROWS / lib_rps / 60,
            FULL_DATASET_ROWS / base_rps / 60, "min", higher_is_better=False),
    ]
    notes = [
        f"{rows:,} generated rows ({runs['library'][0]['rows_kept']:,} kept by the library; the baseline keeps all), "
        f"{repeats} alternating runs each, medians; project phases (median s): load {lib['load_s']:.1f}, "
        f"preprocess {lib['preprocess_s']:.1f}, tokenize+pack {lib['tokenize_s']:.1f}; "
        f"train packing efficiency {runs['library'][0]['packing_efficiency']}.",
        "Timed inside each worker after imports and tokenizer loading (same for both); "
        "the tiny tokenizer is built beforehand and not timed.",
        "Extrapolation is linear in rows. Real natural_reasoning rows are much longer than these generated "
        "arithmetic rows, so the real data set takes longer in proportion to its tokens (tokens/s row).",
    ]
    if pipeline:
        seconds, summary = _time_zenml_process(data)
        table.append(row("ZenML process pipeline (CLI wall, 1 run) vs library alone", seconds, lib["seconds"], "s",
                         higher_is_better=False))
        notes.append("ZenML row: one uncached `run_pipeline.py process` run on the same file in the benchmark's "
                     "temp store, wall time of the whole command (interpreter start, imports, building the tiny "
                     "tokenizer on the new train split, artifact materialisation); its 'baseline' column is the "
                     f"library-only median, so ratio = library / pipeline. Pipeline-internal time: "
                     f"{summary.get('wall_time_s')} s.")
    return report({"name": "processing", "title": "1. Processing throughput",
                   "project": "library load -> preprocess -> tokenize+pack (quickstart config)",
                   "baseline": "datasets.load_dataset('json') + one batched map: chat template + tokenizer",
                   "rows": table, "notes": notes, "raw": runs})


def _time_zenml_process(data: Path) -> tuple[float, dict]:
    out = scratch("process-pipeline")
    summary_file = out / "summary.json"
    seconds = run_timed([sys.executable, str(ROOT / "run_pipeline.py"), "process", "--config", str(QUICKSTART),
                         "--set", f"data.source={data}", "--set", f"output_dir={out}", "--no-cache",
                         "--summary", str(summary_file)], timeout=1200)
    return seconds, json.loads(summary_file.read_text())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["library", "baseline"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--tokenizer")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-pipeline", action="store_true")
    args = parser.parse_args()
    if args.worker:
        emit((library_worker if args.worker == "library" else baseline_worker)(args.data, args.tokenizer))
    else:
        main(args.rows, args.repeats, pipeline=not args.no_pipeline)
