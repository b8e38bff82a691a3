"""The offline tiny Llama: a byte-level BPE tokenizer and a small Llama, built deterministically.

``model.base_model: tiny-llama`` trains a BPE tokenizer (Llama 3 special tokens and chat template) on
the train split's text, then initialises a small Llama and pre-trains it briefly on that plain text (no
chat template), so that, like a real base model, it knows the language but not the chat format or the
final-answer convention that fine-tuning teaches. Both are cached on disk by content hash and saved with
``save_pretrained``, so they load through the same ``from_pretrained`` path as a Hub model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llm_trainer.config import ModelConfig
from llm_trainer.errors import ConfigError
from llm_trainer.fsutil import write_dir_atomically
from llm_trainer.modeling import load_tokenizer
from llm_trainer.paths import cache_dir

BOS, EOS, EOT, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>"
SPECIAL_TOKENS = [BOS, EOS, "<|start_header_id|>", "<|end_header_id|>", EOT, PAD]
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
MAX_CORPUS_TEXTS = 50_000
BUILD_VERSION = "2"
PRETRAIN = {"block": 128, "batch": 16, "epochs": 3, "lr": 3e-3}


def build_tiny_tokenizer(texts: Iterable[str], cfg: ModelConfig) -> Any:
    """Train (or reuse from the cache) the BPE tokenizer; its text is kept to pre-train the model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(dict.fromkeys(t for _, t in zip(range(MAX_CORPUS_TEXTS), texts)))  # unique, in order
    digest = hashlib.sha256(json.dumps([BUILD_VERSION, cfg.tiny.model_dump(), corpus]).encode()).hexdigest()
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
        write_dir_atomically(target, tokenizer.save_pretrained)
    tokenizer = load_tokenizer(str(target), cfg)
    corpus_file = cache_dir("tiny-corpus") / f"{vocab_digest(tokenizer)}.json"
    if not corpus_file.exists():
        corpus_file.write_text(json.dumps(corpus))
    return tokenizer


def build_tiny_model(tokenizer: Any, cfg: ModelConfig, seed: int) -> Path:
    """Initialise and briefly pre-train (or reuse) the tiny Llama for this tokenizer; returns its folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = vocab_digest(tokenizer)
    digest = hashlib.sha256(f"{BUILD_VERSION}|{cfg.tiny.model_dump_json()}|{seed}|{vocab}|{PRETRAIN}".encode())
    target = cache_dir("tiny-llama") / digest.hexdigest()[:16]
    if target.exists():
        return target
    corpus_file = cache_dir("tiny-corpus") / f"{vocab}.json"
    if not corpus_file.exists():
        raise ConfigError("model.base_model: tiny-llama's pre-training text is not cached on this machine; "
                          "run the process pipeline here first")
    config = LlamaConfig(
        vocab_size=len(tokenizer), **cfg.tiny.model_dump(exclude={"vocab_size"}),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        _pretrain(model, tokenizer, json.loads(corpus_file.read_text()), seed)

    def save(folder: str) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return write_dir_atomically(target, save)


def vocab_digest(tokenizer: Any) -> str:
    return hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()[:16]


def _pretrain(model: Any, tokenizer: Any, corpus: list[str], seed: int) -> None:
    """Plain next-token training on the corpus text, cut into fixed blocks (no chat template)."""
    import torch

    end = tokenizer.convert_tokens_to_ids(EOS)
    stream = [t for ids in tokenizer(corpus, add_special_tokens=False)["input_ids"]
              for t in [tokenizer.bos_token_id, *ids, end]]
    block, batch = PRETRAIN["block"], PRETRAIN["batch"]
    blocks = torch.tensor(stream[: len(stream) // block * block]).view(-1, block)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["lr"], weight_decay=0.0)
    model.train()
    for _ in range(PRETRAIN["epochs"]):
        order = torch.randperm(len(blocks), generator=generator)
        for start in range(0, len(blocks), batch):
            inputs = blocks[order[start:start + batch]]
            model(input_ids=inputs, labels=inputs).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
