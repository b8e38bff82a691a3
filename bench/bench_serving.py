"""Benchmark: the `serve` command's OpenAI-compatible API, tiny model + LoRA adapter, CPU.

project:   `run_pipeline.py serve` (transformers engine, batching queue up to 8 requests, 10 ms window) in a
           subprocess on 127.0.0.1, called over HTTP by 1 and by 8 concurrent clients (threads).
baselines: (a) the same requests answered one at a time in this process through
           ``llm_trainer.inference.generate_batch`` (batch 1, no HTTP); (b) the same server with
           ``--max-batch 1`` (HTTP, no batching) at 8 clients.

Same prompts (test questions of data/sample with the config's system prompt), greedy, the same max_tokens,
the quickstart's 4-bit tiny base with a LoRA adapter. Requests per second over the whole run, latency
p50/p95 per request (client side: sent to last byte). Not part of the tests.

    .venv/bin/python -m bench.bench_serving [--requests 48] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from bench.common import QUICKSTART, ROOT, SAMPLE_DATA, machine, quickstart_assets, scratch
from runner.serve import running_server

REQUESTS, MAX_TOKENS, CLIENTS = 48, 32, (1, 8)


def make_adapter(base_model: str, tokenizer, folder: Path) -> Path:
    """A LoRA adapter (random, non-zero B) on the tiny base: the shape of a trained one, in seconds."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llm_trainer.training.base import ADAPTER_INFO_FILE

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
    peft.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / ADAPTER_INFO_FILE).write_text(json.dumps({"base_model": base_model}))
    return folder


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def post(port: int, body: bytes) -> float:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
    return time.perf_counter() - started


def load(port: int, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """(requests/s, latencies): `clients` threads share the requests, each sending its next one when answered."""
    latencies: list[float] = []
    lock, queue = threading.Lock(), list(reversed(bodies))
    errors: list[BaseException] = []

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            try:
                seconds = post(port, body)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return
            with lock:
                latencies.append(seconds)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return len(latencies) / wall, latencies


@contextlib.contextmanager
def server(adapter: Path, *extra: str):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = scratch("serve") / "server.log"
    command = [sys.executable, str(ROOT / "run_pipeline.py"), "serve", "--config", str(QUICKSTART), "--set",
               f"data.source={SAMPLE_DATA}", "--adapter", str(adapter), "--port", str(port), "--max-pending", "64",
               *extra]
    with running_server(command, port, log, os.environ.copy(), start_timeout=300, stop_timeout=30):
        yield port


def main(requests: int = REQUESTS, max_tokens: int = MAX_TOKENS) -> dict:
    from llm_trainer.inference import generate_batch, load_for_inference
    from llm_trainer.base_model import resolve_base_model
    from llm_trainer.modeling import load_tokenizer

    info = machine()  # load average before the run
    cfg, _, processed, tokenizer = quickstart_assets()
    base = resolve_base_model(cfg.model, tokenizer, cfg.seed).name_or_path
    adapter = make_adapter(base, tokenizer, scratch("adapter"))
    test = processed["test"]
    conversations = [test[i % len(test)]["messages"][:-1] for i in range(requests)]
    model_id = cfg.registry.model_name or cfg.name
    bodies = [json.dumps({"model": model_id, "messages": c, "max_tokens": max_tokens, "temperature": 0}).encode()
              for c in conversations]
    results = []

    model = load_for_inference(cfg.model, base, adapter)  # baseline (a), in this process, before any server
    adapter_tokenizer = load_tokenizer(str(adapter), cfg.model)
    generate_batch(model, adapter_tokenizer, conversations[:2], max_tokens, 1)  # warm-up
    latencies, started = [], time.perf_counter()
    for conversation in conversations:
        begin = time.perf_counter()
        generate_batch(model, adapter_tokenizer, [conversation], max_tokens, 1)
        latencies.append(time.perf_counter() - begin)
    rate = requests / (time.perf_counter() - started)
    results.append(("generate_batch, one at a time (no HTTP)", 1, rate, latencies))
    del model

    for label, max_batch, client_counts in (("serve, batching up to 8", 8, CLIENTS), ("serve --max-batch 1", 1, (8,))):
        with server(adapter, "--max-batch", str(max_batch)) as port:
            load(port, bodies[:4], 2)  # warm-up
            for clients in client_counts:
                rate, latencies = load(port, bodies, clients)
                results.append((label, clients, rate, latencies))

    lines = ["| setup | clients | requests/s | p50 ms | p95 ms |", "|---|---:|---:|---:|---:|"]
    for label, clients, rate, latencies in results:
        lines.append(f"| {label} | {clients} | {rate:.1f} | {1000 * percentile(latencies, 0.5):.0f} | "
                     f"{1000 * percentile(latencies, 0.95):.0f} |")
    print(f"### Serving ({requests} requests, max_tokens {max_tokens}, greedy; tiny 4-bit base + LoRA, CPU)\n")
    print("\n".join(lines))
    print(f"\nmachine: {info['cpus']} x {info['cpu_model']}, load average before the run {info['load_average']}")
    return {"name": "serving", "rows": [{"setup": s, "clients": c, "requests_per_s": r,
                                         "p50_ms": 1000 * percentile(l, 0.5), "p95_ms": 1000 * percentile(l, 0.95)}
                                        for s, c, r, l in results], "machine": info}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    args = parser.parse_args()
    main(args.requests, args.max_tokens)
