"""OpenAI-compatible HTTP API over a Batcher (serving.py), on Starlette (installed with zenml[server]):

    POST /v1/chat/completions   messages in; max_tokens (capped, and shrunk to what the context window leaves
                                after the prompt, said in the response's ``warnings``), temperature (0: greedy,
                                the default), top_p, stream (server-sent events in OpenAI's chunk format,
                                ending with data: [DONE]); fields it cannot honour are a 400 naming the field
    GET  /v1/models             the served model's id
    GET  /health                {"status": "ok", ...}; no key needed
    GET  /metrics               Prometheus' text format (serving_metrics.py); no key needed

Every chat request is counted in /metrics, logged as one JSON line (``settings.request_log``) and, with a capture
file, its conversation and answer appended there (never its headers).

Every error is OpenAI's body, ``{"error": {"message", "type", "code"}}``, never a traceback: 400 bad JSON or
fields or a prompt that alone fills the context window, 401 missing or wrong key (when one is set), 404 unknown model or path, 413 body over the cap, 429 when
``max_pending`` requests are already queued or generating and no slot frees within ``queue_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from llm_trainer.serving import Batcher, Completion, Job, Sampling
from llm_trainer.serving_metrics import CaptureFile, RequestRecord, ServerMetrics, capture_row, request_log_line

logger = logging.getLogger(__name__)
ROLES = {"system", "developer", "user", "assistant"}
# OpenAI request fields this server cannot honour, with the values that ask nothing of it; any other value is a
# 400 naming the field, since the reply would not be what the client asked for. `seed` is checked apart: it is
# harmless with greedy decoding only.
UNSUPPORTED = {"n": (None, 1), "stop": (None, "", []), "tools": (None, []), "tool_choice": (None, "none"),
               "functions": (None, []), "function_call": (None, "none"), "logprobs": (None, False),
               "top_logprobs": (None, 0), "logit_bias": (None, {}), "presence_penalty": (None, 0),
               "frequency_penalty": (None, 0), "response_format": (None, {"type": "text"}), "audio": (None,),
               "modalities": (None, ["text"]), "prediction": (None,), "web_search_options": (None,)}


@dataclass
class ServeSettings:
    """The server's settings: model id, system prompt, API key, token caps and request limits."""

    model_id: str
    system_prompt: str = ""
    api_key: str | None = None
    max_tokens_cap: int = 512
    default_max_tokens: int = 256  # when a request gives none (capped too)
    max_body_bytes: int = 1 << 20
    max_pending: int = 32
    queue_timeout: float = 10.0
    request_log: Callable[[str], None] | None = None  # takes one JSON line per chat request; None: no log
    log_text: bool = False  # the log lines carry the conversation and the answer too
    capture: CaptureFile | None = None  # answered requests' conversations and answers, for evaluate --questions


