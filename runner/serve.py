"""The `serve` command: an OpenAI-compatible API for the fine-tuned model (llm_trainer/serving*.py).

    python run_pipeline.py serve --config configs/quickstart.yaml --model-version production [--port 8000]

Binds 127.0.0.1 unless --host is given; with --api-key (or LLM_TRAINER_API_KEY) every /v1 request needs
``Authorization: Bearer <key>``. Only argparse is imported at module level: run_pipeline.py adds the flags.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llm_trainer.paths import PROJECT_ROOT
from runner.argument_types import port as _port
from runner.argument_types import positive as _positive

API_KEY_ENV = "LLM_TRAINER_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serve (an OpenAI-compatible API: /v1/chat/completions, /v1/models)")
    group.add_argument("--engine", choices=("transformers", "vllm"), default="transformers",
                       help="transformers (the project's own generation, CPU or GPU; default) or vllm (GPU, vLLM "
                            "installed)")
    group.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    group.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)")
    group.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}, else none)")
    group.add_argument("--served-model-name", metavar="NAME",
                       help="the model id clients send (default: registry.model_name, else the config's name)")
    group.add_argument("--max-tokens-cap", type=_positive(int), default=512, metavar="N",
                       help="a request's max_tokens is cut to N (default 512)")
    group.add_argument("--max-batch", type=_positive(int), default=8, metavar="N",
                       help="requests generated together in one batch (default 8)")
    group.add_argument("--batch-wait-ms", type=float, default=10.0, metavar="MS",
                       help="how long the first request of a batch waits for others (default 10)")
    group.add_argument("--max-pending", type=_positive(int), default=32, metavar="N",
                       help="requests queued or generating at once (default 32); more wait up to --queue-timeout, "
                            "then get 429")
    group.add_argument("--queue-timeout", type=float, default=10.0, metavar="S",
                       help="how long a request waits for a free slot before 429 (default 10)")
    group.add_argument("--max-body-bytes", type=_positive(int), default=1 << 20, metavar="N",
                       help="larger request bodies get 413 (default 1 MiB)")
    group.add_argument("--capture", metavar="FILE.jsonl",
                       help="append each answered request's conversation and answer to FILE (JSONL; never a "
                            "header or key), for `evaluate --questions FILE` later")
    group.add_argument("--log-text", action="store_true",
                       help="the JSON line logged per request (stderr) carries its messages and answer too")
    group.add_argument("--merged", metavar="DIR", help="with --engine vllm: serve this merged model (written by "
                                                       "`use --merge DIR`) instead of the base model + LoRA adapter")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, made before the model loads, so a busy port is one clear line. It listens at once:
    with SO_REUSEADDR a second process could bind a port that is bound but not yet listening, and then wait
    forever. Connections made while the model loads wait in the backlog until the server answers them."""
    from llm_trainer.errors import UserError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise UserError(f"--host {host} --port {port}: cannot listen there: {exc.strerror or exc}") from None
    return sock


def serve(cfg: Any, adapter: Any, args: argparse.Namespace) -> int:
    from llm_trainer.errors import UserError

    if args.merged and args.engine != "vllm":
        raise UserError("--merged is for --engine vllm; the transformers engine serves --adapter / --model-version")
    if adapter is None and not args.merged:
        raise UserError("serve needs --adapter PATH or --model-version VERSION")
    if args.merged and not (Path(args.merged) / "config.json").is_file():
        raise UserError(f"--merged {args.merged}: not a model folder (no config.json); `use --merge DIR` writes one")
    if args.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        raise UserError("--engine vllm: vLLM is not installed here (pip install vllm, on a machine with a CUDA "
                        "GPU); --engine transformers serves without it")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    model_id = args.served_model_name or cfg.registry.model_name or cfg.name
    import uvicorn

    from llm_trainer.serving import Batcher, TransformersEngine, VllmEngine
    from llm_trainer.serving_api import ServeSettings, create_app

    sock = bind(args.host, args.port)
    capture = open_capture(args.capture) if args.capture else None
    if args.engine == "vllm":
        engine: Any = VllmEngine.load(cfg.model, adapter.base_model if adapter else "", adapter.path if adapter
                                      else None, args.merged)
    else:
        engine = TransformersEngine.load(cfg.model, adapter.base_model, adapter.path)
    batcher = Batcher(engine, args.max_batch, args.batch_wait_ms)
    settings = ServeSettings(model_id=model_id, system_prompt=cfg.data.system_prompt, api_key=api_key,
                             max_tokens_cap=args.max_tokens_cap,
                             default_max_tokens=min(cfg.evaluation.max_new_tokens, args.max_tokens_cap),
                             max_body_bytes=args.max_body_bytes, max_pending=args.max_pending,
                             queue_timeout=max(0.0, args.queue_timeout), request_log=log_line,
                             log_text=args.log_text, capture=capture)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    source = args.merged or adapter.path
    print(f"serving '{model_id}' ({source}, engine {args.engine}) at http://{shown}:{port}/v1"
          f"{' (API key required)' if api_key else ''}; Ctrl-C stops it", flush=True)
    if capture is not None:
        print(f"capturing answered requests' messages and answers to {capture.path}", flush=True)
    if args.host not in LOOPBACK and not api_key:
        print(f"warning: listening on {args.host} without an API key: anyone who can reach it can use the model "
              f"(set --api-key or ${API_KEY_ENV})", file=sys.stderr, flush=True)
    config = uvicorn.Config(create_app(batcher, settings), log_level="warning", timeout_keep_alive=30,
                            limit_concurrency=max(64, 4 * args.max_pending), timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C or SIGTERM (runner.quiet.Terminated) once it has shut down
        print("stopped", flush=True)
    finally:
        batcher.close(timeout=2)  # a generation still running is not waited for: the worker is a daemon thread
        sock.close()
        if capture is not None:
            capture.close()
    return 0


def log_line(line: str) -> None:
    """The server's request log: one JSON line per chat request on stderr."""
    print(line, file=sys.stderr, flush=True)


def open_capture(path: str) -> Any:
    """The capture file, opened for appending before the model loads: a path that cannot take it is one line."""
    from llm_trainer.errors import UserError
    from llm_trainer.serving_metrics import CaptureFile

    if Path(path).is_dir():
        raise UserError(f"--capture {path}: a folder; give a file (JSONL)")
    try:
        return CaptureFile(path)
    except OSError as exc:
        raise UserError(f"--capture {path}: cannot write there: {exc.strerror or exc}") from None


@contextmanager
def running_server(command: list[str], port: int, log: Path, env: dict[str, str], start_timeout: float,
                   stop_timeout: float = 15, cwd: Path = PROJECT_ROOT) -> Iterator[subprocess.Popen]:
    """Start ``command`` (a `serve` or `mlflow models serve` command line) in a new process group with its
    output in ``log``, wait until 127.0.0.1:``port`` answers /health, yield the process, and at the end stop its
    group by the process's id (SIGTERM, then SIGKILL): `mlflow models serve` runs its server as a child."""
    import http.client

    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start (exit {process.returncode}):\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            time.sleep(0.3)
        yield process
    finally:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(stop_timeout)
        _signal_group(process.pid, signal.SIGKILL)  # a child that outlived its parent


def _signal_group(pid: int, signum: int) -> None:
    """Signal the process group that ``running_server`` started (its id is the first process's id)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)
