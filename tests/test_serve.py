"""`serve`: an OpenAI-compatible API for the fine-tuned model.

Fast tests: the batching queue and the HTTP layer with a stand-in engine (in-process server on a free loopback
port), request parsing, the vLLM wiring with a stand-in `vllm` module, and `--engine vllm` without vLLM.
End-to-end (slow): `run_pipeline.py serve` in a subprocess on the tiny model with a LoRA adapter, called with
the official `openai` client; the plain reply equals llm_trainer.inference.generate_batch's greedy answer.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llm_trainer.serving import Batcher, Completion, Job, Sampling
from llm_trainer.serving_api import ApiError, ServeSettings, create_app, parse_chat_request
from runner.serve import running_server

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
FP32 = ["--set", "model.load_in_4bit=false", "--set", "model.dtype=float32"]
KEY = "sk-test-0123456789"
CAP = 24
QUESTION = "What is 12 + 30?"


class StandIn:
    """An engine that answers 'echo: <last user message>'; `gate` holds every generation until set. Its context
    window is 64 tokens; a prompt has 4 + one token per word of the last message."""

    window = 64

    def __init__(self, gate: threading.Event | None = None):
        self.gate, self.batches, self.samplings = gate, [], []

    def measure(self, conversation):
        return 4 + len(conversation[-1]["content"].split()), self.window

    def generate(self, conversations, sampling):
        if self.gate is not None:
            self.gate.wait(30)
        self.batches.append([c[-1]["content"] for c in conversations])
        self.samplings.append(sampling)
        if any(c[-1]["content"] == "fail" for c in conversations):
            raise RuntimeError("boom")
        return [Completion(f"echo: {c[-1]['content']}", 5, 2, "stop") for c in conversations]

    def stream(self, conversation, sampling):
        yield "echo:"
        yield f" {conversation[-1]['content']}"
        yield Completion(f"echo: {conversation[-1]['content']}", 5, 2, "length")


def user(text):
    return [{"role": "user", "content": text}]


def wait_all(jobs_done, timeout=30):
    for event in jobs_done:
        assert event.wait(timeout)


def test_requests_that_arrive_together_are_generated_in_one_batch():
    engine = StandIn()
    batcher = Batcher(engine, max_batch=4, wait_ms=300)
    results, events, pieces = {}, [], []

    def job(text, sampling=Sampling(8), stream=False):
        done = threading.Event()
        events.append(done)

        def on_done(completion, error):
            results[text] = completion or error
            done.set()
        batcher.submit(Job(user(text), sampling, on_done, pieces.append if stream else None))

    try:
        for i in range(6):
            job(f"q{i}")
        job("other settings", Sampling(8, temperature=0.5))
        job("streamed", stream=True)
        wait_all(events)
        job("fail")
        wait_all(events)
        job("after the failure")
        wait_all(events)
    finally:
        batcher.close()
    # up to max_batch per batch, in arrival order; other settings and the streamed request on their own
    assert engine.batches[:3] == [["q0", "q1", "q2", "q3"], ["q4", "q5"], ["other settings"]]
    assert pieces == ["echo:", " streamed"] and results["streamed"].finish_reason == "length"
    assert all(results[f"q{i}"].text == f"echo: q{i}" for i in range(6))
    assert isinstance(results["fail"], RuntimeError)  # the batch's error goes to its requests...
    assert results["after the failure"].text == "echo: after the failure"  # ...and the worker goes on
    assert batcher.stats()["largest_batch"] == 4


def test_request_fields_system_prompt_and_caps():
    settings = ServeSettings(model_id="m", system_prompt="Be brief.", max_tokens_cap=32, default_max_tokens=16)
    conversation, sampling, stream, usage = parse_chat_request({"model": "m", "messages": user("hi")}, settings)
    assert conversation == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert sampling == Sampling(16, 0.0, 1.0) and not stream and not usage
    own = [{"role": "system", "content": "Mine."}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    conversation, sampling, stream, usage = parse_chat_request(
        {"messages": own, "max_tokens": 10_000, "temperature": 0.7, "stream": True,
         "stream_options": {"include_usage": True}}, settings)
    assert conversation == [{"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}]
    assert sampling == Sampling(32, 0.7, 1.0) and stream and usage
    bad = [({"model": "other", "messages": user("hi")}, 404), ({"messages": []}, 400), ([1, 2], 400),
           ({"messages": [{"role": "tool", "content": "x"}]}, 400), ({"messages": user("hi"), "max_tokens": 0}, 400),
           ({"messages": user("hi"), "temperature": "hot"}, 400), ({"messages": user("hi"), "n": 2}, 400),
           ({"messages": [{"role": "assistant", "content": "x"}]}, 400),
           ({"messages": user("hi"), "stop": ["\n"]}, 400),
           ({"messages": user("hi"), "tools": [{"type": "function"}]}, 400)]
    for body, status in bad:
        with pytest.raises(ApiError) as caught:
            parse_chat_request(body, settings)
        assert caught.value.status == status, body


@contextlib.contextmanager
def in_process_server(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the in-process server did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def call(port, method, path, body=None, key=KEY, headers=None):
    """(status, parsed JSON or raw text) of one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {}),
            **(headers or {})}
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    try:
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        raw = response.read().decode()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except json.JSONDecodeError:
        return response.status, raw