class ApiError(Exception):
    """A request the API refuses: the HTTP status and OpenAI's error fields for the body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body: {'error': {message, type, param, code}}."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _number(data: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            (low < value if low_open else low <= value) and value <= high):
        bound = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
        raise ApiError(400, f"'{key}' must be a number {bound} (got {json.dumps(value)})", param=key)
    return float(value)


def _text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and
                                         isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise ApiError(400, f"messages[{index}].content must be a string or a list of text parts", param="messages")


def parse_chat_request(data: Any, settings: ServeSettings) -> tuple[list[dict], Sampling, bool, bool]:
    """(conversation, sampling, stream, include_usage) from a request body, or ApiError."""
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = data.get("model")
    if model is not None and model != settings.model_id:
        raise ApiError(404, f"The model '{model}' does not exist; this server serves '{settings.model_id}'",
                       code="model_not_found", param="model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    conversation = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"messages[{index}] must be an object with a role in {sorted(ROLES)}", param="messages")
        role = "system" if message["role"] == "developer" else message["role"]
        conversation.append({"role": role, "content": _text(message.get("content"), index)})
    if conversation[-1]["role"] != "user":
        raise ApiError(400, "the last message must be the user's", param="messages")
    if settings.system_prompt and not any(m["role"] == "system" for m in conversation):
        conversation.insert(0, {"role": "system", "content": settings.system_prompt})
    for field, harmless in UNSUPPORTED.items():
        if field in data and not any(_same(data[field], value) for value in harmless):
            raise ApiError(400, f"'{field}' is not supported by this server (got {json.dumps(data[field])[:100]}); "
                           "leave it out", param=field)
    wanted = data.get("max_completion_tokens", data.get("max_tokens"))
    if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1):
        raise ApiError(400, f"'max_tokens' must be a positive integer (got {json.dumps(wanted)})", param="max_tokens")
    max_tokens = min(wanted or settings.default_max_tokens, settings.max_tokens_cap)
    sampling = Sampling(max_tokens, _number(data, "temperature", 0.0, 0.0, 2.0),
                        _number(data, "top_p", 1.0, 0.0, 1.0, low_open=True))
    if data.get("seed") is not None and sampling.temperature > 0:
        raise ApiError(400, "'seed' is not supported when sampling (temperature > 0): sampled replies cannot be "
                       "reproduced here; greedy decoding (temperature 0) is deterministic", param="seed")
    stream = data.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise ApiError(400, "'stream' must be true or false", param="stream")
    options = data.get("stream_options") or {}
    return conversation, sampling, bool(stream), bool(isinstance(options, dict) and options.get("include_usage"))


def _same(given: Any, value: Any) -> bool:
    """Equal and of the same kind: 0 is not False, and 1 is not True."""
    return given == value and isinstance(given, bool) == isinstance(value, bool)


def fit_window(engine: Any, conversation: list[dict], sampling: Sampling) -> tuple[Sampling, list[str]]:
    """``sampling`` with max_tokens shrunk to what the context window leaves after the prompt, and the warning
    that says so; a prompt that alone fills the window is a 400 (cutting it would answer another question)."""
    prompt_tokens, window = engine.measure(conversation)
    if window is None:
        return sampling, []
    if prompt_tokens >= window:
        raise ApiError(400, f"the messages have {prompt_tokens} tokens and the model's context window is {window}: "
                       "no room for a reply; shorten the messages", code="context_length_exceeded", param="messages")
    room = window - prompt_tokens
    if sampling.max_tokens <= room:
        return sampling, []
    return replace(sampling, max_tokens=room), [
        f"max_tokens {sampling.max_tokens} does not fit the {window}-token context window after the {prompt_tokens}"
        f"-token prompt: the reply gets at most {room} tokens (finish_reason 'length' when it reaches them)"]


class ObservedRequests:
    """ASGI middleware: each chat request gets a RequestRecord (``request.state.record``) that the handler fills
    in; when its response has been sent (or the connection dropped) the record goes to ``finish``."""

    def __init__(self, app: Any, path: str, finish: Callable[[RequestRecord], None]):
        self.app, self.path, self.finish = app, path, finish

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Run the app; for the chat path, note the response's status and finish the record at the end."""
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        record = RequestRecord()
        scope.setdefault("state", {})["record"] = record

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            record.finished = time.monotonic()
            try:
                self.finish(record)
            except Exception:  # noqa: BLE001 - a full disk under the capture must not fail the request
                logger.exception("recording request %s failed", record.id)


