"""Config -> BitsAndBytesConfig / LoraConfig / precision, for the shipped Llama 3 config (no weights loaded)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT


@pytest.fixture
def reasoning():
    from llm_trainer.config import load_config

    return load_config(ROOT / "configs" / "reasoning.yaml")


def test_bnb_config_is_nf4_with_double_quantisation_and_bf16_compute(reasoning, monkeypatch):
    from llm_trainer.modeling import bnb_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    quantization = bnb_config(reasoning.model)
    assert quantization.load_in_4bit and not quantization.load_in_8bit
    assert quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.bnb_4bit_use_double_quant is True
    assert quantization.bnb_4bit_compute_dtype == torch.bfloat16
    assert bnb_config(reasoning.model.model_copy(update={"load_in_4bit": False})) is None


def test_lora_config_follows_the_yaml(reasoning):
    from llm_trainer.modeling import lora_config

    lora = lora_config(reasoning.lora)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (reasoning.lora.r, reasoning.lora.lora_alpha,
                                                            reasoning.lora.lora_dropout)
    assert lora.target_modules == reasoning.lora.target_modules == "all-linear"
    assert lora.task_type == "CAUSAL_LM"


@pytest.mark.parametrize(("capability", "device", "expected"),
                         [((7, 5), "Tesla T4", "float16"), ((7, 0), "Tesla V100", "float16"),
                          ((8, 0), "A100", "bfloat16"), ((9, 0), "H100", "bfloat16")])
def test_gpu_without_native_bfloat16_computes_in_float16(reasoning, monkeypatch, caplog, capability, device, expected):
    """A T4 or V100 only emulates bf16 (torch.cuda.is_bf16_supported() says yes there): only the device
    capability is mocked, and the project's own check decides. The 4-bit compute dtype and the Trainer's mixed
    precision follow, and the fallback is said once."""
    from llm_trainer import modeling
    from llm_trainer.modeling import bnb_config, compute_dtype
    from llm_trainer.training.qlora import QLoraTrainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: device)
    monkeypatch.setattr(modeling, "_warned_fp16", set())
    assert compute_dtype(reasoning.model) == expected
    assert bnb_config(reasoning.model).bnb_4bit_compute_dtype == getattr(torch, expected)
    assert caplog.text.count("has no native bfloat16") == (expected == "float16")

    # TrainingArguments refuses bf16/fp16 without a real GPU, so look at what the trainer would pass.
    import transformers

    captured = {}
    monkeypatch.setattr(transformers, "TrainingArguments", lambda **kwargs: captured.update(kwargs) or SimpleNamespace())
    QLoraTrainer(reasoning)._training_arguments(ROOT / "unused", has_eval=True)
    assert (captured["bf16"], captured["fp16"]) == (expected == "bfloat16", expected == "float16")
    assert captured["use_cpu"] is False


def test_float32_is_kept_on_a_cpu(monkeypatch):
    from llm_trainer.config import load_config
    from llm_trainer.modeling import compute_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    assert compute_dtype(cfg.model) == cfg.model.bnb_4bit_compute_dtype
    assert compute_dtype(cfg.model.model_copy(update={"load_in_4bit": False, "dtype": "float32"})) == "float32"


def test_flash_attention_without_its_package_or_a_gpu_is_one_line_before_loading(monkeypatch):
    import subprocess
    import sys

    from llm_trainer.config import load_config
    from llm_trainer.errors import ConfigError
    from llm_trainer.modeling import check_attention, load_model

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", ["model.attn_implementation=flash_attention_2"]).model
    with pytest.raises(ConfigError, match=r"^model.attn_implementation: flash_attention_2 needs .*a CUDA GPU here; "
                                          r"use sdpa \(the default\)$"):
        load_model("/nonexistent/model", cfg)  # refused before from_pretrained looks for the folder
    check_attention(cfg.model_copy(update={"attn_implementation": "sdpa"}))

    result = subprocess.run([sys.executable, "run_pipeline.py", "train", "--config", "configs/quickstart.yaml",
                             "--set", "model.attn_implementation=flash_attention_2"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: model.attn_implementation: flash_attention_2")
    assert "Traceback" not in result.stderr
