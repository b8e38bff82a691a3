"""Sandboxed test runs per second (llm_trainer/code_sandbox.py: a fresh ``python -I -S`` per problem under unshare's
user, PID, network and mount namespaces, a private tmpfs, rlimits, Landlock and seccomp, and the nonce verdict)
against plain ``python -c PROGRAM+TESTS`` in a subprocess without any sandbox, on the same problems, one at a time
and with one worker per core. The sandbox runs a batch as the evaluator does (``CodeSandbox.run_many``: one fork
server per worker, a fresh forked process per problem); the baseline starts one interpreter per problem. The problems are MBPP-shaped functions with three asserts each (half right, half
wrong), from the shipped code sample when it is there.

    .venv/bin/python -m bench.bench_code_sandbox [--problems 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llm_trainer.code_sandbox import CodeSandbox, Job, Limits, describe_layers

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "code_sample" / "code_sample.jsonl"


def problems(count: int) -> list[Job]:
    """``count`` jobs: the sample's reference solutions (every other one broken by a changed constant)."""
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()] if SAMPLE.exists() else []
    if not rows:
        rows = [{"code": f"def add_{i}(x):\n    return x + {i}",
                 "test_list": [f"assert add_{i}({j}) == {i + j}" for j in range(3)], "test_setup_code": ""}
                for i in range(100)]
    jobs = []
    for i in range(count):
        row = rows[i % len(rows)]
        code = row["code"] if i % 2 == 0 else row["code"] + "\n\n_broken = True\nassert not _broken"
        jobs.append(Job(code, "\n".join(row["test_list"]), row.get("test_setup_code") or ""))
    return jobs


def plain(job: Job) -> bool:
    """The baseline: the program and its tests in ``python -c``, judged by the exit status."""
    source = "\n".join(part for part in (job.setup, job.program, job.tests) if part)
    return subprocess.run([sys.executable, "-c", source], capture_output=True, timeout=30).returncode == 0


def rate(run, jobs: list[Job], workers: int) -> tuple[float, list[bool]]:
    """Jobs per second through ``run`` with ``workers`` at a time, and the verdicts."""
    started = time.perf_counter()
    if workers == 1:
        verdicts = [run(job) for job in jobs]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            verdicts = list(pool.map(run, jobs))
    return len(jobs) / (time.perf_counter() - started), verdicts


def main(argv: list[str] | None = None) -> dict:
    """Print the table (runs/s, sandbox cost as a ratio) and return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    jobs = problems(args.problems)
    sandbox = CodeSandbox(Limits(timeout_seconds=10))
    print(describe_layers())
    figures: dict = {"problems": len(jobs), "cores": os.cpu_count(), "load": os.getloadavg()[0]}
    print(f"{'workers':>8} {'plain python -c (runs/s)':>26} {'sandboxed (runs/s)':>20} {'cost':>7}")
    for workers in (1, os.cpu_count() or 1):
        plain_rates, sandbox_rates = [], []
        for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits both alike
            r, plain_verdicts = rate(plain, jobs, workers)
            plain_rates.append(r)
            started = time.perf_counter()
            results = [result.passed for result in sandbox.run_many(jobs, workers=workers)]
            sandbox_rates.append(len(jobs) / (time.perf_counter() - started))
            assert plain_verdicts == results, "the sandbox and plain python disagree on a verdict"
        p, s = statistics.median(plain_rates), statistics.median(sandbox_rates)
        figures[f"workers_{workers}"] = {"plain_per_s": round(p, 1), "sandbox_per_s": round(s, 1),
                                         "cost": round(p / s, 2)}
        print(f"{workers:>8} {p:>26.1f} {s:>20.1f} {p / s:>6.2f}x")
    # One call per answer (CodeSandbox.run: a server started for each), as score_code does for a single answer.
    few = jobs[:max(20, len(jobs) // 5)]
    p, _ = rate(plain, few, 1)
    s, _ = rate(lambda job: sandbox.run(job).passed, few, 1)
    figures["one_call_per_answer"] = {"plain_per_s": round(p, 1), "sandbox_per_s": round(s, 1), "cost": round(p / s, 2)}
    print(f"{'1 (run)':>8} {p:>26.1f} {s:>20.1f} {p / s:>6.2f}x   one CodeSandbox.run per answer, no batching")
    # One call per answer through a session: the server started once, each answer still a fresh forked process.
    p, _ = rate(plain, jobs, 1)
    with sandbox.session() as session:
        s, _ = rate(lambda job: session.run(job).passed, jobs, 1)
    figures["session_call_per_answer"] = {"plain_per_s": round(p, 1), "sandbox_per_s": round(s, 1),
                                          "cost": round(p / s, 2)}
    print(f"{'1 (ses.)':>8} {p:>26.1f} {s:>20.1f} {p / s:>6.2f}x   one session.run per answer (a server kept)")
    return figures


if __name__ == "__main__":
    main()
