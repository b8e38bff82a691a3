"""Gradient accumulation is exact: 8 blocks as 8 x 1, 4 x 2 or 1 x 8 give the same LoRA update and gradient norm.

configs/reasoning.yaml accumulates 8 micro-batches: that is only the same as one large batch if the loss is
averaged over all label tokens of all micro-batches (packed blocks hold unequal numbers of label tokens), not
averaged per micro-batch and then again over micro-batches. Plain SGD (no momentum, no clipping) makes the
update proportional to the gradient, so any mis-scaling shows; fp32 and no dropout make it deterministic."""

from __future__ import annotations

import pytest
import torch

from conftest import ROOT


@pytest.fixture(scope="module")
def data():
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor
    from llm_trainer.base_model import prepare_tokenizer

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [
        "data.max_seq_length=256", "model.load_in_4bit=false", "model.dtype=float32", "lora.lora_dropout=0.0",
        "training.max_steps=1", "training.optim=sgd", "training.learning_rate=0.5", "training.warmup_steps=0",
        "training.lr_scheduler_type=constant", "training.max_grad_norm=1.0e9", "training.eval_steps=1000",
        "training.save_steps=1000", "training.logging_steps=1", "training.gradient_checkpointing=false"])
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(cfg.model, processed["train"])
    tokenized, _ = processor.tokenize(processed, tokenizer)
    tokenized["validation"] = tokenized["validation"].select([])  # no evaluation: only the one step matters
    return cfg, tokenized, tokenizer


def one_step(data, tmp_path, batch: int, accumulation: int):
    from llm_trainer.training import build_trainer

    cfg, tokenized, tokenizer = data
    training = cfg.training.model_copy(update={"per_device_train_batch_size": batch,
                                               "gradient_accumulation_steps": accumulation})
    result = build_trainer(cfg.model_copy(update={"training": training})).train(
        tokenized, tokenizer, tmp_path / f"{batch}x{accumulation}")
    lora = {n: p.detach().clone() for n, p in result.model.named_parameters() if "lora_" in n}
    grad_norm = next(h["grad_norm"] for h in result.history if "grad_norm" in h)
    return lora, grad_norm, result.metrics["trained_tokens"]


def test_accumulated_micro_batches_equal_one_large_batch(data, tmp_path):
    labels = [int(sum(1 for t in row if t != -100)) for row in data[1]["train"]["labels"][:64]]
    assert len(set(labels)) > 10  # packed blocks with unequal label counts: the case that needs exact averaging
    reference, reference_norm, tokens = one_step(data, tmp_path, 8, 1)
    lora_b = [p for n, p in reference.items() if "lora_B" in n]
    assert all(p.abs().max() > 1e-4 for p in lora_b)  # the step moved every adapter
    for batch, accumulation in ((4, 2), (1, 8)):
        lora, grad_norm, trained = one_step(data, tmp_path, batch, accumulation)
        assert trained == tokens  # the same 8 blocks
        assert grad_norm == pytest.approx(reference_norm, rel=1e-5)
        for name, tensor in reference.items():
            torch.testing.assert_close(lora[name], tensor, rtol=1e-5, atol=1e-7, msg=f"{batch}x{accumulation} {name}")
