"""Tokenizer and model loading through ``from_pretrained``, and the 4-bit and LoRA configs.

The offline tiny model (``model.base_model: tiny-llama``, see tiny_model.py) is saved to a folder first,
so it goes through exactly this path too, 4-bit included.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from llm_trainer.adapter_folder import check_adapter_folder
from llm_trainer.config import LoraSettings, ModelConfig
from llm_trainer.errors import ConfigError

logger = logging.getLogger(__name__)


def load_tokenizer(name_or_path: str, cfg: ModelConfig) -> Any:
    """The tokenizer with the configured chat template and a pad token; an error without a template."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=cfg.revision,
                                                  trust_remote_code=cfg.trust_remote_code)
    except OSError as exc:
        raise ConfigError(f"model.base_model: cannot load tokenizer '{name_or_path}': {' '.join(str(exc).split())}")
    tokenizer.llm_trainer_trust_remote_code = cfg.trust_remote_code  # the tokenizer materializer records it
    if cfg.chat_template:
        tokenizer.chat_template = cfg.chat_template
    if not tokenizer.chat_template:
        raise ConfigError(f"model.chat_template: tokenizer '{name_or_path}' has no chat template; set one")
    if tokenizer.pad_token is None:
        # Llama 3 ships no pad token; its reserved fine-tune pad token is the conventional choice.
        pad = "<|finetune_right_pad_id|>"
        tokenizer.pad_token = pad if pad in tokenizer.get_vocab() else tokenizer.eos_token
    return tokenizer


def torch_dtype(name: str) -> Any:
    """The torch dtype that a config's dtype name stands for ('auto' stays 'auto')."""
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "auto": "auto"}[name]


def gpu_has_bfloat16() -> bool:
    """Native bfloat16: compute capability 8.0 (Ampere) or newer. ``torch.cuda.is_bf16_supported()`` also counts
    emulation, which a T4 or V100 has: there bf16 runs without tensor cores and SDPA falls back to its math
    kernel, so it is not used here."""
    import torch

    return torch.cuda.get_device_capability()[0] >= 8


_warned_fp16: set[str] = set()


def compute_dtype(cfg: ModelConfig) -> str:
    """The configured compute dtype (4-bit compute dtype, or weights dtype without 4-bit); float16 instead of
    bfloat16 on a GPU without native bfloat16 (a T4 or V100, e.g. Colab's free tier)."""
    import torch

    name = cfg.bnb_4bit_compute_dtype if cfg.load_in_4bit else cfg.dtype
    if name == "bfloat16" and torch.cuda.is_available() and not gpu_has_bfloat16():
        device = torch.cuda.get_device_name()
        if device not in _warned_fp16:  # asked by the 4-bit config, the weights and the Trainer: say it once
            _warned_fp16.add(device)
            logger.warning("this GPU (%s) has no native bfloat16: computing in float16 instead", device)
        return "float16"
    return name


def cuda_problem() -> str | None:
    """None when a CUDA device is usable, else what torch sees, in a few words."""
    import torch

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as exc:  # noqa: BLE001 - its message is the diagnosis (no driver, driver too old, ...)
        return f"CUDA cannot start: {' '.join(str(exc).split())[:200]}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "torch sees no CUDA device" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")


def check_device(cfg: ModelConfig) -> None:
    """A real model on a CPU means hours of training or running out of RAM: one line before anything loads,
    unless ``model.allow_cpu`` (the tiny model always runs on a CPU)."""
    if cfg.is_tiny or cfg.allow_cpu:
        return
    problem = cuda_problem()
    if problem:
        raise ConfigError(f"model.base_model: '{cfg.base_model}' needs a CUDA GPU, but {problem}; set "
                          "model.allow_cpu: true to run it on the CPU anyway")


def free_accelerator_memory() -> None:
    """After a model is dropped: 4-bit layers hold reference cycles, so its memory waits for a full garbage
    collection; then the CUDA cache goes back to the driver for the next step in this process."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def visible_gpus() -> int:
    """How many CUDA GPUs this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def bnb_config(cfg: ModelConfig, fsdp: bool = False) -> Any:
    """BitsAndBytesConfig for 4-bit loading, or None for full-precision LoRA. Under FSDP the packed 4-bit weights
    are stored in the compute dtype, so that FSDP can shard them like the other parameters (peft's FSDP-QLoRA)."""
    if not cfg.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    compute = torch_dtype(compute_dtype(cfg))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute,
        **({"bnb_4bit_quant_storage": compute} if fsdp else {}),
    )


def lora_config(cfg: LoraSettings) -> Any:
    """peft's LoraConfig from the ``lora`` section, for a causal LM."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, bias=cfg.bias, task_type="CAUSAL_LM")


def check_attention(cfg: ModelConfig) -> None:
    """flash_attention_2 needs the flash-attn package and a CUDA GPU where the model loads; say so in one
    line before anything is loaded, not from deep inside ``from_pretrained``."""
    if cfg.attn_implementation != "flash_attention_2":
        return
    import importlib.util

    import torch

    missing = [what for what, ok in (("the flash-attn package (pip install flash-attn)",
                                      importlib.util.find_spec("flash_attn") is not None),
                                     ("a CUDA GPU", torch.cuda.is_available())) if not ok]
    if missing:
        raise ConfigError(f"model.attn_implementation: flash_attention_2 needs {' and '.join(missing)} here; "
                          "use sdpa (the default)")


def load_model(name_or_path: str, cfg: ModelConfig, device_map: Any = None, fsdp: bool = False) -> Any:
    """The base model through ``from_pretrained``: 4-bit when configured, safetensors only; on GPU 0 (or the CPU)
    unless ``device_map`` says otherwise. ``fsdp``: the 4-bit weights stored for FSDP to shard (bnb_config)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_device(cfg)
    check_attention(cfg)
    quantization = bnb_config(cfg, fsdp=fsdp)
    if device_map is None:
        device_map = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    dtype = torch_dtype(compute_dtype(cfg))
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
            quantization_config=quantization, dtype=dtype, device_map=device_map,
            attn_implementation=cfg.attn_implementation, use_safetensors=True,
        )
    except OSError as exc:
        raise ConfigError(f"model.base_model: cannot load '{name_or_path}': {' '.join(str(exc).split())}") from exc


def attach_adapter(model: Any, adapter_path: str | Path) -> Any:
    """The base model with a saved LoRA adapter attached, once the folder passed its checks (safetensors only:
    peft would fall back to a pickle-based adapter_model.bin)."""
    from peft import PeftModel

    check_adapter_folder(adapter_path)
    return PeftModel.from_pretrained(model, str(adapter_path))
