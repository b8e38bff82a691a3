"""bench/gpu_qlora.py (the GPU QLoRA benchmark) runs end to end on a CPU at the tiny shape."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from conftest import ROOT


def test_gpu_benchmark_script_runs_on_cpu_at_tiny_shape():
    completed = subprocess.run(
        [sys.executable, "-m", "bench.gpu_qlora", "--shape", "tiny", "--device", "cpu", "--steps", "3",
         "--warmup-steps", "1", "--seq-len", "64", "--batch-size", "2", "--lr", "1e-2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    assert result["device"] == "cpu" and result["compute_dtype"] == "torch.float32"
    assert result["steps"] == 3 and result["seq_len"] == 64 and result["batch_size"] == 2
    assert result["tokens_per_s"] > 0 and result["train_s"] > 0
    assert result["matmul_tflops"] > 0
    assert 0 < result["mfu"] < 1 and 0 < result["mfu_non_embedding"] < result["mfu"]
    assert result["peak_memory_mb"] > 0
    # every decoder linear layer is 4-bit and carries a LoRA adapter; only the adapters train
    assert result["linear4bit_layers"] == result["lora_4bit_layers"] == 7 * result["layers"]
    assert 0 < result["trainable_params"] < result["params"]
    assert result["loss_finite"] and math.isfinite(result["loss_first"]) and math.isfinite(result["loss_last"])
    assert result["lora_abs_change"] > 0
