"""What ``serve`` measures and keeps per request: Prometheus metrics, one JSON log line, and the opt-in capture.

- ``ServerMetrics``: the server's own ``CollectorRegistry`` (never the process-wide one, so two servers or two
  tests in one process do not collide), rendered in Prometheus' text format for ``GET /metrics``: requests by
  model and status, latency histograms (time in queue, time to first token, total), tokens in and out, the
  sizes of the batches generated, the queue depth and the engine.
- ``request_log_line``: one JSON object per chat request (id, status, latency, tokens, batch size), without the
  prompt or the answer unless asked.
- ``CaptureFile``: the conversation and the answer of every successful request appended as JSONL, for
  ``evaluate --questions FILE`` later. Only the request's messages and the reply are written: never its headers.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Seconds: from a few ms (a tiny model, one token) to minutes (a long reply queued behind full batches).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
PREFIX = "llm_trainer_"


@dataclass
class RequestRecord:
    """One chat request as the server saw it: filled in by the handler, finished by the middleware.

    Times are ``time.monotonic()`` seconds; ``generation_started`` is when the request's batch began generating,
    ``first_token`` when its first text went to the client (the whole reply, when not streamed)."""

    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    arrived: float = field(default_factory=time.monotonic)
    created: float = field(default_factory=time.time)
    status: int = 0
    stream: bool = False
    generation_started: float | None = None
    first_token: float | None = None
    finished: float | None = None
    batch_size: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error_code: str | None = None
    conversation: list[dict] | None = None
    answer: str | None = None

    def seconds(self, until: float | None) -> float | None:
        """Seconds from the request's arrival to ``until`` (None when that did not happen)."""
        return None if until is None else max(0.0, until - self.arrived)


class ServerMetrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self, model_id: str, engine: str, max_batch: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.model_id = model_id
        self.registry = CollectorRegistry()
        reg, labels = self.registry, ["model"]
        self.requests = Counter(f"{PREFIX}requests", "Chat completion requests answered, by model and HTTP status",
                                ["model", "status"], registry=reg)
        self.queue_seconds = Histogram(f"{PREFIX}request_queue_seconds", "From a request's arrival to the start of "
                                       "its batch's generation", labels, buckets=LATENCY_BUCKETS, registry=reg)
        self.first_token_seconds = Histogram(
            f"{PREFIX}request_time_to_first_token_seconds", "From a request's arrival to its first text sent (the "
            "whole reply when not streamed)", labels, buckets=LATENCY_BUCKETS, registry=reg)
        self.request_seconds = Histogram(f"{PREFIX}request_seconds", "From a request's arrival to the end of its "
                                         "response, every status", labels, buckets=LATENCY_BUCKETS, registry=reg)
        self.prompt_tokens = Counter(f"{PREFIX}prompt_tokens", "Prompt tokens of the answered requests", labels,
                                     registry=reg)
        self.completion_tokens = Counter(f"{PREFIX}completion_tokens", "Tokens generated for the answered requests",
                                         labels, registry=reg)
        self.batch_size = Histogram(f"{PREFIX}batch_size", "Requests per generated batch (one observation a batch)",
                                    buckets=BATCH_BUCKETS, registry=reg)
        self.queue_depth = Gauge(f"{PREFIX}queue_depth", "Requests handed to the model's worker that have not "
                                 "started generating", registry=reg)
        self.in_flight = Gauge(f"{PREFIX}requests_in_flight", "Requests queued or generating (at most --max-pending)",
                               registry=reg)
        Info(f"{PREFIX}engine", "The serving engine and model", registry=reg).info(
            {"engine": engine, "model": model_id, "max_batch": str(max_batch)})

    def observe(self, record: RequestRecord) -> None:
        """Count a finished request: its status and total time always; queue time, time to first token and
        tokens once it was generated."""
        model = self.model_id
        self.requests.labels(model, str(record.status or 500)).inc()
        if (total := record.seconds(record.finished)) is not None:
            self.request_seconds.labels(model).observe(total)
        if (queued := record.seconds(record.generation_started)) is not None:
            self.queue_seconds.labels(model).observe(queued)
        if (first := record.seconds(record.first_token)) is not None:
            self.first_token_seconds.labels(model).observe(first)
        self.prompt_tokens.labels(model).inc(record.prompt_tokens)
        self.completion_tokens.labels(model).inc(record.completion_tokens)

    def render(self) -> tuple[bytes, str]:
        """(the metrics in Prometheus' text format, its content type)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def request_log_line(record: RequestRecord, model_id: str, with_text: bool = False) -> str:
    """One JSON line for the server's log: id, status, latencies, tokens, batch size; the conversation and the
    answer only when ``with_text``."""
    line: dict[str, Any] = {
        "event": "chat_request", "id": record.id, "model": model_id, "status": record.status, "stream": record.stream,
        "latency_s": _rounded(record.seconds(record.finished)), "queue_s": _rounded(record.seconds(
            record.generation_started)), "first_token_s": _rounded(record.seconds(record.first_token)),
        "prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
        "batch_size": record.batch_size, "finish_reason": record.finish_reason}
    if record.error_code:
        line["error"] = record.error_code
    if with_text:
        line.update(messages=record.conversation, answer=record.answer)
    return json.dumps(line, ensure_ascii=False)


def capture_row(record: RequestRecord, model_id: str) -> dict[str, Any]:
    """What the capture keeps of an answered request: the conversation the model was given (system prompt
    included), its last user message as ``question``, the answer and its token counts. No header, no key."""
    conversation = record.conversation or []
    question = next((m["content"] for m in reversed(conversation) if m.get("role") == "user"), "")
    return {"id": record.id, "created": int(record.created), "model": model_id, "messages": conversation,
            "question": question, "answer": record.answer, "finish_reason": record.finish_reason,
            "prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens}


class CaptureFile:
    """Appends answered requests as JSON lines (``capture_row``), one write and flush per line, thread-safe."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._handle = self.path.open("a", encoding="utf-8")  # OSError for a path that cannot take it

    def write(self, row: dict[str, Any]) -> None:
        """Append one row."""
        text = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            self._handle.write(text)
            self._handle.flush()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._handle.close()
