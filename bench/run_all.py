"""Run every CPU benchmark in one isolated temporary state folder and print their tables.

    .venv/bin/python -m bench.run_all                      # everything (about 15 minutes on 2 cores)
    .venv/bin/python -m bench.run_all --only packing training --json /tmp/bench.json

Order matters a little: the first benchmark builds the tiny tokenizer and model into the shared temporary
LLM_TRAINER_HOME, so later ones (and the orchestration benchmark's first quickstart run) reuse them.
The GPU benchmark (bench/gpu_qlora.py) is separate: see bench/RESULTS.md for its command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

from bench import common

BENCHMARKS = ["packing", "processing", "generation", "training", "orchestration", "scoring", "freeform", "tiny_build",
              "max_context", "scale", "sql", "serving", "code_sandbox"]


def run(name: str, args: argparse.Namespace) -> dict:
    if name == "packing":
        from bench.bench_packing import main
        return main()
    if name == "processing":
        from bench.bench_processing import main
        return main(rows=args.rows, repeats=args.repeats, pipeline=not args.no_pipeline)
    if name == "generation":
        from bench.bench_generation import main
        return main(repeats=args.repeats)
    if name == "training":
        from bench.bench_training import main
        return main(steps=args.steps, repeats=args.repeats)
    if name == "scoring":
        from bench.bench_scoring import main
        return main(repeats=args.repeats)
    if name == "tiny_build":
        from bench.bench_tiny_build import main
        return main()
    if name == "max_context":  # about 25 minutes on 2 idle cores: one training step per worker at 1-8k tokens
        from bench.bench_max_context import main
        return main()
    if name == "scale":  # 100k and 300k rows, then 300k under a 4 GiB cgroup limit: long, see bench/RESULTS.md
        from bench.bench_scale import main
        return main(tuple(args.scale_rows), args.scale_limit_gib)
    if name == "freeform":
        from bench.bench_freeform import main
        return main()
    if name == "serving":  # the `serve` command under 1 and 8 concurrent clients, against no batching
        from bench.bench_serving import main
        return main()
    if name == "sql":
        from bench.bench_sql import main
        return main(repeats=args.repeats)
    if name == "code_sandbox":
        from bench.bench_code_sandbox import main
        return main(["--repeats", str(args.repeats)])
    from bench.bench_orchestration import main
    return main(repeats=args.repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (medians are quoted)")
    parser.add_argument("--rows", type=int, default=100_000, help="generated rows for the processing benchmark")
    parser.add_argument("--scale-rows", type=int, nargs="+", default=[100_000, 300_000],
                        help="sizes of the processing-at-scale benchmark (the largest also runs under the limit)")
    parser.add_argument("--scale-limit-gib", type=float, default=4.0, help="memory limit of the capped scale run")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per training run")
    parser.add_argument("--no-pipeline", action="store_true", help="skip timing the ZenML process pipeline")
    parser.add_argument("--json", type=Path, help="also write all results (raw samples included) to this file")
    args = parser.parse_args()

    started = time.perf_counter()
    info = {"date": datetime.date.today().isoformat(), "machine": common.machine(), "python": platform.python_version(),
            "command": " ".join(["python -m bench.run_all", *sys.argv[1:]])}
    print(f"# llm-trainer benchmarks {info['date']}\n\nmachine: {info['machine']}\n", flush=True)
    results, failures = [], {}
    for name in args.only or BENCHMARKS:
        began = time.perf_counter()
        try:
            result = run(name, args)
        except Exception as exc:  # report the others; one broken benchmark should not hide them
            failures[name] = f"{type(exc).__name__}: {exc}"
            print(f"### {name}: FAILED\n\n{failures[name][-2000:]}\n", flush=True)
            continue
        result["seconds"] = round(time.perf_counter() - began, 1)
        results.append(result)
        print(f"({name}: {result['seconds']} s)\n", flush=True)
    info["total_s"] = round(time.perf_counter() - started, 1)
    info["load_average_end"] = common.machine()["load_average"]
    print(f"total: {info['total_s']} s; load average at the end: {info['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps({**info, "results": results, "failures": failures}, indent=1, default=str))
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
