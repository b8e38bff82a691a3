"""A token budget over the context window shrinks the reply, never the prompt, and says so (`use`, the library,
the server's response); a prompt that alone fills the window is a 400 from the server; OpenAI fields the server
cannot honour are a 400 naming the field, and the harmless ones are accepted."""

from __future__ import annotations

import logging

import pytest

from llm_trainer.serving import Batcher, Sampling
from llm_trainer.serving_api import ApiError, ServeSettings, create_app, parse_chat_request
from test_serve import KEY, StandIn, assert_openai_error, call, in_process_server, user
from helpers.cli import use_cli

QUESTION = "What is 12 + 30?"


def near_the_window(tokenizer, window: int, room: int, system: str = "") -> str:
    """A question whose chat prompt leaves between ``room`` and ``room + 2`` tokens of the window."""
    from llm_trainer.inference import encode_prompts

    head = [{"role": "system", "content": system}] if system else []

    def length(words: int) -> int:
        (ids,), _ = encode_prompts(tokenizer, [head + user("seven " * words + QUESTION)], 1 << 62)
        return len(ids)

    per_word = length(101) - length(100)
    words = (window - room - length(0)) // per_word
    assert window - room - 2 <= length(words) <= window - room, (per_word, length(words))
    return "seven " * words + QUESTION


def test_a_budget_over_the_window_shrinks_the_reply_not_the_prompt(tiny_fp32, caplog):
    from llm_trainer.inference import context_window, generate_batch, stream_reply

    model, tokenizer = tiny_fp32.model, tiny_fp32.tokenizer
    window = context_window(model, tokenizer)
    long = user(near_the_window(tokenizer, window, room=6))
    with caplog.at_level(logging.WARNING, logger="llm_trainer.inference"):
        got_long, got_short = generate_batch(model, tokenizer, [long, user("Hi")], max_new_tokens=40, batch_size=2)
    assert not got_long.prompt_truncated and got_long.prompt_tokens + got_long.max_new_tokens == window
    assert got_long.max_new_tokens <= 8 and got_long.new_tokens <= got_long.max_new_tokens
    assert got_short.max_new_tokens == 40  # its neighbour's shrunk budget is not its own: generated apart
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"max_new_tokens 40 does not fit the {window}-token context window after 1 of the " \
        "2 prompts" in lines[0], lines
    streamed = "".join(stream_reply(model, tokenizer, long, max_new_tokens=window + 952)).strip()
    assert streamed == got_long.text


def test_use_with_a_budget_over_the_window_says_so_in_one_line(tiny_adapter, tiny_fp32):
    from llm_trainer.inference import context_window

    window = context_window(tiny_fp32.model, tiny_fp32.tokenizer)
    prompt = near_the_window(tiny_fp32.tokenizer, window, room=6, system=tiny_fp32.cfg.data.system_prompt)
    result = use_cli(tiny_adapter, "--prompt", prompt, "--max-new-tokens", "3000")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "max_new_tokens 3000 does not fit the" in warnings[0], result.stderr[-3000:]
    assert "tokens (the prompt is kept whole)" in warnings[0] and "keeping the last" not in result.stderr


def test_the_server_shrinks_max_tokens_to_the_window_and_tells_the_client():
    engine = StandIn()
    batcher = Batcher(engine, max_batch=4, wait_ms=1)
    settings = ServeSettings(model_id="m", api_key=KEY, max_tokens_cap=4096)
    try:
        with in_process_server(create_app(batcher, settings)) as port:
            status, body = call(port, "POST", "/v1/chat/completions",
                                {"messages": user("three words here"), "max_tokens": 3000})
            assert status == 200 and engine.samplings[-1].max_tokens == 64 - 7, body
            (warning,) = body["warnings"]
            assert "max_tokens 3000 does not fit the 64-token context window after the 7-token prompt" in warning
            status, text = call(port, "POST", "/v1/chat/completions",
                                {"messages": user("three words here"), "max_tokens": 3000, "stream": True})
            assert status == 200 and '"warnings": ["max_tokens 3000 does not fit' in text
            status, body = call(port, "POST", "/v1/chat/completions", {"messages": user("hi"), "max_tokens": 50})
            assert status == 200 and "warnings" not in body and engine.samplings[-1].max_tokens == 50
            status, body = call(port, "POST", "/v1/chat/completions", {"messages": user("w " * 60), "max_tokens": 1})
            assert_openai_error(status, body, 400, "context_length_exceeded")
            assert "64" in body["error"]["message"] and body["error"]["param"] == "messages"
    finally:
        batcher.close()


def test_the_real_engine_measures_the_prompt_and_its_reply_ends_at_the_window(tiny_fp32):
    from llm_trainer.inference import context_window
    from llm_trainer.serving import TransformersEngine
    from llm_trainer.serving_api import fit_window

    engine = TransformersEngine(tiny_fp32.model, tiny_fp32.tokenizer)
    window = context_window(tiny_fp32.model, tiny_fp32.tokenizer)
    conversation = user(near_the_window(tiny_fp32.tokenizer, window, room=5))
    sampling, warnings = fit_window(engine, conversation, Sampling(3000))
    assert 5 <= sampling.max_tokens <= 7 and len(warnings) == 1
    (completion,) = engine.generate([conversation], sampling)
    assert completion.prompt_tokens + sampling.max_tokens == window  # the whole prompt, not one token
    assert completion.finish_reason == ("length" if completion.completion_tokens == sampling.max_tokens else "stop")


@pytest.mark.parametrize(("field", "value"), [
    ("logprobs", True), ("top_logprobs", 3), ("response_format", {"type": "json_object"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}), ("n", 2),
    ("tools", [{"type": "function", "function": {"name": "f"}}]), ("tool_choice", "required"),
    ("logit_bias", {"42": 100}), ("presence_penalty", 0.5), ("frequency_penalty", -1), ("stop", ["\n"]),
    ("audio", {"voice": "alloy"}), ("modalities", ["text", "audio"]), ("prediction", {"type": "content"}),
])
def test_fields_that_change_the_reply_are_refused_naming_the_field(field, value):
    settings = ServeSettings(model_id="m")
    with pytest.raises(ApiError) as caught:
        parse_chat_request({"messages": user("hi"), field: value}, settings)
    assert caught.value.status == 400 and caught.value.param == field and f"'{field}'" in caught.value.message


def test_harmless_fields_are_accepted_and_seed_only_with_greedy_decoding():
    settings = ServeSettings(model_id="m")
    harmless = {"user": "u-1", "metadata": {"k": "v"}, "store": False, "service_tier": "auto", "seed": 7,
                "parallel_tool_calls": True, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0.0,
                "response_format": {"type": "text"}, "tool_choice": "none", "tools": [], "n": 1, "stop": None,
                "modalities": ["text"], "logit_bias": {}}
    conversation, sampling, _, _ = parse_chat_request({"messages": user("hi"), **harmless}, settings)
    assert conversation == user("hi") and sampling.temperature == 0
    with pytest.raises(ApiError) as caught:
        parse_chat_request({"messages": user("hi"), "seed": 7, "temperature": 0.8}, settings)
    assert caught.value.status == 400 and caught.value.param == "seed"
