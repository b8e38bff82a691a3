"""The device check for a GPU machine that has torch, transformers, peft and accelerate but nothing else and no
network: it installs the wheels it carries, then runs four parts, each in its own process and time budget, and
writes every figure (or the part's error) to one JSON file. About 8 minutes on one H100.

    .venv/bin/python -m bench.gpu_check --build-wheels   # here, with the package index: fills .whl/ (make gpu-wheels)
    python3 -m bench.gpu_check --out $OUT/gpu_check.json   # there (make gpu-check)

Parts (PARTS): the `gpu` test tier; training at Llama-3-8B shape (random weights) through bench/gpu_qlora.py (the
project's path against its baseline: tokens/s, MFU, peak memory); the peak memory of evaluation's loss pass at the
24 GB overlay's settings (configs/cards/24gb.yaml over configs/reasoning.yaml); greedy generation tokens/s.
Without CUDA: one line saying so, then only a check that the carried wheels install into a fresh venv.
``--smoke`` runs the parts on the CPU at a tiny shape (a check of this script, not of a GPU).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
CONFIGS = [ROOT / "configs" / "reasoning.yaml", ROOT / "configs" / "cards" / "24gb.yaml"]
# What the gpu tier and the training path import beyond the GPU machine's own packages, by distribution: its
# import name. Versions are this environment's (built from requirements.txt).
CARRIED = {"bitsandbytes": "bitsandbytes", "datasets": "datasets", "dill": "dill", "multiprocess": "multiprocess",
           "pydantic": "pydantic", "pydantic-core": "pydantic_core", "annotated-types": "annotated_types",
           "typing-inspection": "typing_inspection"}
# bitsandbytes' native libraries kept in the slimmed wheel (its full wheel holds one per CUDA version, 125 MB).
KEEP_CUDA = ("126", "128", "130")
TARGET_PYTHON = "3.12"  # the GPU machine's python3 (the device tool's KINDS.md); this machine's is added too
# name: (seconds, what it checks). The whole stays under 8 minutes with the install.
PARTS = {"gpu_tests": (90, "pytest -m gpu tests/test_gpu.py"),
         "train": (220, "bench.gpu_qlora at 2,048 tokens: project vs baseline, tokens/s, MFU, peak memory"),
         "eval_memory": (70, "peak memory of the evaluation loss pass at the 24 GB overlay's batch sizes"),
         "generation": (70, "greedy generation tokens/s, batch evaluation.batch_size")}
TOTAL_S = 465
CARD_24GB_MIB = 24_000  # an RTX 4090 reports 24,564 MiB, of which the CUDA context takes about 500


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check.json")
    parser.add_argument("--wheels", type=Path, default=WHEELS, help="the carried wheels' folder")
    parser.add_argument("--build-wheels", action="store_true", help="download and slim the carried wheels, then stop")
    parser.add_argument("--keep-cuda", default=",".join(KEEP_CUDA), help="bitsandbytes libraries kept, e.g. 128,130")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--smoke", action="store_true", help="run the parts on the CPU at a tiny shape")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)  # one part, in a child process
    parser.add_argument("--gen-tokens", type=int, default=256, help="new tokens per generated answer")
    parser.add_argument("--train-samples", type=int, default=64, help="samples in bench.gpu_qlora's timed pass")
    args = parser.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"--parts: no part {', '.join(sorted(unknown))}; the parts are {', '.join(PARTS)}")
    return args


# ---- carried wheels ----

def pinned() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in CARRIED}


def build_wheels(folder: Path, keep_cuda: list[str]) -> dict[str, Any]:
    """pip download (no deps) of CARRIED for this Python and TARGET_PYTHON, then bitsandbytes slimmed."""
    folder.mkdir(parents=True, exist_ok=True)
    reqs = [f"{n}=={v}" for n, v in pinned().items()]
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(folder)]
    platforms = [a for n in (17, 24, 27, 28) for a in ("--platform", f"manylinux_2_{n}_x86_64")]
    subprocess.run([*base, *reqs], check=True)
    subprocess.run([*base, "--python-version", TARGET_PYTHON, "--implementation", "cp",
                    "--platform", "manylinux2014_x86_64", *platforms, *reqs], check=True)
    for wheel in folder.glob("bitsandbytes-*.whl"):
        slim_bitsandbytes(wheel, keep_cuda)
    return {"folder": str(folder), "mb": round(folder_mb(folder), 1),
            "wheels": sorted(p.name for p in folder.glob("*.whl"))}


def slim_bitsandbytes(wheel: Path, keep_cuda: list[str]) -> None:
    """Rewrite the wheel without the native libraries it does not keep (CPU's and ``keep_cuda``'s stay) and
    without their RECORD lines."""
    keep = re.compile(r"libbitsandbytes_(cpu|" + "|".join(map(re.escape, keep_cuda)) + r"|cuda(" +
                      "|".join(map(re.escape, keep_cuda)) + r"))\.(so|dylib|dll)$")
    dropped = lambda name: "libbitsandbytes_" in name and not keep.search(name)  # noqa: E731
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if dropped(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if not dropped(line.split(b",", 1)[0].decode()))
            dst.writestr(info, data)
    slim.replace(wheel)


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def pip_install(folder: Path, dists: list[str], python: Path | None = None, target: Path | None = None) -> None:
    """Offline: only the carried wheels, no dependencies resolved (the pins were measured together)."""
    versions = pinned_from_wheels(folder)
    missing = [d for d in dists if d not in versions]
    if missing:
        raise RuntimeError(f"{folder} has no wheel for {', '.join(missing)}: run make gpu-wheels")
    where = ["--target", str(target)] if target else []
    subprocess.run([sys.executable, "-m", "pip", *(["--python", str(python)] if python else []), "install", "--quiet",
                    "--no-index", "--no-deps", "--no-compile", "--disable-pip-version-check", "--find-links",
                    str(folder), *where,
                    *(f"{d}=={versions[d]}" for d in dists)], check=True, capture_output=True, text=True)


def pinned_from_wheels(folder: Path) -> dict[str, str]:
    """Distribution -> version, read off the wheels' file names (a wheel's name is NAME-VERSION-TAGS.whl)."""
    found = {}
    for wheel in folder.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        found[name.lower().replace("_", "-")] = version
    return found


def bitsandbytes_libraries(site: Path) -> list[str]:
    return sorted(p.name for p in (site / "bitsandbytes").glob("libbitsandbytes_*"))


def check_fresh_venv(folder: Path) -> dict[str, Any]:
    """Install every carried wheel into a new, empty venv and read back what got installed."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-venv-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        python = venv / "bin" / "python"
        pip_install(folder, list(CARRIED), python=python)
        probe = ("import importlib.metadata as m, json, sysconfig; print(json.dumps({'site': sysconfig.get_paths()"
                 "['purelib'], 'versions': {d: m.version(d) for d in %r}}))" % list(CARRIED))
        found = json.loads(subprocess.run([str(python), "-c", probe], check=True, capture_output=True,
                                          text=True).stdout)
        libraries = bitsandbytes_libraries(Path(found["site"]))
        # The GPU machine's Python: pip finds a wheel of each for it (a dry run: this Python cannot install them).
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--no-index", "--no-deps",
                        "--disable-pip-version-check", "--find-links", str(folder), "--only-binary=:all:",
                        "--python-version", TARGET_PYTHON, "--target", str(Path(tmp) / "target"),
                        *(f"{d}=={v}" for d, v in pinned_from_wheels(folder).items())],
                       check=True, capture_output=True, text=True)
    return {"ok": found["versions"] == pinned_from_wheels(folder), "python_" + TARGET_PYTHON: "resolves",
            "installed": found["versions"],
            "bitsandbytes_libraries": libraries, "wheels_mb": round(folder_mb(folder), 1),
            "seconds": round(time.perf_counter() - started, 1)}


