"""Tokenizer and model loading, the 4-bit and LoRA configs, and the offline tiny Llama.

``model.base_model: tiny-llama`` builds a small Llama-architecture model and a byte-level BPE tokenizer
offline and deterministically, saves both with ``save_pretrained`` in the project cache, and from then
on everything loads through the same ``from_pretrained`` path as a Hub model, 4-bit included.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llm_trainer.config import LoraSettings, ModelConfig
from llm_trainer.errors import ConfigError
from llm_trainer.paths import cache_dir

BOS, EOS, EOT, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>"
SPECIAL_TOKENS = [BOS, EOS, "<|start_header_id|>", "<|end_header_id|>", EOT, PAD]
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
MAX_TOKENIZER_TEXTS = 50_000
TINY_BUILD_VERSION = "1"


def build_tiny_tokenizer(texts: Iterable[str], cfg: ModelConfig) -> Any:
    """Train (or reuse from the cache) a byte-level BPE tokenizer with a Llama-3-style chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [t for _, t in zip(range(MAX_TOKENIZER_TEXTS), texts)]
    digest = hashlib.sha256(json.dumps([TINY_BUILD_VERSION, cfg.tiny.model_dump(), corpus]).encode()).hexdigest()
    target = cache_dir("tiny-tokenizer") / digest[:16]
    if not target.exists():
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=cfg.tiny.vocab_size, special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        bpe.train_from_iterator(corpus, trainer)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe, bos_token=BOS, eos_token=EOT, pad_token=PAD,
            model_max_length=cfg.tiny.max_position_embeddings, chat_template=LLAMA3_CHAT_TEMPLATE,
        )
        _save_atomically(target, tokenizer.save_pretrained)
    return load_tokenizer(str(target), cfg)


def build_tiny_model(tokenizer: Any, cfg: ModelConfig, seed: int) -> Path:
    """Randomly initialise (or reuse) the tiny Llama for this tokenizer; returns its folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    digest = hashlib.sha256(f"{TINY_BUILD_VERSION}|{cfg.tiny.model_dump_json()}|{seed}|{vocab}".encode()).hexdigest()
    target = cache_dir("tiny-llama") / digest[:16]
    if not target.exists():
        config = LlamaConfig(
            vocab_size=len(tokenizer), **cfg.tiny.model_dump(exclude={"vocab_size"}),
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)

        def save(folder: str) -> None:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

        _save_atomically(target, save)
    return target


def load_tokenizer(name_or_path: str, cfg: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=cfg.revision,
                                                  trust_remote_code=cfg.trust_remote_code)
    except OSError as exc:
        raise ConfigError(f"model.base_model: cannot load tokenizer '{name_or_path}': {' '.join(str(exc).split())}")
    if cfg.chat_template:
        tokenizer.chat_template = cfg.chat_template
    if not tokenizer.chat_template:
        raise ConfigError(f"model.chat_template: tokenizer '{name_or_path}' has no chat template; set one")
    if tokenizer.pad_token is None:
        # Llama 3 ships no pad token; its reserved fine-tune pad token is the conventional choice.
        tokenizer.pad_token = PAD if PAD in tokenizer.get_vocab() else tokenizer.eos_token
    return tokenizer


def torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "auto": "auto"}[name]


def bnb_config(cfg: ModelConfig) -> Any:
    """BitsAndBytesConfig for 4-bit loading, or None for full-precision LoRA."""
    if not cfg.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=torch_dtype(cfg.bnb_4bit_compute_dtype),
    )


def lora_config(cfg: LoraSettings) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, bias=cfg.bias, task_type="CAUSAL_LM")


def load_model(name_or_path: str, cfg: ModelConfig, device_map: Any = None) -> Any:
    """The base model through ``from_pretrained``: 4-bit when configured, safetensors only."""
    import torch
    from transformers import AutoModelForCausalLM

    quantization = bnb_config(cfg)
    if device_map is None:
        device_map = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    dtype = torch_dtype(cfg.bnb_4bit_compute_dtype if quantization else cfg.dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
            quantization_config=quantization, dtype=dtype, device_map=device_map,
            attn_implementation=cfg.attn_implementation, use_safetensors=True,
        )
    except OSError as exc:
        raise ConfigError(f"model.base_model: cannot load '{name_or_path}': {' '.join(str(exc).split())}") from exc


def _save_atomically(target: Path, save: Any) -> None:
    """Write into a temporary sibling folder, then rename, so a crash never leaves half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save(str(staging))
        os.replace(staging, target)
    except OSError:
        if not target.exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_tokenizer(cfg: ModelConfig, train_split: Any) -> Any:
    """The base model's tokenizer; for tiny-llama, one trained on the train split's text."""
    if not cfg.is_tiny:
        return load_tokenizer(cfg.base_model, cfg)
    texts = (turn["content"] for batch in train_split.iter(batch_size=1000)
             for messages in batch["messages"] for turn in messages)
    return build_tiny_tokenizer(texts, cfg)


def resolve_base_model(cfg: ModelConfig, tokenizer: Any, seed: int) -> str:
    """What to pass to ``from_pretrained``: the Hub id or path, or the built tiny model's folder."""
    return str(build_tiny_model(tokenizer, cfg, seed)) if cfg.is_tiny else cfg.base_model