def create_app(batcher: Batcher, settings: ServeSettings) -> Any:
    """The Starlette app serving /v1/chat/completions, /v1/models, /health and /metrics over ``batcher`` (whose
    ``on_batch`` it sets, for the batch-size histogram)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    slots: dict[str, asyncio.Semaphore] = {}  # made on the server's event loop, at the first request
    created = int(time.time())
    metrics = ServerMetrics(settings.model_id, getattr(batcher.engine, "name", type(batcher.engine).__name__),
                            batcher.max_batch)
    batcher.on_batch = metrics.batch_size.observe

    def finish(record: RequestRecord) -> None:
        metrics.observe(record)
        if settings.request_log is not None:
            settings.request_log(request_log_line(record, settings.model_id, settings.log_text))
        if settings.capture is not None and record.status == 200 and record.answer is not None:
            settings.capture.write(capture_row(record, settings.model_id))

    def record_of(request: Request) -> RequestRecord:
        return request.scope.get("state", {}).get("record") or RequestRecord()

    def error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
              param: str | None = None, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(error_body(message, type_, code, param), status_code=status, headers=headers)

    def model_card() -> dict[str, Any]:
        return {"id": settings.model_id, "object": "model", "created": created, "owned_by": "llm-trainer"}

    def authorized(request: Request) -> bool:
        if not settings.api_key:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), settings.api_key.encode())

    def unauthorized() -> JSONResponse:
        return error(401, "Incorrect or missing API key: send the header 'Authorization: Bearer <key>'",
                     code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        length = request.headers.get("content-length", "")
        too_big = ApiError(413, f"the request body is over {limit} bytes", code="request_too_large")
        if length.isdigit() and int(length) > 8 * limit:
            raise too_big  # not worth reading: the connection closes after the answer
        chunks, size = [], 0
        async for chunk in request.stream():  # read to the end even when over: the client then gets the 413
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > 8 * limit:
                break
        if size > limit:
            raise too_big
        return b"".join(chunks)

    async def admit() -> None:
        if "pending" not in slots:
            slots["pending"] = asyncio.Semaphore(settings.max_pending)
        semaphore = slots["pending"]
        if not semaphore.locked():  # a free slot: take it now (wait_for with a zero timeout would not)
            await semaphore.acquire()
        else:
            try:
                await asyncio.wait_for(semaphore.acquire(), settings.queue_timeout)
            except TimeoutError:
                raise ApiError(429, f"the server is busy ({settings.max_pending} requests queued or generating); "
                               "retry later", type_="rate_limit_error", code="rate_limit_exceeded") from None
        metrics.in_flight.inc()

    def submit(conversation: list[dict], sampling: Sampling, record: RequestRecord, on_piece: Any = None
               ) -> asyncio.Future:
        """Hand a job to the batcher; the future settles (and the slot frees) when the worker is done with it."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        semaphore = slots["pending"]

        def settle(completion: Completion | None, exc: BaseException | None) -> None:
            semaphore.release()
            metrics.in_flight.dec()
            if not future.done():
                future.set_exception(exc) if exc else future.set_result(completion)

        def started(size: int) -> None:  # in the worker thread
            record.generation_started, record.batch_size = time.monotonic(), size
            metrics.queue_depth.dec()

        job = Job(conversation, sampling, lambda c, e: loop.call_soon_threadsafe(settle, c, e),
                  None if on_piece is None else lambda piece: loop.call_soon_threadsafe(on_piece, piece), started)
        metrics.queue_depth.inc()
        batcher.submit(job)
        return future

    def answered(record: RequestRecord, completion: Completion) -> None:
        record.prompt_tokens, record.completion_tokens = completion.prompt_tokens, completion.completion_tokens
        record.answer, record.finish_reason = completion.text, completion.finish_reason
        if record.first_token is None:
            record.first_token = time.monotonic()

    def usage(completion: Completion) -> dict[str, int]:
        return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                "total_tokens": completion.prompt_tokens + completion.completion_tokens}

    async def chat(request: Request) -> Any:
        record = record_of(request)
        if not authorized(request):
            record.error_code = "invalid_api_key"
            return unauthorized()
        body = await read_body(request)
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON ({exc})") from None
        conversation, sampling, stream, include_usage = parse_chat_request(data, settings)
        record.stream, record.conversation = stream, conversation
        sampling, warnings = fit_window(batcher.engine, conversation, sampling)
        await admit()
        head = {"id": record.id, "created": int(record.created), "model": settings.model_id}
        if not stream:
            try:
                completion = await submit(conversation, sampling, record)
            except Exception:  # noqa: BLE001 - logged by the batcher
                record.error_code = "server_error"
                return error(500, "generation failed; see the server's log", type_="server_error")
            answered(record, completion)
            return JSONResponse({**head, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": completion.text}, "logprobs": None,
                "finish_reason": completion.finish_reason}], "usage": usage(completion),
                **({"warnings": warnings} if warnings else {})})
        pieces: asyncio.Queue = asyncio.Queue()
        done = submit(conversation, sampling, record, pieces.put_nowait)
        done.add_done_callback(lambda _: pieces.put_nowait(None))
        return StreamingResponse(events(head, pieces, done, include_usage, warnings, record),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def events(head: dict, pieces: asyncio.Queue, done: asyncio.Future, include_usage: bool,
                     warnings: list[str], record: RequestRecord) -> AsyncIterator[str]:
        def chunk(delta: dict | None, finish: str | None = None, **extra: Any) -> str:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            return f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': choices, **extra})}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        while (piece := await pieces.get()) is not None:
            if record.first_token is None:
                record.first_token = time.monotonic()
            yield chunk({"content": piece})
        if done.exception() is not None:
            record.error_code = "server_error"
            yield f"data: {json.dumps(error_body('generation failed; see the server log', 'server_error'))}\n\n"
        else:
            completion = done.result()
            answered(record, completion)
            yield chunk({}, completion.finish_reason, **({"warnings": warnings} if warnings else {}))
            if include_usage:
                yield chunk(None, usage=usage(completion))
        yield "data: [DONE]\n\n"

    async def models(request: Request) -> Any:
        if not authorized(request):
            return unauthorized()
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def model(request: Request) -> Any:
        if not authorized(request):
            return unauthorized()
        if request.path_params["model"] != settings.model_id:
            return error(404, f"The model '{request.path_params['model']}' does not exist", code="model_not_found")
        return JSONResponse(model_card())

    async def health(request: Request) -> Any:
        return JSONResponse({"status": "ok", **batcher.stats()})

    async def scrape(request: Request) -> Any:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if (record := request.scope.get("state", {}).get("record")) is not None:
            record.error_code = exc.code or exc.type
        return error(exc.status, exc.message, exc.type, exc.code, exc.param)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error on %s %s: %r", request.method, request.url.path, exc)
        return error(500, "internal server error; see the server's log", type_="server_error")

    routes = [Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models, methods=["GET"]),
              Route("/v1/models/{model:path}", model, methods=["GET"]), Route("/health", health, methods=["GET"]),
              Route("/metrics", scrape, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={ApiError: api_error, HTTPException: http_error,
                                                        Exception: server_error},
                     middleware=[Middleware(ObservedRequests, path="/v1/chat/completions", finish=finish)])