def install_missing(folder: Path, site: Path) -> dict[str, Any]:
    """pip --target the carried wheels whose module this Python lacks; returns what was installed."""
    missing = [d for d, module in CARRIED.items() if importlib.util.find_spec(module) is None]
    if missing:
        pip_install(folder, missing, target=site)
    return {"installed": missing, "site": str(site),
            "bitsandbytes_libraries": bitsandbytes_libraries(site) if "bitsandbytes" in missing else []}


def bnb_cuda_override(torch_cuda: str | None, libraries: list[str]) -> str | None:
    """BNB_CUDA_VERSION for the carried library nearest below torch's CUDA (same major), if the exact one is not
    carried; None when it is, or when none fits."""
    if not torch_cuda or not libraries:
        return None
    wanted = torch_cuda.replace(".", "")
    carried = sorted(int(m.group(1)) for m in map(re.compile(r"cuda(\d+)\.").search, libraries) if m)
    if int(wanted) in carried:
        return None
    fits = [c for c in carried if c < int(wanted) and str(c)[:-1] == wanted[:-1]]
    return str(fits[-1]) if fits else None


# ---- the parts, each run by a child process: `--part NAME` writes its figures as JSON on stdout's last line ----

def part_gpu_tests(args: argparse.Namespace) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory(prefix="gpu-check-tests-") as tmp:
        report = Path(tmp) / "junit.xml"
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q",
                               "-p", "no:cacheprovider", f"--junitxml={report}"], cwd=ROOT, capture_output=True,
                              text=True)
        if not report.exists():
            raise RuntimeError(f"pytest exited {done.returncode} without a report: {done.stdout[-1500:]}")
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "exit_code": done.returncode, "tail": done.stdout[-1500:]}


