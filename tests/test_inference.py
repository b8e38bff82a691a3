"""Batched generation: left padding gives the same greedy answers as one prompt at a time; long prompts are
cut from the left with a warning."""

from __future__ import annotations

import logging

import pytest
import torch




@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_fp32):
    return tiny_fp32.cfg, tiny_fp32.model, tiny_fp32.tokenizer


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


def test_generation_over_the_context_window_keeps_the_prompt_end(model_and_tokenizer, caplog):
    """Through generate_batch and stream_reply: the model's context window decides the cut, and the answers
    of a too-long prompt are those of its last (window - max_new_tokens) tokens."""
    from llm_trainer.inference import context_window, encode_prompts, generate_batch, stream_reply

    cfg, model, tokenizer = model_and_tokenizer
    window = context_window(model, tokenizer)
    assert window == cfg.model.tiny.max_position_embeddings
    long_prompt = conversation("seven " * (2 * window) + "What is 2 + 2?")
    with caplog.at_level(logging.WARNING, logger="llm_trainer.inference"):
        long, short = generate_batch(model, tokenizer, [long_prompt, conversation("hi")], max_new_tokens=8,
                                     batch_size=2)
    assert (long.prompt_truncated, short.prompt_truncated) == (True, False)
    assert f"keeping the last {window - 8}" in caplog.text
    (kept,), _ = encode_prompts(tokenizer, [long_prompt], window - 8)
    with torch.no_grad():
        direct = model.generate(input_ids=torch.tensor([kept]), attention_mask=torch.ones(1, len(kept), dtype=torch.long),
                                max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected = direct[0, len(kept):].tolist()
    assert long.new_tokens <= 8
    assert tokenizer.decode(expected[: long.new_tokens], skip_special_tokens=True).strip() == long.text
    streamed = "".join(stream_reply(model, tokenizer, long_prompt, max_new_tokens=8)).strip()
    assert streamed == long.text


def test_answers_cut_at_the_token_cap_are_counted_and_warned_about(tiny_fp32, scripted_model, caplog):
    """A model that never ends its answers: every answer hits evaluation.max_new_tokens, the share is reported
    per model (hit_token_cap), and one warning line says to raise the cap; answers that end in time are not
    counted."""
    from llm_trainer.evaluation.base import Answers, BaseEvaluator
    from llm_trainer.inference import Generation

    class Asker(BaseEvaluator):
        def evaluate(self, *args):
            raise NotImplementedError

    cfg = tiny_fp32.cfg.model_copy(update={"evaluation": tiny_fp32.cfg.evaluation.model_copy(
        update={"max_samples": 3, "max_new_tokens": 6, "batch_size": 2})})
    with caplog.at_level(logging.WARNING, logger="llm_trainer.evaluation.base"):
        answers = Asker(cfg).answer_test_questions(scripted_model, tiny_fp32.tokenizer, tiny_fp32.processed["test"])
    assert answers.speed()["hit_token_cap"] == 1.0 and answers.speed()["generated_tokens"] == 18
    warnings = [r.getMessage() for r in caplog.records if "max_new_tokens" in r.getMessage()]
    assert warnings == ["evaluation.max_new_tokens: 3 of 3 answers (100%) stopped at the 6-token cap before the "
                        "model ended them; one cut before its final answer is scored wrong: raise "
                        "evaluation.max_new_tokens"]
    ended = [Generation("4", 2, max_new_tokens=6)] * 19 + [Generation("cut", 6, max_new_tokens=6)]
    assert Answers(None, [], ended, 1.0).speed()["hit_token_cap"] == 0.05