def assert_openai_error(status, body, expected_status, code=None):
    assert status == expected_status, body
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    assert "Traceback" not in json.dumps(body)
    if code:
        assert body["error"]["code"] == code


def test_a_full_queue_answers_429_then_recovers_and_streams_in_openais_format():
    gate = threading.Event()
    batcher = Batcher(StandIn(gate), max_batch=4, wait_ms=1)
    settings = ServeSettings(model_id="m", api_key=KEY, max_pending=1, queue_timeout=0.3)
    try:
        with in_process_server(create_app(batcher, settings)) as port, ThreadPoolExecutor(2) as pool:
            first = pool.submit(call, port, "POST", "/v1/chat/completions", {"model": "m", "messages": user("one")})
            time.sleep(0.3)  # "one" holds the only slot
            status, body = call(port, "POST", "/v1/chat/completions", {"model": "m", "messages": user("two")})
            assert_openai_error(status, body, 429, "rate_limit_exceeded")
            gate.set()
            assert first.result(timeout=30)[1]["choices"][0]["message"]["content"] == "echo: one"
            status, body = call(port, "POST", "/v1/chat/completions", {"messages": user("three")})
            assert status == 200 and body["choices"][0]["message"]["content"] == "echo: three"
            assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}

            status, text = call(port, "POST", "/v1/chat/completions",
                                {"messages": user("s"), "stream": True, "stream_options": {"include_usage": True}})
            events = [line[len("data: "):] for line in text.split("\n\n") if line]
            assert status == 200 and all(line.startswith("data: ") for line in text.split("\n\n") if line)
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
            assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
            assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "echo: s"
            assert chunks[-2]["choices"][0]["finish_reason"] == "length"
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2

            status, body = call(port, "POST", "/v1/chat/completions", {"messages": user("fail")})
            assert_openai_error(status, body, 500)
            assert_openai_error(*call(port, "GET", "/v1/nothing"), 404)
            assert_openai_error(*call(port, "GET", "/v1/chat/completions"), 405)
            assert call(port, "GET", "/health", key=None)[0] == 200
    finally:
        gate.set()
        batcher.close()


# --------------------------------------------------------------------------------- a tiny LoRA adapter




