"""The real GPU path, a few steps of it: runs wherever a CUDA device is present (`pytest -m gpu`), skipped with
the reason elsewhere. bf16 or fp16 by the device's capability, paged 8-bit AdamW, bitsandbytes' CUDA 4-bit
kernels, gradient checkpointing, a resumed run equal to an uninterrupted one, and a memory bound."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ROOT

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")]

OVERRIDES = ["data.max_seq_length=256", "training.max_steps=8", "training.save_steps=4", "training.eval_steps=4",
             "training.logging_steps=1", "training.per_device_train_batch_size=8", "training.optim=paged_adamw_8bit",
             "training.gradient_checkpointing=true", "model.bnb_4bit_compute_dtype=bfloat16",
             "training.num_processes=1"]


def prepared(extra=()):
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor
    from llm_trainer.base_model import prepare_tokenizer

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [*OVERRIDES, *extra])
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(cfg.model, processed["train"])
    tokenized, _ = processor.tokenize(processed, tokenizer)
    return cfg, tokenized, tokenizer


def test_real_gpu_path_trains_in_the_devices_precision_with_cuda_4bit_kernels(tmp_path):
    import bitsandbytes as bnb

    from llm_trainer.modeling import compute_dtype, gpu_has_bfloat16
    from llm_trainer.training import build_trainer

    cfg, tokenized, tokenizer = prepared()
    expected = "bfloat16" if gpu_has_bfloat16() else "float16"
    assert compute_dtype(cfg.model) == expected
    torch.cuda.reset_peak_memory_stats()
    result = build_trainer(cfg).train(tokenized, tokenizer, tmp_path)
    model = result.model
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.device.type == "cuda" for m in layers)
    assert all(m.compute_dtype == getattr(torch, expected) for m in layers)
    assert model.base_model.model.is_gradient_checkpointing
    assert result.metrics["eval_loss"] < result.metrics["eval_loss_before"]
    # the tiny model in 4-bit with batch 8 x 256 tokens: far below a gigabyte
    assert 0 < torch.cuda.max_memory_reserved() < 2 * 2**30
    state = json.loads(next((tmp_path / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["global_step"] in (4, 8)


def test_resumed_run_equals_the_uninterrupted_one_on_the_gpu(tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from llm_trainer.training import build_trainer, qlora

    cfg, tokenized, tokenizer = prepared()
    whole = build_trainer(cfg).train(tokenized, tokenizer, tmp_path / "whole")

    class StopAfterFirstCheckpoint(TrainerCallback):  # an interruption with the same config (same LR schedule)
        def on_save(self, args, state, control, **kwargs):
            control.should_training_stop = True

    callbacks = qlora.QLoraTrainer._callbacks
    monkeypatch.setattr(qlora.QLoraTrainer, "_callbacks", lambda self: [*callbacks(self), StopAfterFirstCheckpoint()])
    stopped = build_trainer(cfg).train(tokenized, tokenizer, tmp_path / "resumed")
    assert stopped.metrics["global_step"] == 4
    monkeypatch.setattr(qlora.QLoraTrainer, "_callbacks", callbacks)
    resumed = build_trainer(cfg).train(tokenized, tokenizer, tmp_path / "resumed")  # continues from step 4
    assert resumed.metrics["global_step"] == whole.metrics["global_step"] == 8
    a = load_file(whole.adapter.path / "adapter_model.safetensors")
    b = load_file(resumed.adapter.path / "adapter_model.safetensors")
    for name in a:
        torch.testing.assert_close(b[name].float(), a[name].float(), rtol=1e-3, atol=1e-4)
