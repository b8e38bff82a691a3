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