def test_transformers_engine_streams_the_greedy_answer_and_samples(tiny_fp32):
    from llm_trainer.inference import generate_batch
    from llm_trainer.serving import TransformersEngine

    engine, conversations = TransformersEngine(tiny_fp32.model, tiny_fp32.tokenizer), [user(QUESTION), user("Hi")]
    greedy = engine.generate(conversations, Sampling(12))
    assert [c.text for c in greedy] == [g.text for g in generate_batch(tiny_fp32.model, tiny_fp32.tokenizer,
                                                                        conversations, 12, 1)]
    *pieces, last = engine.stream(conversations[0], Sampling(12))
    assert "".join(pieces) == greedy[0].text and last == greedy[0] and all(isinstance(p, str) for p in pieces)
    import torch

    torch.manual_seed(0)
    sampled = engine.generate(conversations, Sampling(12, temperature=1.5, top_p=0.9))
    assert all(0 <= c.completion_tokens <= 12 and c.prompt_tokens > 0 for c in sampled)
    assert all(c.finish_reason == ("length" if c.completion_tokens == 12 else "stop") for c in sampled)


def test_vllm_engine_wiring_with_a_stand_in_module(tiny_adapter, tiny_fp32, monkeypatch):
    import types

    from llm_trainer.serving import VllmEngine

    made = {}

    class LLM:
        def __init__(self, **kwargs):
            made["llm"] = kwargs

        def chat(self, messages, sampling_params, use_tqdm=True, lora_request=None, **kwargs):
            made["chat"] = {"messages": messages, "params": sampling_params, "lora": lora_request, **kwargs}
            out = types.SimpleNamespace(text=" 42 \n", token_ids=[1, 2, 3], finish_reason="length")
            return [types.SimpleNamespace(prompt_token_ids=[0] * 7, outputs=[out]) for _ in messages]

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, lambda **kwargs: kwargs
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, number, path: ("lora", name, number, path)
    modules = {"vllm": vllm, "vllm.lora": types.ModuleType("vllm.lora"), "vllm.lora.request": request}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)

    cfg = tiny_fp32.cfg.model.model_copy(update={"load_in_4bit": True})
    engine = VllmEngine.load(cfg, tiny_adapter.base_model, tiny_adapter.path)
    assert made["llm"]["model"] == tiny_adapter.base_model and made["llm"]["tokenizer"] == str(tiny_adapter.path)
    assert made["llm"]["enable_lora"] is True and made["llm"]["max_lora_rank"] == 8
    assert made["llm"]["quantization"] == "bitsandbytes"  # the 4-bit base the adapter was trained on
    (completion,) = engine.generate([user("hi")], Sampling(5, 0.0))
    assert completion == Completion("42", 7, 3, "length")
    assert made["chat"]["lora"] == ("lora", "adapter", 1, str(tiny_adapter.path))
    assert made["chat"]["messages"] == [user("hi")]
    assert made["chat"]["params"]["max_tokens"] == 5 and made["chat"]["params"]["temperature"] == 0.0
    assert tiny_fp32.tokenizer.eos_token_id in made["chat"]["params"]["stop_token_ids"]
    assert list(engine.stream(user("hi"), Sampling(5))) == ["42", completion]

    VllmEngine.load(cfg, tiny_adapter.base_model, None, merged=tiny_adapter.path)  # a merged model: no LoRA
    assert made["llm"]["model"] == str(tiny_adapter.path) and "enable_lora" not in made["llm"]


