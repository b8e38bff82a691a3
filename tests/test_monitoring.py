"""Monitoring (issue 35 §1-2): the server's /metrics, request log and capture; `evaluate --questions` on a
capture; the system figures and MFU a training run logs, and the memory panel of its chart.

Fast: the HTTP layer in process with the stand-in engine of test_serve, called with the official `openai`
client and scraped with plain HTTP. Slow: `run_pipeline.py serve --capture` on the tiny adapter, then
`evaluate --questions` on what it captured. (System metrics in a real MLflow run: test_train_pipeline.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from llm_trainer.serving import Batcher
from llm_trainer.serving_api import ServeSettings, create_app
from llm_trainer.serving_metrics import CaptureFile, RequestRecord, ServerMetrics, request_log_line
from runner.serve import running_server
from test_serve import FP32, KEY, StandIn, call, client, free_port, in_process_server, serve_command, user

N = 5
SECRET_HEADER = "x-other-secret-header-value-42"


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """GET /metrics without a key, parsed: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = call(port, "GET", "/metrics", key=None)
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_request_log_and_capture_with_the_openai_client(tmp_path):
    import openai

    lines: list[str] = []
    capture = CaptureFile(tmp_path / "capture.jsonl")
    batcher = Batcher(StandIn(), max_batch=4, wait_ms=1)
    settings = ServeSettings(model_id="m", api_key=KEY, request_log=lines.append, capture=capture)
    try:
        with in_process_server(create_app(batcher, settings)) as port:
            assert value(scrape(port), "llm_trainer_requests_total", model="m", status="200") == 0
            api = client(port).with_options(default_headers={"X-Other-Secret": SECRET_HEADER})
            for i in range(N):  # one after the other: each is a batch of one
                if i % 2:
                    chunks = list(api.chat.completions.create(model="m", messages=user(f"question {i}"),
                                                              stream=True))
                    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
                        f"echo: question {i}"
                else:
                    reply = api.chat.completions.create(model="m", messages=user(f"question {i}"))
                    assert reply.choices[0].message.content == f"echo: question {i}"
            samples = scrape(port)
            assert value(samples, "llm_trainer_requests_total", model="m", status="200") == N
            for histogram in ("request_seconds", "request_queue_seconds", "request_time_to_first_token_seconds"):
                assert value(samples, f"llm_trainer_{histogram}_count", model="m") == N, histogram
                assert value(samples, f"llm_trainer_{histogram}_bucket", model="m", le="+Inf") == N, histogram
            assert value(samples, "llm_trainer_prompt_tokens_total", model="m") == 5 * N  # StandIn: 5 in, 2 out
            assert value(samples, "llm_trainer_completion_tokens_total", model="m") == 2 * N
            assert value(samples, "llm_trainer_batch_size_count") == N
            assert value(samples, "llm_trainer_batch_size_sum") == N
            assert value(samples, "llm_trainer_queue_depth") == 0
            assert value(samples, "llm_trainer_requests_in_flight") == 0
            assert value(samples, "llm_trainer_engine_info", engine="StandIn", model="m", max_batch="4") == 1

            with pytest.raises(openai.BadRequestError):
                api.chat.completions.create(model="m", messages=user("hi"), n=2)
            with pytest.raises(openai.AuthenticationError):
                client(port, key="wrong").chat.completions.create(model="m", messages=user("hi"))
            with pytest.raises(openai.InternalServerError):
                api.chat.completions.create(model="m", messages=user("fail"))
            samples = scrape(port)
            for status in ("400", "401", "500"):
                assert value(samples, "llm_trainer_requests_total", model="m", status=status) == 1, status
            assert value(samples, "llm_trainer_requests_total", model="m", status="200") == N
            assert value(samples, "llm_trainer_request_seconds_count", model="m") == N + 3  # every status
            assert value(samples, "llm_trainer_request_queue_seconds_count", model="m") == N + 1  # 500 was queued
            assert value(samples, "llm_trainer_request_time_to_first_token_seconds_count", model="m") == N
    finally:
        batcher.close()
        capture.close()

    records = [json.loads(line) for line in lines]
    assert [r["status"] for r in records] == [200] * N + [400, 401, 500]
    for record in records[:N]:
        assert record["id"].startswith("chatcmpl-") and record["latency_s"] >= record["queue_s"] >= 0
        assert (record["prompt_tokens"], record["completion_tokens"], record["batch_size"]) == (5, 2, 1)
    assert [r.get("error") for r in records[N:]] == ["invalid_request_error", "invalid_api_key", "server_error"]
    assert not any("question" in line or "messages" in line or "answer" in line for line in lines)  # no text

    text = (tmp_path / "capture.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["question"] for r in rows] == [f"question {i}" for i in range(N)]
    assert [r["answer"] for r in rows] == [f"echo: question {i}" for i in range(N)]
    assert rows[0]["id"] == records[0]["id"] and rows[0]["messages"] == user("question 0")
    assert KEY not in text and SECRET_HEADER not in text and "Bearer" not in text and "authorization" not in \
        text.lower()


def test_log_text_only_when_asked_and_each_server_has_its_own_registry():
    record = RequestRecord(status=200, conversation=user("secret question"), answer="secret answer")
    assert "secret" not in request_log_line(record, "m")
    shown = json.loads(request_log_line(record, "m", with_text=True))
    assert shown["messages"] == user("secret question") and shown["answer"] == "secret answer"
    first, second = ServerMetrics("a", "x", 1), ServerMetrics("b", "x", 1)  # the global registry would refuse
    first.observe(record)
    assert b'llm_trainer_requests_total{model="a",status="200"} 1.0' in first.render()[0]
    assert b"requests_total{" not in second.render()[0]


def test_captured_questions_with_a_reference_are_scored_and_the_rest_counted(write_jsonl):
    from llm_trainer.errors import UserError
    from llm_trainer.evaluation.captured import load_questions, questions_dataset, skipped_message

    path = write_jsonl([
        {"id": "a", "messages": [{"role": "system", "content": "S"}, *user("What is 2+2?")], "answer": "5",
         "reference": "4"},
        {"question": "Capital of France?", "reference": "Paris", "task": "geo"},
        {"id": "c", "messages": user("unscored"), "answer": "x"},
        {"question": "blank reference", "reference": "  "},
        "not json", {"messages": [{"role": "assistant", "content": "no user turn"}], "reference": "r"}])
    found = load_questions(path, system_prompt="Be brief.")
    assert (len(found.rows), found.no_reference, found.unreadable, found.lines) == (2, 2, [5, 6], 6)
    first, second = found.rows
    assert first["messages"][-1] == {"role": "assistant", "content": "4"} and first["row_id"] == "a"
    assert first["served_answer"] == "5" and first["question"] == "What is 2+2?"
    assert second["messages"] == [{"role": "system", "content": "Be brief."}, *user("Capital of France?"),
                                  {"role": "assistant", "content": "Paris"}]
    assert second["task"] == "geo" and second["row_id"] == "line-2"
    assert questions_dataset(found).column_names[:4] == ["row_id", "question", "reference_answer", "task"]
    assert skipped_message(found, path).startswith(f"{path}: 2 of 6 lines scored; 2 without a 'reference'")
    with pytest.raises(UserError, match="none of its 1 lines has a 'reference'"):
        load_questions(write_jsonl([{"question": "q"}], "none.jsonl"))


def test_system_figures_mfu_and_the_memory_panel():
    from llm_trainer.reporting import loss_curve_png
    from llm_trainer.system_metrics import SystemSampler, card_peak_tflops, model_flops_utilization

    figures = SystemSampler().sample()
    assert {"system/cpu_percent", "system/process_cpu_percent", "system/host_memory_used_mb",
            "system/host_memory_percent", "system/process_rss_mb"} <= set(figures)
    assert 10 < figures["system/process_rss_mb"] < figures["system/host_memory_used_mb"] + 1
    assert any(k.startswith("system/gpu_") for k in figures) == torch.cuda.is_available()
    assert card_peak_tflops(device_name="NVIDIA H100 80GB HBM3") == 989.4
    assert card_peak_tflops(device_name="NVIDIA H100 PCIe") == 756.0
    assert card_peak_tflops(device_name="Some Card") is None and card_peak_tflops(50.0, "NVIDIA H100") == 50.0
    assert model_flops_utilization(1000, 6e9, 60.0) == pytest.approx(0.1)
    assert model_flops_utilization(1000, 6e9, None) is None
    from types import SimpleNamespace

    from transformers import LlamaConfig

    from llm_trainer.memory import LLAMA3_8B, train_flops_per_token as count
    from llm_trainer.system_metrics import train_flops_per_token

    llama3 = LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=14336, vocab_size=128_256)
    assert train_flops_per_token(SimpleNamespace(config=llama3), 2048, True) == count(LLAMA3_8B, 2048, True)
    assert train_flops_per_token(SimpleNamespace(config=None), 2048, True) is None
    history = [{"step": s, "loss": 2.0 / s, "system/process_rss_mb": 900.0 + s} for s in (1, 2, 3)]
    plain, with_memory = loss_curve_png([{k: v for k, v in h.items() if k != "system/process_rss_mb"}
                                         for h in history]), loss_curve_png(history)
    width = lambda png: int.from_bytes(png[16:20], "big")  # noqa: E731 - the PNG header's width
    assert (width(plain), width(with_memory)) == (700, 1200)  # the memory panel beside the loss


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_gpu_figures_on_a_gpu():
    from llm_trainer.system_metrics import gpu_figures

    held = torch.ones(64, 2**20, device="cuda")  # 256 MB
    figures = gpu_figures()
    assert figures["system/gpu_memory_allocated_mb"] >= 256 and figures["system/gpu_memory_peak_mb"] >= 256
    assert figures["system/gpu_memory_reserved_mb"] >= figures["system/gpu_memory_allocated_mb"]
    del held


