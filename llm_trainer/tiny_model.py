"""The offline tiny Llama: a byte-level BPE tokenizer and a small Llama, built deterministically.

``model.base_model: tiny-llama`` trains a BPE tokenizer (Llama 3 special tokens and chat template) on
the train split's text, then initialises a small Llama and pre-trains it briefly on that plain text (no
chat template), so that, like a real base model, it knows the language but not the chat format or the
final-answer convention that fine-tuning teaches. Both are cached on disk by content hash and saved with
``save_pretrained``, so they load through the same ``from_pretrained`` path as a Hub model.

The build has fixed budgets that do not grow with the user's data: the tokenizer trains on at most
``model.tiny.tokenizer_max_chars`` characters and the model pre-trains on at most
``model.tiny.pretrain_max_tokens`` tokens, both from rows sampled by hash (so more data adds no work beyond
reading it once).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import time
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
BUILD_VERSION = "4"
PRETRAIN = {"block": 128, "batch": 16, "lr": 3e-3}
BUILD_INFO = "build_info.json"


def sample_rows(rows: Iterable[str | list[str]], max_chars: int) -> list[list[str]]:
    """The rows with the smallest hashes, just enough to reach ``max_chars`` characters, in their order.

    One pass; memory bounded by the budget; the choice depends only on each row's text, not on how many rows
    there are beyond the budget (a bottom-k sketch). A row is a question with its answer: kept together, in order,
    so that pre-training sees each answer after its question."""
    heap: list[tuple[int, int, list[str]]] = []  # (-hash, position, texts): the largest hash kept is on top
    kept: set[int] = set()
    total = 0
    for position, row in enumerate(rows):
        texts = [row] if isinstance(row, str) else list(row)
        key = int.from_bytes(hashlib.blake2b("\x00".join(texts).encode(), digest_size=8).digest(), "big")
        if key in kept or (total >= max_chars and key > -heap[0][0]):
            continue
        heapq.heappush(heap, (-key, position, texts))
        kept.add(key)
        total += sum(map(len, texts))
        while total - sum(map(len, heap[0][2])) >= max_chars:
            negative, _, dropped = heapq.heappop(heap)
            kept.discard(-negative)
            total -= sum(map(len, dropped))
    return [texts for _, _, texts in sorted(heap, key=lambda item: item[1])]


def build_tiny_tokenizer(rows: Iterable[str | list[str]], cfg: ModelConfig) -> Any:
    """Train (or reuse from the cache) the BPE tokenizer on a hash sample of the rows (each a text or a list of
    texts, such as a conversation's turns); the sampled text is kept to pre-train the model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = tiny_corpus(rows, cfg)
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


def tiny_corpus(rows: Iterable[str | list[str]], cfg: ModelConfig) -> list[str]:
    """The distinct texts of the hash-sampled rows: what the tokenizer trains on and the model pre-trains on."""
    return list(dict.fromkeys(t for texts in sample_rows(rows, cfg.tiny.tokenizer_max_chars) for t in texts))


def build_tiny_model(tokenizer: Any, cfg: ModelConfig, seed: int,
                     rows: Iterable[str | list[str]] | None = None) -> Path:
    """Initialise and briefly pre-train (or reuse) the tiny Llama for this tokenizer; returns its folder, which
    also holds ``build_info.json`` (build seconds, pre-training tokens, corpus characters). The pre-training text
    is the corpus the tokenizer cached; where that cache is empty (another machine), it is sampled again from
    ``rows``, the same rows the tokenizer was built from."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    target = tiny_model_folder(tokenizer, cfg, seed)
    if target.exists():
        return target
    vocab = vocab_digest(tokenizer)
    corpus_file = cache_dir("tiny-corpus") / f"{vocab}.json"
    if corpus_file.exists():
        corpus = json.loads(corpus_file.read_text())
    elif rows is not None:
        corpus = tiny_corpus(rows, cfg)
    else:
        raise ConfigError("model.base_model: tiny-llama's pre-training text is not cached on this machine; "
                          "pass the train split it was built from")
    config = LlamaConfig(
        vocab_size=len(tokenizer), **cfg.tiny.architecture(),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    started = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        tokens = _pretrain(model, tokenizer, corpus, seed, cfg.tiny.pretrain_max_tokens, cfg.tiny.pretrain_epochs)
    info = {"build_seconds": round(time.perf_counter() - started, 2), "pretrain_tokens": tokens,
            "corpus_texts": len(corpus), "corpus_chars": sum(map(len, corpus))}

    def save(folder: str) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (Path(folder) / BUILD_INFO).write_text(json.dumps(info))

    return write_dir_atomically(target, save)


def tiny_model_folder(tokenizer: Any, cfg: ModelConfig, seed: int) -> Path:
    """Where the tiny model for this tokenizer, ``model.tiny`` settings and seed is cached (built or not)."""
    vocab = vocab_digest(tokenizer)
    digest = hashlib.sha256(f"{BUILD_VERSION}|{cfg.tiny.model_dump_json()}|{seed}|{vocab}|{PRETRAIN}".encode())
    return cache_dir("tiny-llama") / digest.hexdigest()[:16]


def vocab_digest(tokenizer: Any) -> str:
    """A short hash of the tokenizer's vocabulary, keying the tiny model and corpus caches."""
    return hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()[:16]


def build_info(model_dir: str | Path) -> dict[str, Any]:
    """What building a tiny model cost (empty for other models)."""
    path = Path(model_dir) / BUILD_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def _pretrain(model: Any, tokenizer: Any, corpus: list[str], seed: int, max_tokens: int, epochs: int) -> int:
    """Plain next-token training on the corpus text, cut into fixed blocks (no chat template), for up to
    ``epochs`` epochs and at most ``max_tokens`` tokens; returns the tokens trained on. Each text ends with the
    tokenizer's eos token, the one generation stops on: a base model that has never seen it rambles past every
    answer, and so would a LoRA fine-tune of it (peft's all-linear leaves lm_head's row for it untrained)."""
    import torch

    end = tokenizer.eos_token_id
    stream = [t for ids in tokenizer(corpus, add_special_tokens=False)["input_ids"]
              for t in [tokenizer.bos_token_id, *ids, end]]
    block, batch = PRETRAIN["block"], PRETRAIN["batch"]
    blocks = torch.tensor(stream[: len(stream) // block * block]).view(-1, block)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["lr"], weight_decay=0.0)
    model.train()
    trained = 0
    for _ in range(epochs):
        order = torch.randperm(len(blocks), generator=generator)
        for start in range(0, len(blocks), batch):
            inputs = blocks[order[start:start + batch]][: max(0, (max_tokens - trained) // block)]
            if len(inputs) == 0:
                model.eval()
                return trained
            model(input_ids=inputs, labels=inputs).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            trained += inputs.numel()
    model.eval()
    return trained