def serve_command(adapter, port, *extra):
    return [sys.executable, str(ROOT / "run_pipeline.py"), "serve", "--config", str(QUICKSTART), *FP32,
            "--adapter", str(adapter.path), "--port", str(port), *extra]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_engine_vllm_without_vllm_is_one_line_and_exit_2(tiny_adapter):
    result = subprocess.run(serve_command(tiny_adapter, 0, "--engine", "vllm"), capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --engine vllm: vLLM is not installed"), result.stderr


# ----------------------------------------------------------------------- end to end, in a subprocess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_adapter, tmp_path_factory):
    """`run_pipeline.py serve` on the tiny adapter, key from LLM_TRAINER_API_KEY; stopped by its pid."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "LLM_TRAINER_API_KEY": KEY, "OMP_WAIT_POLICY": "PASSIVE"}
    command = serve_command(tiny_adapter, port, "--max-tokens-cap", str(CAP), "--max-batch", "8", "--max-pending",
                            "6", "--queue-timeout", "2")
    with running_server(command, port, log, env, start_timeout=180) as process:
        yield port, process, log


@pytest.fixture(scope="module")
def reference(tiny_adapter, tiny_fp32):
    """The same model loaded here as the server loads it: greedy answers computed with generate_batch."""
    from llm_trainer.inference import generate_batch, load_for_inference
    from llm_trainer.modeling import load_tokenizer

    cfg = tiny_fp32.cfg.model
    model = load_for_inference(cfg, tiny_adapter.base_model, tiny_adapter.path)
    tokenizer = load_tokenizer(str(tiny_adapter.path), cfg)
    system = [{"role": "system", "content": tiny_fp32.cfg.data.system_prompt}]
    return lambda text, max_tokens: generate_batch(model, tokenizer, [system + user(text)], max_tokens, 1)[0]


def client(port, key=KEY):
    from openai import OpenAI

    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=60)



@pytest.mark.slow
def test_plain_and_streamed_replies_equal_the_greedy_answer(server, reference):
    port, _, _ = server
    expected = reference(QUESTION, 16)
    assert expected.text  # the adapter makes the tiny model say something
    reply = client(port).chat.completions.create(model="quickstart", messages=user(QUESTION), max_tokens=16,
                                                 temperature=0)
    assert reply.choices[0].message.content == expected.text
    assert reply.usage.completion_tokens == expected.new_tokens
    assert reply.choices[0].finish_reason == ("length" if expected.new_tokens == 16 else "stop")
    stream = client(port).chat.completions.create(model="quickstart", messages=user(QUESTION), max_tokens=16,
                                                  temperature=0, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason
    assert [m.id for m in client(port).models.list().data] == ["quickstart"]


@pytest.mark.slow
def test_max_tokens_is_capped(server, reference):
    port, _, _ = server
    reply = client(port).chat.completions.create(model="quickstart", messages=user(QUESTION), max_tokens=10_000)
    assert reply.usage.completion_tokens <= CAP
    assert reply.choices[0].message.content == reference(QUESTION, CAP).text


@pytest.mark.slow
def test_errors_are_openai_error_bodies(server):
    import openai

    port, _, _ = server
    body = {"model": "quickstart", "messages": user("hi"), "max_tokens": 4}
    assert_openai_error(*call(port, "POST", "/v1/chat/completions", body, key=None), 401, "invalid_api_key")
    assert_openai_error(*call(port, "GET", "/v1/models", key=None), 401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        client(port, key="wrong").chat.completions.create(model="quickstart", messages=user("hi"), max_tokens=4)
    assert_openai_error(*call(port, "POST", "/v1/chat/completions", b'{"model": "quickstart", "messages": ['), 400)
    with pytest.raises(openai.NotFoundError) as caught:
        client(port).chat.completions.create(model="no-such-model", messages=user("hi"), max_tokens=4)
    assert caught.value.body["code"] == "model_not_found"
    oversize = json.dumps({**body, "messages": user("x" * 1_200_000)}).encode()
    assert_openai_error(*call(port, "POST", "/v1/chat/completions", oversize), 413)


@pytest.mark.slow
def test_twenty_concurrent_requests_are_answered_or_refused_and_the_server_stays_up(server):
    port, process, log = server
    body = {"model": "quickstart", "messages": user("What is 7 times 6?"), "max_tokens": CAP}
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: call(port, "POST", "/v1/chat/completions", body), range(20)))
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 429}, results
    assert statuses.count(200) >= 6
    answers = {r["choices"][0]["message"]["content"] for s, r in results if s == 200}
    assert len(answers) == 1  # batched or not, the same greedy answer
    for status, reply in results:
        if status == 429:
            assert_openai_error(status, reply, 429, "rate_limit_exceeded")
    status, stats = call(port, "GET", "/health")
    assert status == 200 and stats["largest_batch"] > 1, stats
    assert call(port, "POST", "/v1/chat/completions", body)[0] == 200  # still serving
    assert process.poll() is None and "Traceback" not in log.read_text()
    # loopback unless --host is given; the key came from LLM_TRAINER_API_KEY
    assert f"at http://127.0.0.1:{port}/v1 (API key required)" in log.read_text()
