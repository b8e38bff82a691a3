"""Benchmark: processing at scale, on natural_reasoning-shaped rows (scripts/make_scale_data.py).

project:  the library's load -> clean/de-duplicate/split -> tokenize -> pack -> save (the process pipeline's
          work, without ZenML), quickstart config at ``max_seq_length`` 2048 with 2 processes, at several sizes;
          the largest size also once more under a memory limit (a cgroup).
baseline: linear scaling of the smallest size (rows/s held constant): the ratio shows how far from linear
          the larger runs are. The issue's goal: the largest size under the limit takes at most 1.6 x linear.

Each run is a fresh subprocess with an empty datasets cache. Memory: the peak anonymous memory (the working set
the kernel cannot reclaim) of the worker and of its tokenizing children, its peak RSS (memory-mapped Arrow files
included), and under the limit the cgroup's peak charge (page cache included). The memory limit uses the
cgroup-v1 memory controller when /sys/fs/cgroup/memory is writable (root), else
``systemd-run --user --scope -p MemoryMax=...`` when that works, else the capped run is skipped (noted).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import BENCH_DIR, QUICKSTART, ROOT, emit, quickstart_assets, report, row, run_worker, scratch

FULL_DATASET_ROWS = 1_150_000  # facebook/natural_reasoning
CGROUP_V1 = Path("/sys/fs/cgroup/memory")


class AnonymousMemoryPeak:
    """Peak anonymous memory (heap: RssAnon, without page cache or memory-mapped Arrow files) of this process
    and, summed, of its children, sampled every 0.2 s in a thread. Memory-mapped files count in RSS but are
    page cache the kernel reclaims under a limit; anonymous memory is the working set that cannot be."""

    def __init__(self) -> None:
        import threading

        self.self_mb = self.children_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.self_mb = max(self.self_mb, _rss_anon_mb(os.getpid()))
            self.children_mb = max(self.children_mb, sum(_rss_anon_mb(pid) for pid in _children(os.getpid())))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_anon_mb": round(self.self_mb), "peak_children_anon_mb": round(self.children_mb)}


def _rss_anon_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def worker(data: Path, tokenizer_dir: str, out: Path) -> dict:
    from transformers import AutoTokenizer

    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor

    cfg = load_config(QUICKSTART, [f"data.source={data}", "data.max_seq_length=2048", "data.num_proc=2"])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    processor = build_processor(cfg.data)
    times = {}
    memory = AnonymousMemoryPeak()
    t0 = time.perf_counter()
    raw = processor.load()
    times["load_s"] = time.perf_counter() - t0
    processed, prep = processor.preprocess(raw)
    times["preprocess_s"] = time.perf_counter() - t0 - times["load_s"]
    t1 = time.perf_counter()
    tokenized, tok = processor.tokenize(processed, tokenizer)
    times["tokenize_pack_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    processed.save_to_disk(str(out / "processed"))
    tokenized.save_to_disk(str(out / "tokenized"))
    times["save_s"] = time.perf_counter() - t2
    train = tok["splits"]["train"]
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # a forked worker: shares pages
    return {"seconds": time.perf_counter() - t0, **times, **memory.stop(), "rows": len(raw),
            "rows_kept": prep["rows_kept"],
            "peak_rss_mb": round(peak_self), "peak_child_mb": round(peak_child),
            "train_samples": train["samples"], "train_tokens": train.get("tokens"),
            "length_mean": train.get("length_mean"), "length_p50": train.get("length_p50"),
            "overlength": train["overlength"], "blocks": train.get("blocks"),
            "samples_per_block": train.get("samples_per_block"), "packing_efficiency": train.get("packing_efficiency"),
            "compute_efficiency": train.get("compute_efficiency"), "disk_mb": _disk_mb(out),
            "cache_mb": _disk_mb(Path(os.environ["HF_DATASETS_CACHE"]))}


def _disk_mb(folder: Path) -> int:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20)


def memory_limit_prefix(limit_bytes: int, name: str) -> tuple[list[str], Path | None, str]:
    """(command prefix that runs a command under the limit, cgroup folder to read and remove, how)."""
    if CGROUP_V1.is_dir() and os.access(CGROUP_V1, os.W_OK):
        group = CGROUP_V1 / name
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
        script = f'echo $$ > {group}/cgroup.procs && exec "$@"'
        return ["sh", "-c", script, "sh"], group, f"cgroup v1 ({group}/memory.limit_in_bytes)"
    systemd = shutil.which("systemd-run")
    if systemd:
        probe = subprocess.run([systemd, "--user", "--scope", "-q", "-p", f"MemoryMax={limit_bytes}", "true"],
                               capture_output=True)
        if probe.returncode == 0:
            return [systemd, "--user", "--scope", "-q", "-p", f"MemoryMax={limit_bytes}"], None, "systemd-run scope"
    return [], None, ""


def run_size(data: Path, tokenizer_dir: str, limit_bytes: int | None = None) -> dict:
    env = {"HF_DATASETS_CACHE": str(scratch("datasets-cache"))}
    out = scratch("saved")
    args = ["--worker", "--data", str(data), "--tokenizer", tokenizer_dir, "--out", str(out)]
    group = None
    try:
        if limit_bytes:
            prefix, group, how = memory_limit_prefix(limit_bytes, f"llm-trainer-bench-{os.getpid()}")
            if not prefix:
                return {"skipped": "no usable memory limit (cgroup v1 not writable, no systemd-run scope)"}
            result = _run_prefixed(prefix, args, env)
            result["limit"] = how
            if group is not None:
                result["cgroup_peak_mb"] = round(int((group / "memory.max_usage_in_bytes").read_text()) / 2**20)
                result["cgroup_oom_kills"] = _oom_kills(group)
        else:
            result = run_worker("bench.bench_scale", *args, env=env, timeout=7200)
        return result
    finally:
        shutil.rmtree(env["HF_DATASETS_CACHE"], ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        if group is not None:
            group.rmdir()


def _oom_kills(group: Path) -> int:
    for line in (group / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def _run_prefixed(prefix: list[str], args: list[str], env: dict[str, str]) -> dict:
    started = time.perf_counter()
    done = subprocess.run([*prefix, sys.executable, "-m", "bench.bench_scale", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=7200)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"capped worker failed (exit {done.returncode}):\n{(done.stderr or done.stdout)[-3000:]}")
    return {**json.loads(lines[-1]), "wall_s": time.perf_counter() - started}


def main(sizes: tuple[int, ...] = (100_000, 300_000), limit_gib: float = 4.0) -> dict:
    from scripts.make_scale_data import write_rows

    _, _, _, tokenizer = quickstart_assets()
    tokenizer_dir = tokenizer.name_or_path
    runs = {}
    for size in sizes:
        data = write_rows(BENCH_DIR / f"scale_{size}.jsonl", size)
        runs[size] = run_size(data, tokenizer_dir)
        print(f"  {size:,} rows: {runs[size]['seconds']:.0f} s, peak anonymous {runs[size]['peak_anon_mb']} MB "
              f"(children {runs[size]['peak_children_anon_mb']} MB), peak RSS {runs[size]['peak_rss_mb']} MB",
              flush=True)
    largest, smallest = max(sizes), min(sizes)
    data = BENCH_DIR / f"scale_{largest}.jsonl"
    capped = run_size(data, tokenizer_dir, int(limit_gib * 2**30)) if limit_gib else {"skipped": "no limit asked"}
    base_rps = smallest / runs[smallest]["seconds"]
    table = []
    for size in sizes:
        r = runs[size]
        table.append(row(f"{size:,} rows: wall time (load -> save)", r["seconds"], size / base_rps, "s",
                         higher_is_better=False))
        table.append(row(f"{size:,} rows: rows/s", size / r["seconds"], base_rps, "rows/s"))
        table.append(row(f"{size:,} rows: peak anonymous memory (main process)", r["peak_anon_mb"],
                         runs[smallest]["peak_anon_mb"], "MB", higher_is_better=False))
        table.append(row(f"{size:,} rows: peak RSS incl. mapped files (main process)", r["peak_rss_mb"],
                         runs[smallest]["peak_rss_mb"], "MB", higher_is_better=False))
    if "skipped" not in capped:
        table.append(row(f"{largest:,} rows under {limit_gib:g} GiB: wall time", capped["seconds"],
                         largest / base_rps, "s", f"<= 1.6 x linear ({1.6 * largest / base_rps:.0f} s)",
                         higher_is_better=False))
        table.append(row(f"{largest:,} rows under {limit_gib:g} GiB: peak memory (cgroup charge, page cache incl.)",
                         capped.get("cgroup_peak_mb", float("nan")), limit_gib * 1024, "MB", higher_is_better=False))
    big = runs[largest]
    per_row_s = big["seconds"] / largest
    notes = [
        f"Rows from scripts/make_scale_data.py ({(BENCH_DIR / f'scale_{largest}.jsonl').stat().st_size / largest:.0f}"
        f" bytes a row); tiny tokenizer built on data/sample; max_seq_length 2048, data.num_proc 2.",
        f"Phases at {largest:,} rows (s): load {big['load_s']:.0f}, clean/dedup/split {big['preprocess_s']:.0f}, "
        f"tokenize+pack {big['tokenize_pack_s']:.0f}, save {big['save_s']:.0f}; saved {big['disk_mb']:,} MB, "
        f"datasets cache {big.get('cache_mb', 0):,} MB.",
        f"Train split at {largest:,} rows: {big['train_samples']:,} samples of mean {big['length_mean']} tokens "
        f"(p50 {big['length_p50']}); over-length: {big['overlength']}; {big['blocks']:,} blocks, "
        f"{big['samples_per_block']} samples a block, block packing efficiency {big['packing_efficiency']}; "
        f"compute_efficiency (length-grouped batches, by per-device batch size): {big['compute_efficiency']}.",
        f"Extrapolated to {FULL_DATASET_ROWS:,} rows at the {largest:,}-row rate: "
        f"{FULL_DATASET_ROWS * per_row_s / 60:.0f} min and "
        f"{big['disk_mb'] * FULL_DATASET_ROWS / largest / 1024:.1f} GB "
        f"saved (processed + tokenized splits) + {big.get('cache_mb', 0) * FULL_DATASET_ROWS / largest / 1024:.1f} GB "
        f"of datasets cache (all rows as loaded, formatted and tokenized, over-length ones included).",
        f"Capped run: {capped.get('skipped') or capped.get('limit')}"
        + ("" if "skipped" in capped else
           f"; peak anonymous {capped['peak_anon_mb']} MB (children {capped['peak_children_anon_mb']} MB), "
           f"peak RSS {capped['peak_rss_mb']} MB, cgroup peak {capped.get('cgroup_peak_mb')} MB, "
           f"OOM kills {capped.get('cgroup_oom_kills')}; phases (s): tokenize+pack {capped['tokenize_pack_s']:.0f}, "
           f"save {capped['save_s']:.0f}."),
    ]
    return report({"name": "scale", "title": "Processing at scale (natural_reasoning-shaped rows)",
                   "project": "library load -> preprocess -> tokenize+pack -> save_to_disk, 2 processes",
                   "baseline": f"linear scaling of the {smallest:,}-row run", "rows": table, "notes": notes,
                   "raw": {"runs": {str(k): v for k, v in runs.items()}, "capped": capped}})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--tokenizer")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--limit-gib", type=float, default=4.0)
    args = parser.parse_args()
    if args.worker:
        emit(worker(args.data, args.tokenizer, args.out))
    else:
        print(json.dumps(main(tuple(args.sizes), args.limit_gib)["raw"], default=str))
