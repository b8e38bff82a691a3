"""bench/gpu_qlora.py (the GPU QLoRA benchmark) runs all three modes end to end on a CPU at the tiny shape."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SAMPLES, SEQ_LEN, BATCH, STEPS, WARMUP = 32, 128, 2, 4, 1


def test_gpu_benchmark_script_runs_all_modes_on_cpu_at_tiny_shape():
    completed = subprocess.run(
        [sys.executable, "-m", "bench.gpu_qlora", "--shape", "tiny", "--device", "cpu", "--samples", str(SAMPLES),
         "--seq-len", str(SEQ_LEN), "--batch-size", str(BATCH), "--steps", str(STEPS),
         "--warmup-steps", str(WARMUP), "--lr", "1e-2", "--chunked-loss", "true",
         "--peak-tflops", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,  # about 15-20 s on 2 cores
        # One thread: on 2 cores shared with other jobs, 2 spinning OpenMP threads made it 3-6x slower.
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])  # stdout: the JSON line only
    assert "project / baseline label tok/s" in completed.stderr  # the table

    assert result["device"] == "cpu" and result["compute_dtype"] == "torch.float32"
    assert result["seq_len"] == SEQ_LEN and result["batch_size"] == BATCH and result["warmup_steps"] == WARMUP
    assert result["gradient_checkpointing"] and result["peak_tflops"] == 2
    from transformers import LlamaConfig

    from bench.gpu_qlora import SHAPES, make_samples
    from llm_trainer.memory import ModelDims, train_flops_per_token

    tiny = ModelDims.from_config(LlamaConfig(**SHAPES["tiny"]))
    assert result["flops_per_token"] == train_flops_per_token(tiny, SEQ_LEN)  # lm_head 4x, attention included
    assert result["matmul_tflops"] > 0 and result["matmul_repeats"] >= 10
    assert 0 < result["params_non_embedding"] < result["params"] and 0 < result["trainable_params"] < result["params"]
    assert set(result["modes"]) == {"project", "baseline", "bare"}

    # The label tokens, counted here from the samples themselves (same generator, same seed).
    samples = make_samples(SAMPLES, SEQ_LEN, result["samples"]["mean_length_target"], SHAPES["tiny"]["vocab_size"],
                           result["samples"]["seed"])
    label_tokens = sum(sum(1 for label in s["labels"] if label != -100) for s in samples)
    tokens = sum(len(s["input_ids"]) for s in samples)
    assert 0 < label_tokens < tokens and max(len(s["input_ids"]) for s in samples) <= SEQ_LEN
    assert result["samples"]["label_tokens"] == label_tokens and result["samples"]["tokens"] == tokens

    project, baseline, bare = (result["modes"][m] for m in ("project", "baseline", "bare"))
    # One timed pass over the same samples: the same label tokens (project: the Trainer's own count) and tokens.
    assert project["label_tokens"] == baseline["label_tokens"] == label_tokens
    assert project["tokens"] == baseline["tokens"] == tokens
    assert project["steps"] == math.ceil(project["blocks"] / BATCH) and project["blocks"] < SAMPLES
    # The real path (the chunked loss), and the baseline at the packed side's real tokens per micro-batch.
    assert project["chunked_loss"] == 1 and project["batch_size"] == BATCH
    assert baseline["batch_size"] > BATCH and baseline["steps"] == math.ceil(SAMPLES / baseline["batch_size"])
    per_sample = tokens / SAMPLES
    assert abs(baseline["batch_size"] * per_sample - project["real_tokens_per_micro_batch"]) <= per_sample
    assert bare["steps"] == STEPS and bare["label_tokens"] == bare["tokens"] == STEPS * BATCH * SEQ_LEN
    # Packing pads less than padding each batch to its longest sample; bare rows are all full.
    assert 0 <= project["padding_share"] < baseline["padding_share"] < 1 and bare["padding_share"] == 0

    for name, mode in result["modes"].items():
        assert mode["label_tokens"] > 0 and mode["train_s"] > 0, name
        assert mode["label_tokens_per_s"] > 0 and mode["tokens_per_s"] >= mode["label_tokens_per_s"], name
        for key in ("mfu_vs_matmul", "mfu_vs_peak", "mfu_6n"):
            assert 0 < mode[key] < 1, (name, key)
        assert mode["mfu_vs_matmul"] != mode["mfu_6n"], name  # lm_head counted 4x, not 6x; attention counted
        assert mode["mfu_vs_peak"] == pytest.approx(mode["mfu_vs_matmul"] * result["matmul_tflops"] / 2), name
        assert mode["peak_memory_mb"] > 0, name
        # every decoder linear layer is 4-bit and carries a LoRA adapter; only the adapters train
        assert mode["linear4bit_layers"] == mode["lora_4bit_layers"] == 7 * result["layers"], name
        assert mode["lora_abs_change"] > 0 and mode["base_4bit_unchanged"] is True, name
        assert mode["loss_finite"] and math.isfinite(mode["loss_first"]) and math.isfinite(mode["loss_last"]), name