def part_train(args: argparse.Namespace) -> dict[str, Any]:
    sizes = (["--shape", "tiny", "--device", "cpu", "--samples", "16", "--seq-len", "128", "--steps", "2"]
             if args.smoke else
             ["--shape", "llama3-8b", "--seq-len", "2048", "--samples", str(args.train_samples), "--steps", "8"])
    done = subprocess.run([sys.executable, "-m", "bench.gpu_qlora", *sizes, "--warmup-steps", "1"], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"bench.gpu_qlora exited {done.returncode}: {done.stderr[-1500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"table": done.stderr.strip().splitlines()[-6:], **result}


def loaded_model(cfg: Any, smoke: bool) -> tuple[Any, Any]:
    """The 8B-shaped Llama, random weights, decoder linears in 4-bit NF4, with a LoRA adapter, for inference."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, set_seed

    from bench.gpu_qlora import SHAPES, quantize_decoder_linears
    from llm_trainer.modeling import lora_config

    set_seed(0)
    device, dtype = (torch.device("cpu"), torch.float32) if smoke else (torch.device("cuda"), torch.bfloat16)
    config = LlamaConfig(**SHAPES["tiny" if smoke else "llama3-8b"], tie_word_embeddings=False)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=cfg.model.attn_implementation)
    quantize_decoder_linears(model.model, dtype, device)
    model.is_loaded_in_4bit = True
    return get_peft_model(model, lora_config(cfg.lora)).eval(), device


def _memory(device: Any, reset: bool = False) -> dict[str, float]:
    import torch

    if device.type != "cuda":
        return {}
    if reset:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return {"peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20}


def part_eval_memory(args: argparse.Namespace) -> dict[str, Any]:
    """BaseEvaluator.loss_metrics (the evaluate steps' loss pass) over packed 2,048-token blocks, at the Trainer's
    per_device_eval_batch_size and at evaluation.batch_size; an out-of-memory is a figure, not a failure."""
    import datasets
    import torch

    from bench.gpu_qlora import SHAPES, make_samples
    from llm_trainer.config import load_config
    from llm_trainer.data.packing import pack_dataset
    from llm_trainer.data.tokenization import TOKENIZED_FEATURES
    from llm_trainer.evaluation.base import build_evaluator

    cfg = load_config(CONFIGS, ["data.max_seq_length=128"] if args.smoke else [])
    model, device = loaded_model(cfg, args.smoke)
    seq = cfg.data.max_seq_length
    batches = {"per_device_eval_batch_size": cfg.training.per_device_eval_batch_size,
               "evaluation.batch_size": cfg.evaluation.batch_size}
    vocab = SHAPES["tiny" if args.smoke else "llama3-8b"]["vocab_size"]
    samples = make_samples(6 * max(batches.values()), seq, round(700 * min(1.0, seq / 2048)), vocab, 0)
    blocks, _ = pack_dataset(datasets.Dataset.from_list(samples, features=TOKENIZED_FEATURES), seq)
    model_mb = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None
    result: dict[str, Any] = {"max_seq_length": seq, "model_mb": model_mb}
    for name, size in batches.items():
        rows = blocks.select(range(min(len(blocks), 2 * size)))  # two batches
        spec = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"batch_size": size})})
        base = _memory(device, reset=True)
        started = time.perf_counter()
        try:
            metrics = build_evaluator(spec).loss_metrics(model, _Pad(), rows)
            entry = {"loss_tokens": metrics["loss_tokens"], "eval_loss": metrics["eval_loss"], "oom": False}
        except torch.OutOfMemoryError as exc:
            entry = {"oom": True, "error": str(exc).splitlines()[0]}
        entry.update(batch_size=size, blocks=len(rows), seconds=time.perf_counter() - started,
                     before_mb=base.get("peak_allocated_mb"), **_memory(device))
        if "peak_reserved_mb" in entry:
            entry["fits_24gb_card"] = not entry["oom"] and entry["peak_reserved_mb"] <= CARD_24GB_MIB
        result[name] = entry
    return result


class _Pad:
    pad_token_id = 0


def part_generation(args: argparse.Namespace) -> dict[str, Any]:
    """model.generate, greedy with the KV cache, every row exactly --gen-tokens new tokens, batch
    evaluation.batch_size, prompts of 256 random tokens; after an 8-token warm-up."""
    import torch

    from llm_trainer.config import load_config

    cfg = load_config(CONFIGS)
    model, device = loaded_model(cfg, args.smoke)
    batch, new = cfg.evaluation.batch_size, (8 if args.smoke else args.gen_tokens)
    ids = torch.randint(0, model.config.vocab_size, (batch, 256), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
    run = lambda n: model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,  # noqa: E731
                                   use_cache=True, pad_token_id=0)
    with torch.no_grad():
        run(8)
        _memory(device, reset=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        out = run(new)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    generated = int(out[:, ids.shape[1]:].numel())
    return {"batch_size": batch, "prompt_tokens": ids.shape[1], "new_tokens_per_row": new,
            "generated_tokens": generated, "seconds": seconds, "tokens_per_s": generated / seconds,
            "ms_per_step": 1000 * seconds / new, **_memory(device)}


PART_FUNCTIONS = {"gpu_tests": part_gpu_tests, "train": part_train, "eval_memory": part_eval_memory,
                  "generation": part_generation}


# ---- the orchestration ----

def run_part(name: str, args: argparse.Namespace, env: dict[str, str], seconds: float) -> dict[str, Any]:
    started = time.perf_counter()
    command = [sys.executable, "-m", "bench.gpu_check", "--part", name, "--gen-tokens", str(args.gen_tokens),
               "--train-samples", str(args.train_samples), *(["--smoke"] if args.smoke else [])]
    # Its own process group: at the budget, its children (pytest's, bench.gpu_qlora) go too, and the GPU's memory.
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=seconds)
        lines = stdout.strip().splitlines()
        if proc.returncode or not lines:
            result = {"ok": False, "error": f"exit {proc.returncode}: {stderr.strip()[-2000:]}"}
        else:
            result = json.loads(lines[-1])
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        result = {"ok": False, "error": f"over its budget of {seconds:.0f} s"}
    return {**result, "seconds_total": round(time.perf_counter() - started, 1), "budget_s": round(seconds)}


def child(args: argparse.Namespace) -> None:
    try:
        result = {"ok": True, **PART_FUNCTIONS[args.part](args)}
    except Exception as exc:  # the parent records it; the other parts still run
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    print(json.dumps(result, default=str), flush=True)


def environment() -> dict[str, Any]:
    import torch

    versions = {}
    for dist in ("torch", "transformers", "peft", "accelerate", "tokenizers", "pyarrow", *CARRIED):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {"python": sys.version.split()[0], "torch_cuda": torch.version.cuda, "cuda": torch.cuda.is_available(),
            "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "versions": versions}


def summary(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [f"{env['device_name'] or 'cpu (smoke)'}, torch {env['versions']['torch']} (CUDA {env['torch_cuda']}), "
             f"{result['seconds']:.0f} s"]
    for name, part in result["parts"].items():
        try:
            figure = _figure(name, part)
        except (KeyError, TypeError):  # e.g. bench.gpu_qlora's JSON changed: the figures are in the file anyway
            figure = "ok, see the JSON"
        lines.append(f"  {name:<12} {part['seconds_total']:>6.0f} s  {figure}")
    return "\n".join(lines)


def _figure(name: str, part: dict[str, Any]) -> str:
    if not part.get("ok"):
        return part["error"].splitlines()[0][:120] if part.get("error") else "not run"
    if name == "gpu_tests":
        return f"{part['passed']}/{part['tests']} passed, {part['skipped']} skipped"
    if name == "train":
        return "; ".join(f"{m}: {v['tokens_per_s']:,.0f} tok/s, MFU {v['mfu']:.3f}, {v['peak_memory_mb']:,.0f} MB"
                         for m, v in part["modes"].items() if m != "bare")
    if name == "eval_memory":
        return "; ".join(f"batch {e['batch_size']}: " + (
            "OOM" if e["oom"] else f"{e['peak_reserved_mb']:,.0f} MB reserved" if "peak_reserved_mb" in e
            else "ran (CPU: no memory figure)") for e in part.values() if isinstance(e, dict))
    return f"{part['tokens_per_s']:,.0f} tok/s (batch {part['batch_size']}, {part['ms_per_step']:.0f} ms/step)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.part:
        child(args)
        return 0
    if args.build_wheels:
        print(json.dumps(build_wheels(args.wheels, args.keep_cuda.split(","))))
        return 0
    started = time.perf_counter()
    env_info = environment()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not env_info["cuda"] and not args.smoke:
        print(f"No CUDA device here (torch {env_info['versions']['torch']}, CUDA build {env_info['torch_cuda']}): "
              "only checking that the carried wheels install into a fresh virtual environment.", flush=True)
        try:
            install = check_fresh_venv(args.wheels)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            install = {"ok": False, "error": str(exc) + (getattr(exc, "stderr", "") or "")[-1500:]}
        args.out.write_text(json.dumps({"cuda": False, "environment": env_info, "wheel_install": install}, indent=1))
        print(f"wheel install: {'ok' if install['ok'] else 'FAILED'} -> {args.out}")
        return 0 if install["ok"] else 1
    site = Path(tempfile.mkdtemp(prefix="gpu-check-site-"))
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                 "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result: dict[str, Any] = {"cuda": env_info["cuda"], "smoke": args.smoke, "environment": env_info, "parts": {},
                              "seconds": 0.0}
    try:
        result["install"] = install_missing(args.wheels, site)
        override = bnb_cuda_override(env_info["torch_cuda"], result["install"]["bitsandbytes_libraries"])
        if override:
            child_env["BNB_CUDA_VERSION"] = result["install"]["bnb_cuda_version"] = override
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        result["install"] = {"ok": False, "error": str(exc) + (getattr(exc, "stderr", "") or "")[-1500:]}
    try:
        for name in args.parts.split(","):
            left = TOTAL_S - (time.perf_counter() - started)
            result["parts"][name] = (run_part(name, args, child_env, min(PARTS[name][0], left)) if left > 10 else
                                     {"ok": False, "error": "no time left", "seconds_total": 0})
            result["seconds"] = time.perf_counter() - started
            args.out.write_text(json.dumps(result, indent=1, default=str))  # each part's figures kept as they come
    finally:
        shutil.rmtree(site, ignore_errors=True)
    print(summary(result), flush=True)
    print(f"-> {args.out}")
    return 0 if all(p.get("ok") for p in result["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
