"""bench/gpu_check.py, the device check for a GPU machine: its parts, and its no-CUDA path end to end (the carried
wheels, slimmed, install offline into a fresh venv). Its CUDA path runs only on a GPU machine (README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

from bench import gpu_check

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_the_parts_are_the_four_the_check_promises_within_eight_minutes():
    assert list(gpu_check.PARTS) == list(gpu_check.PART_FUNCTIONS) == ["gpu_tests", "train", "eval_memory",
                                                                       "generation"]
    assert sum(seconds for seconds, _ in gpu_check.PARTS.values()) <= gpu_check.TOTAL_S < 8 * 60
    args = gpu_check.parse_args([])
    assert args.parts.split(",") == list(gpu_check.PARTS) and not args.smoke


@pytest.mark.parametrize("torch_cuda, libraries, expected", [
    ("13.0", ["libbitsandbytes_cuda128.so", "libbitsandbytes_cuda130.so"], None),  # carried: bitsandbytes finds it
    ("12.9", ["libbitsandbytes_cuda126.so", "libbitsandbytes_cuda128.so", "libbitsandbytes_cuda130.so"], "128"),
    ("13.2", ["libbitsandbytes_cuda128.so", "libbitsandbytes_cuda130.so"], "130"),
    ("12.4", ["libbitsandbytes_cuda126.so", "libbitsandbytes_cuda130.so"], None),  # nothing older of CUDA 12
    (None, ["libbitsandbytes_cuda130.so"], None),
])
def test_bitsandbytes_library_nearest_below_torchs_cuda(torch_cuda, libraries, expected):
    assert gpu_check.bnb_cuda_override(torch_cuda, libraries) == expected


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """The repository's .whl/ when `make gpu-wheels` filled it, else built here (needs the package index)."""
    if set(gpu_check.pinned_from_wheels(gpu_check.WHEELS)) >= set(gpu_check.CARRIED):
        return gpu_check.WHEELS
    folder = tmp_path_factory.mktemp("whl")
    built = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--build-wheels", "--wheels", str(folder)],
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    if built.returncode:
        pytest.skip(f"could not download the wheels (no package index?): {built.stderr.strip()[-300:]}")
    return folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the GPU parts instead")
def test_without_cuda_it_says_so_and_installs_the_carried_wheels_into_a_fresh_venv(wheels, tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(out), "--wheels", str(wheels)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].startswith("No CUDA device here")
    result = json.loads(out.read_text())
    assert result["cuda"] is False and result["environment"]["torch_cuda"] is None
    install = result["wheel_install"]
    assert install["ok"] is True and install["python_" + gpu_check.TARGET_PYTHON] == "resolves"
    assert install["installed"] == gpu_check.pinned()
    # slimmed: the CPU library and the kept CUDA ones, nothing else (the full wheel has 30 libraries, 125 MB)
    assert install["bitsandbytes_libraries"] == ["libbitsandbytes_cpu.so"] + [
        f"libbitsandbytes_cuda{v}.so" for v in gpu_check.KEEP_CUDA]
    assert install["wheels_mb"] < 32


@pytest.mark.slow
def test_smoke_runs_the_evaluation_and_generation_parts_on_the_cpu_into_one_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke", "--out", str(out),
                           "--parts", "gpu_tests,eval_memory,generation"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)  # about 50 s on 2 cores
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    parts = result["parts"]
    assert list(parts) == ["gpu_tests", "eval_memory", "generation"] and all(p["ok"] for p in parts.values())
    assert parts["gpu_tests"]["tests"] == parts["gpu_tests"]["skipped"] > 0  # no CUDA: skipped, with the reason
    for name in ("per_device_eval_batch_size", "evaluation.batch_size"):
        entry = parts["eval_memory"][name]
        assert entry["oom"] is False and entry["loss_tokens"] > 0 and entry["blocks"] == 2 * entry["batch_size"]
    from llm_trainer.config import load_config

    overlay = load_config([ROOT / "configs" / "reasoning.yaml", ROOT / "configs" / "cards" / "24gb.yaml"])
    assert parts["eval_memory"]["evaluation.batch_size"]["batch_size"] == overlay.evaluation.batch_size == 32
    generation = parts["generation"]
    assert generation["generated_tokens"] == generation["batch_size"] * generation["new_tokens_per_row"]
    assert generation["tokens_per_s"] > 0
    assert "generation" in done.stdout and str(out) in done.stdout  # the table


def test_the_gpu_side_installs_with_pip_target_only_what_python_lacks(wheels, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    lacking = {"bitsandbytes", "pydantic_core"}  # as if this Python lacked these two
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in lacking else find_spec(name, *a))
    installed = gpu_check.install_missing(wheels, tmp_path)
    assert installed["installed"] == ["bitsandbytes", "pydantic-core"]
    assert {p.name.split("-")[0] for p in tmp_path.glob("*.dist-info")} == {"bitsandbytes", "pydantic_core"}
    assert "libbitsandbytes_cuda130.so" in installed["bitsandbytes_libraries"]
