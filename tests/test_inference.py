"""Batched generation: left padding gives the same greedy answers as one prompt at a time; long prompts are
cut from the left with a warning."""

from __future__ import annotations

import logging

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor
    from llm_trainer.inference import load_for_inference
    from llm_trainer.modeling import prepare_tokenizer, resolve_base_model

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", ["model.load_in_4bit=false", "model.dtype=float32"])
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(cfg.model, processed["train"])
    model = load_for_inference(cfg.model, resolve_base_model(cfg.model, tokenizer, cfg.seed))
    return cfg, model, tokenizer


def conversation(text):
    return [{"role": "user", "content": text}]


def test_batched_generation_equals_one_at_a_time(model_and_tokenizer):
    from llm_trainer.inference import generate_batch

    _, model, tokenizer = model_and_tokenizer
    prompts = [conversation(q) for q in ["What is 2 + 3?", "A train covers 120 km in 2 hours. What is its speed?",
                                         "Solve for x: 3x + 4 = 19", "What is the perimeter of a 4 m by 5 m room?"]]
    batched = generate_batch(model, tokenizer, prompts, max_new_tokens=24, batch_size=4)
    single = [generate_batch(model, tokenizer, [p], max_new_tokens=24, batch_size=1)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(0 < g.new_tokens <= 24 for g in batched)


def test_overlong_prompt_is_cut_from_the_left_with_a_warning(model_and_tokenizer, caplog):
    from llm_trainer.inference import encode_prompts

    _, _, tokenizer = model_and_tokenizer
    long_prompt = conversation("word " * 3000 + "What is 2 + 2?")
    with caplog.at_level(logging.WARNING, logger="llm_trainer.inference"):
        encoded, truncated = encode_prompts(tokenizer, [long_prompt, conversation("hi")], max_prompt_tokens=100)
    assert truncated == [True, False]
    assert len(encoded[0]) == 100
    assert tokenizer.decode(encoded[0]).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "keeping the last 100" in caplog.text
