"""`use --merge` on the CPU, into the base model's original weights or into the NF4 weights that were evaluated."""

from __future__ import annotations

import json

import pytest
import torch


def logits(model, ids):
    with torch.no_grad():
        return model.eval()(ids).logits.float()


def test_dequantized_merge_answers_as_the_evaluated_4bit_model(tiny_fp32, tiny_adapter, tmp_path):
    """The quickstart trains and evaluates on the NF4 base (compute float32). A merge into the dequantized NF4
    weights reproduces the evaluated model's logits; a merge into the original weights reproduces the
    full-precision base + adapter, which the 4-bit model only approximates. The marker says which it is."""
    from transformers import AutoModelForCausalLM

    from llm_trainer.chat import MERGED_MARKER, merge_adapter
    from llm_trainer.inference import load_for_inference

    cfg = tiny_fp32.cfg.model.model_copy(update={"load_in_4bit": True, "bnb_4bit_compute_dtype": "float32"})
    ids = torch.tensor([[1, 50, 60, 70, 80, 90, 100]])
    evaluated = logits(load_for_inference(cfg, tiny_adapter.base_model, tiny_adapter.path), ids)
    full = logits(load_for_inference(tiny_fp32.cfg.model, tiny_adapter.base_model, tiny_adapter.path), ids)

    merged = {}
    for weights in ("dequantized", "original"):
        folder = merge_adapter(cfg, tiny_adapter.base_model, tiny_adapter.path, tmp_path / weights, weights=weights)
        merged[weights] = logits(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), ids)
        marker = json.loads((folder / MERGED_MARKER).read_text())
        assert marker["weights"] == ("the NF4 weights that were evaluated, dequantized" if weights == "dequantized"
                                     else "the base model's original weights (not the NF4 weights that were "
                                     "evaluated)")
    quantization_gap = (full - evaluated).abs().max().item()
    assert quantization_gap > 1e-3  # NF4 rounding changes the answers' logits: the choice matters
    assert (merged["dequantized"] - evaluated).abs().max().item() < quantization_gap / 20
    assert (merged["original"] - full).abs().max().item() < quantization_gap / 20


def test_merge_weights_is_checked():
    from llm_trainer.chat import merged_from
    from llm_trainer.errors import UserError

    with pytest.raises(UserError, match="--merge-weights: 'nf8' is none of original, dequantized"):
        merged_from(None, "nf8")