@pytest.mark.slow
def test_serve_capture_then_evaluate_the_captured_questions(tiny_adapter, tmp_path):
    """3 questions through the real server (default max_tokens: the config's evaluation.max_new_tokens, as the
    evaluation generates), a scrape; then references added to 2 of the 3 captured lines, and the adapter
    scored on them by the chat evaluator: the reference equal to the served answer matches, the other does not."""
    port, capture = free_port(), tmp_path / "captured.jsonl"
    questions = ["What is 12 + 30?", "Is 7 even or odd?", "What is the last word of: red green blue?"]
    env = {**os.environ, "LLM_TRAINER_API_KEY": KEY, "OMP_WAIT_POLICY": "PASSIVE"}
    with running_server(serve_command(tiny_adapter, port, "--capture", str(capture)), port, tmp_path / "server.log",
                        env, start_timeout=240):
        for question in questions:
            client(port).chat.completions.create(model="quickstart", messages=user(question))
        samples = scrape(port)
    assert value(samples, "llm_trainer_requests_total", model="quickstart", status="200") == 3
    assert value(samples, "llm_trainer_request_time_to_first_token_seconds_count", model="quickstart") == 3
    assert value(samples, "llm_trainer_engine_info", engine="transformers", model="quickstart", max_batch="8") == 1
    log = (tmp_path / "server.log").read_text()
    logged = [json.loads(line) for line in log.splitlines() if line.startswith('{"event": "chat_request"')]
    assert len(logged) == 3 and all(r["status"] == 200 and r["completion_tokens"] > 0 for r in logged), log
    assert KEY not in capture.read_text()

    rows = [json.loads(line) for line in capture.read_text().splitlines()]
    assert [r["question"] for r in rows] == questions and all(r["answer"] for r in rows)
    rows[0]["reference"], rows[1]["reference"] = rows[0]["answer"], "certainly not this"
    capture.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "run_pipeline.py", "evaluate", "--config", "configs/quickstart.yaml", *FP32,
         "--set", "evaluation.evaluator=chat", "--set", "registry.promotion_metric=exact_match",
         "--set", "evaluation.batch_size=1", "--adapter",
         str(tiny_adapter.path), "--questions", str(capture), "--summary", str(summary)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{capture}: 2 of 3 lines scored; 1 without a 'reference' (skipped; add one to score them)" in \
        result.stderr
    assert "exact_match 0.5" in result.stdout, result.stdout
    report = json.loads(summary.read_text())
    assert (report["scored"], report["no_reference"]) == (2, 1)
    first, second = report["examples"]
    assert first["exact_match"] and first["generation"] == rows[0]["answer"] == first["served_answer"]
    assert not second["exact_match"]
