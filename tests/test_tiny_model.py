"""The offline tiny model: built deterministically from the training text, cached on disk, reloadable."""

from __future__ import annotations

import json

from conftest import QUICKSTART, SAMPLE_DATA


def _build(home, monkeypatch, texts, seed=42):
    from llm_trainer.config import load_config
    from llm_trainer.tiny_model import build_tiny_model, build_tiny_tokenizer

    monkeypatch.setenv("LLM_TRAINER_HOME", str(home))
    cfg = load_config(QUICKSTART).model
    tokenizer = build_tiny_tokenizer(texts, cfg)
    return tokenizer, build_tiny_model(tokenizer, cfg, seed)


def test_same_text_and_seed_give_the_same_tokenizer_and_weights_and_the_cache_is_reused(tmp_path, monkeypatch):
    rows = [json.loads(line) for line in SAMPLE_DATA.read_text().splitlines()[:300]]
    texts = [t for r in rows for t in (r["question"], r["responses"][0]["response"])]
    tok_a, model_a = _build(tmp_path / "a", monkeypatch, texts)
    tok_b, model_b = _build(tmp_path / "b", monkeypatch, texts)
    assert model_a != model_b and model_a.name == model_b.name  # same cache key in two separate homes
    assert tok_a.get_vocab() == tok_b.get_vocab()
    weights = "model.safetensors"
    assert (model_a / weights).read_bytes() == (model_b / weights).read_bytes()

    stamp = (model_a / weights).stat().st_mtime_ns
    _, again = _build(tmp_path / "a", monkeypatch, texts)
    assert again == model_a and (again / weights).stat().st_mtime_ns == stamp  # reused, not rebuilt

    _, other_seed = _build(tmp_path / "a", monkeypatch, texts, seed=7)
    assert other_seed != model_a and (other_seed / weights).read_bytes() != (model_a / weights).read_bytes()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(model_a)
    assert reloaded.get_vocab() == tok_a.get_vocab() and reloaded.chat_template == tok_a.chat_template
    assert AutoModelForCausalLM.from_pretrained(model_a).config.num_hidden_layers == 2


def _long_texts(count: int, seed: int = 0) -> list[str]:
    """natural_reasoning-shaped texts: ~55-word questions and ~400-word responses (about 3.7 KB a row)."""
    import random

    rng = random.Random(seed)
    vocabulary = [f"{stem}{suffix}" for stem in ("integr", "deriv", "matri", "prob", "vect", "ener", "tens", "limi")
                  for suffix in ("al", "ate", "ion", "ity", "ive", "es", "ing", "ed")]
    texts = []
    for _ in range(count):
        texts.append(" ".join(rng.choice(vocabulary) for _ in range(55)) + "?")
        texts.append(" ".join(rng.choice(vocabulary) for _ in range(400)) + ".")
    return texts


def test_row_sample_is_bounded_by_its_budget_and_keeps_rows_whole_and_in_order():
    from llm_trainer.tiny_model import sample_rows

    texts = _long_texts(2000)
    rows = [texts[i:i + 2] for i in range(0, len(texts), 2)]  # question and answer together
    budget = 60_000
    sample_small, sample_large = sample_rows(rows[:200], budget), sample_rows(rows, budget)
    longest = max(sum(map(len, row)) for row in rows)
    for sample in (sample_small, sample_large):
        assert budget <= sum(len(t) for row in sample for t in row) < budget + longest
        assert all(row in rows for row in sample)  # whole rows
        positions = [rows.index(row) for row in sample]
        assert positions == sorted(positions)  # in the data's order
    chosen = {tuple(row) for row in sample_large}
    assert {tuple(row) for row in sample_rows(list(reversed(rows)), budget)} == chosen  # order does not choose
    assert sample_rows(rows + rows, budget) == sample_large  # duplicates count once
    assert sample_rows(rows[:3], budget) == rows[:3]  # under the budget: everything


def test_tiny_build_cost_does_not_grow_with_the_data(tmp_path, monkeypatch):
    """Counted, not timed: the tokenizer's text and the pre-training tokens stop at their budgets."""
    from llm_trainer.config import load_config
    from llm_trainer.tiny_model import build_info, build_tiny_model, build_tiny_tokenizer

    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))
    budgets = ["model.tiny.tokenizer_max_chars=40000", "model.tiny.pretrain_max_tokens=4096"]
    cfg = load_config(QUICKSTART, budgets).model
    infos = []
    for rows in (100, 1000):
        tokenizer = build_tiny_tokenizer(_long_texts(rows), cfg)
        infos.append(build_info(build_tiny_model(tokenizer, cfg, seed=1)))
    for info in infos:
        assert info["pretrain_tokens"] == 4096  # 2 batches of 16 x 128
        assert 40_000 <= info["corpus_chars"] < 40_000 + 4000 and info["build_seconds"] > 0
    more = load_config(QUICKSTART, [*budgets[:1], "model.tiny.pretrain_max_tokens=2048"]).model
    folder = build_tiny_model(tokenizer, more, seed=1)  # the budget is part of the cache key
    assert build_info(folder)["pretrain_tokens"] == 2048


def test_pretraining_makes_the_configured_passes_and_ends_every_text_with_the_stop_token(tmp_path, monkeypatch):
    """Each text ends with the tokenizer's eos token (what generation stops on; a base model that never saw it
    rambles past every answer), and ``model.tiny.pretrain_epochs`` passes each see every block once."""
    from types import SimpleNamespace

    import torch

    from llm_trainer.config import load_config
    from llm_trainer.tiny_model import EOS, _pretrain, build_tiny_tokenizer

    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))
    texts = _long_texts(6)
    tokenizer = build_tiny_tokenizer(texts, load_config(QUICKSTART).model)
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, labels):
            seen.append(input_ids.clone())
            return SimpleNamespace(loss=self.weight.sum())

    trained = _pretrain(Recorder(), tokenizer, texts, seed=0, max_tokens=10**9, epochs=3)
    blocks = torch.cat(seen)
    per_pass = len(blocks) // 3
    assert per_pass > 4 and trained == blocks.numel() == 3 * per_pass * 128
    passes = [sorted(map(tuple, blocks[i * per_pass:(i + 1) * per_pass].tolist())) for i in range(3)]
    assert passes[0] == passes[1] == passes[2]  # every pass: all blocks once, in its own order
    stream = blocks[:per_pass].flatten().tolist()
    assert tokenizer.eos_token == "<|eot_id|>" and tokenizer.convert_tokens_to_ids(EOS) not in stream
    assert stream.count(tokenizer.eos_token_id) in (len(texts) - 1, len(texts))  # the last may be cut off
    ends = [i for i, token in enumerate(stream) if token == tokenizer.eos_token_id]
    assert all(stream[i + 1] == tokenizer.bos_token_id for i in ends if i + 1 < len(stream))  # then the next text
