"""Engines and the batching queue behind ``run_pipeline.py serve`` (the HTTP layer is serving_api.py).

An engine turns chat conversations into completions:
- ``TransformersEngine``: the project's own inference code (CPU or one GPU): greedy batches through
  ``llm_trainer.inference.generate_batch``; sampled batches and streamed replies with the same prompt
  encoding, left padding and stop tokens.
- ``VllmEngine``: vLLM with the LoRA adapter (``LLM(enable_lora=True)`` + ``LoRARequest``) or a merged model.

The ``Batcher`` owns the engine in one worker thread. Requests that arrive within ``wait_ms`` of each other are
generated in one batch (up to ``max_batch``; requests with different sampling settings go in separate
batches); a streamed request is generated on its own.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llm_trainer.config import ModelConfig
from llm_trainer.inference import Generation, context_window, encode_prompts, fit_prompts, generate_batch, \
    left_pad, stop_token_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """Decoding settings of one request; temperature 0 is greedy."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0


@dataclass
class Completion:
    """An engine's reply to one conversation: its text, token counts and why it stopped."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length" (max_tokens reached)


class Engine(Protocol):
    """What the Batcher and the HTTP layer need of an engine: batched, streamed and measured generation."""

    def generate(self, conversations: list[list[dict]], sampling: Sampling) -> list[Completion]:
        """One completion per conversation, in order."""

    def stream(self, conversation: list[dict], sampling: Sampling) -> Iterator[str | Completion]:
        """The reply's text piece by piece (stripped like ``generate``'s), then its Completion."""

    def measure(self, conversation: list[dict]) -> tuple[int, int | None]:
        """(the conversation's prompt tokens, the model's context window, None where the engine cannot tell)."""


def _finish(generation: Generation) -> Completion:
    reason = "length" if generation.new_tokens >= generation.max_new_tokens else "stop"
    return Completion(generation.text, generation.prompt_tokens, generation.new_tokens, reason)


def trimmed(pieces: Iterator[str]) -> Iterator[str]:
    """Streamed pieces without the leading and trailing whitespace that ``generate_batch`` strips."""
    started, pending = False, ""
    for piece in pieces:
        text = pending + piece
        if not started:
            text = text.lstrip()
        body = text.rstrip()
        pending = text[len(body):]
        if body:
            started = True
            yield body


class TransformersEngine:
    """The project's own inference on transformers: CPU or one GPU, the adapter attached."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any):
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def load(cls, cfg: ModelConfig, base_model: str, adapter_path: str | Path) -> TransformersEngine:
        """The base model with the adapter attached (as ``use`` loads it); the tokenizer from the adapter folder."""
        from llm_trainer.inference import load_for_inference
        from llm_trainer.modeling import load_tokenizer

        tokenizer = load_tokenizer(str(adapter_path), cfg)
        return cls(load_for_inference(cfg, base_model, adapter_path, tokenizer), tokenizer)

    def measure(self, conversation: list[dict]) -> tuple[int, int | None]:
        """The conversation's prompt tokens and the model's context window."""
        (ids,), _ = encode_prompts(self.tokenizer, [conversation], 1 << 62)
        return len(ids), context_window(self.model, self.tokenizer)

    def generate(self, conversations: list[list[dict]], sampling: Sampling) -> list[Completion]:
        """One completion per conversation: greedy through generate_batch, else sampled."""
        if sampling.temperature > 0:
            generations = self._generate(conversations, sampling)
        else:
            generations = generate_batch(self.model, self.tokenizer, conversations, sampling.max_tokens,
                                         len(conversations))
        return [_finish(g) for g in generations]

    def stream(self, conversation: list[dict], sampling: Sampling) -> Iterator[str | Completion]:
        """The reply's text as it is generated (in a thread), then its Completion."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["generation"] = self._generate([conversation], sampling, streamer)[0]
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                box["error"] = exc
                streamer.end()  # or the reader below would wait forever

        thread = threading.Thread(target=work, name="llm-trainer-stream", daemon=True)
        thread.start()
        yield from trimmed(iter(streamer))
        thread.join()
        if "error" in box:
            raise box["error"]
        yield _finish(box["generation"])

    def _generate(self, conversations: list[list[dict]], sampling: Sampling, streamer: Any = None
                  ) -> list[Generation]:
        """One left-padded batch, as generate_batch pads it; sampled when temperature > 0, else greedy."""
        import torch

        tokenizer = self.tokenizer
        encoded, truncated, budgets = fit_prompts(tokenizer, conversations, context_window(self.model, tokenizer),
                                                  sampling.max_tokens)
        input_ids, attention = left_pad(encoded, tokenizer.pad_token_id)
        width, budget = input_ids.shape[1], min(budgets)
        stops = stop_token_ids(tokenizer)
        sampled = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0} \
            if sampling.temperature > 0 else {"do_sample": False}
        device = next(self.model.parameters()).device
        with torch.no_grad():
            output = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                         max_new_tokens=budget, eos_token_id=stops,
                                         pad_token_id=tokenizer.pad_token_id, use_cache=True, streamer=streamer,
                                         **sampled)
        results = []
        for row in range(len(encoded)):
            new = output[row, width:].tolist()
            new = new[: next((k for k, t in enumerate(new) if t in stops), len(new))]
            results.append(Generation(tokenizer.decode(new, skip_special_tokens=True).strip(), len(new),
                                      truncated[row], len(encoded[row]), budget))
        return results


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class VllmEngine:
    """vLLM's offline ``LLM``: it schedules a batch itself (continuous batching on the GPU). A streamed reply
    comes as one piece: the offline API returns whole completions."""

    name = "vllm"

    def __init__(self, llm: Any, lora_request: Any, stop_token_ids: list[int], chat_template: str | None = None,
                 tokenizer: Any = None):
        self.llm, self.lora_request, self.tokenizer = llm, lora_request, tokenizer
        self.stop_token_ids, self.chat_template = stop_token_ids, chat_template

    @classmethod
    def load(cls, cfg: ModelConfig, base_model: str, adapter_path: str | Path | None, merged: str | Path | None = None,
             **llm_kwargs: Any) -> VllmEngine:
        """Base model + LoRA adapter (4-bit base through vLLM's bitsandbytes when the config loads it in 4-bit, as
        it was trained), or, with ``merged``, a folder written by ``use --merge`` served as it is."""
        import vllm

        from llm_trainer.modeling import load_tokenizer

        tokenizer_path = str(merged or adapter_path)
        tokenizer = load_tokenizer(tokenizer_path, cfg)
        stops = stop_token_ids(tokenizer)
        kwargs: dict[str, Any] = {"tokenizer": tokenizer_path, "trust_remote_code": cfg.trust_remote_code, **llm_kwargs}
        if merged is not None:
            return cls(vllm.LLM(model=str(merged), **kwargs), None, stops, cfg.chat_template, tokenizer)
        from vllm.lora.request import LoRARequest

        rank = int(json.loads((Path(adapter_path) / "adapter_config.json").read_text()).get("r", 16))
        kwargs.update(enable_lora=True, max_loras=1,
                      max_lora_rank=next((r for r in VLLM_LORA_RANKS if r >= rank), VLLM_LORA_RANKS[-1]))
        if cfg.load_in_4bit:
            kwargs.setdefault("quantization", "bitsandbytes")
        if cfg.revision:
            kwargs.setdefault("revision", cfg.revision)
        llm = vllm.LLM(model=base_model, **kwargs)
        return cls(llm, LoRARequest("adapter", 1, str(adapter_path)), stops, cfg.chat_template, tokenizer)

    def measure(self, conversation: list[dict]) -> tuple[int, int | None]:
        """The conversation's prompt tokens and vLLM's max_model_len (0 and None without a tokenizer)."""
        if self.tokenizer is None:
            return 0, None
        (ids,), _ = encode_prompts(self.tokenizer, [conversation], 1 << 62)
        config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        return len(ids), getattr(config, "max_model_len", None)

    def generate(self, conversations: list[list[dict]], sampling: Sampling) -> list[Completion]:
        """One completion per conversation, from vLLM's chat with the adapter's LoRARequest."""
        import vllm

        params = vllm.SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                     top_p=sampling.top_p, stop_token_ids=self.stop_token_ids)
        extra = {"chat_template": self.chat_template} if self.chat_template else {}
        outputs = self.llm.chat(conversations, params, use_tqdm=False, lora_request=self.lora_request, **extra)
        completions = []
        for output in outputs:
            best = output.outputs[0]
            reason = "length" if best.finish_reason == "length" else "stop"
            completions.append(Completion(best.text.strip(), len(output.prompt_token_ids), len(best.token_ids), reason))
        return completions

    def stream(self, conversation: list[dict], sampling: Sampling) -> Iterator[str | Completion]:
        """The whole reply as one piece (generated as ``generate`` does), then its Completion."""
        (completion,) = self.generate([conversation], sampling)
        if completion.text:
            yield completion.text
        yield completion


# ------------------------------------------------------------------------------------------- batching


Done = Callable[[Completion | None, BaseException | None], None]


@dataclass
class Job:
    """One request for the Batcher: a conversation, its sampling, and callbacks for the result and pieces."""

    conversation: list[dict]
    sampling: Sampling
    on_done: Done  # called once, from the worker thread: (completion, None) or (None, error)
    on_piece: Callable[[str], None] | None = None  # streamed text; None: not streamed
    on_start: Callable[[int], None] | None = None  # called from the worker as its batch starts: the batch's size


class Batcher:
    """One worker thread owns the engine; ``submit`` never blocks (the caller bounds how many jobs wait)."""

    def __init__(self, engine: Engine, max_batch: int = 8, wait_ms: float = 10.0,
                 on_batch: Callable[[int], None] | None = None):
        self.engine, self.max_batch, self.wait = engine, max(1, max_batch), max(0.0, wait_ms) / 1000
        self.on_batch = on_batch  # called with each batch's size as it starts (the server's batch-size metric)
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # generated batches by size
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._held: collections.deque[Job | None] = collections.deque()  # taken while collecting, run next
        self._thread = threading.Thread(target=self._run, name="llm-trainer-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job for the worker thread; returns at once."""
        self._queue.put(job)

    def close(self, timeout: float = 10.0) -> None:
        """Tell the worker thread to stop after the queued jobs, and wait for it up to ``timeout`` s."""
        self._queue.put(None)
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """Batches generated, requests in them and the largest batch, for /health."""
        sizes = dict(self.batch_sizes)
        return {"batches": sum(sizes.values()), "requests": sum(k * v for k, v in sizes.items()),
                "largest_batch": max(sizes, default=0)}

    def _run(self) -> None:
        while True:
            job = self._held.popleft() if self._held else self._queue.get()
            if job is None:
                return
            if job.on_piece is not None:
                self._stream(job)
                continue
            batch = self._collect(job)
            groups: dict[Sampling, list[Job]] = {}
            for item in batch:
                groups.setdefault(item.sampling, []).append(item)
            for group in groups.values():
                self._generate(group)

    def _collect(self, first: Job) -> list[Job]:
        """The first job and those that arrive within the wait (or are already queued), up to max_batch."""
        batch, deadline = [first], time.monotonic() + self.wait
        while len(batch) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None or job.on_piece is not None:
                self._held.append(job)
                if job is None:
                    break
                continue
            batch.append(job)
        return batch

    def _started(self, group: list[Job]) -> None:
        self.batch_sizes[len(group)] += 1
        _call(self.on_batch, len(group))
        for job in group:
            _call(job.on_start, len(group))

    def _generate(self, group: list[Job]) -> None:
        self._started(group)
        try:
            completions = self.engine.generate([job.conversation for job in group], group[0].sampling)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error; the worker goes on
            logger.exception("generation failed for a batch of %d", len(group))
            for job in group:
                _call(job.on_done, None, exc)
            return
        for job, completion in zip(group, completions):
            _call(job.on_done, completion, None)

    def _stream(self, job: Job) -> None:
        self._started([job])
        completion = None
        try:
            for item in self.engine.stream(job.conversation, job.sampling):
                if isinstance(item, Completion):
                    completion = item
                else:
                    _call(job.on_piece, item)
        except Exception as exc:  # noqa: BLE001
            logger.exception("streamed generation failed")
            _call(job.on_done, None, exc)
            return
        _call(job.on_done, completion, None if completion else RuntimeError("the engine gave no completion"))


def _call(callback: Callable[..., None] | None, *args: Any) -> None:
    """A caller's callback failing (its event loop gone) must not stop the worker."""
    try:
        if callback is not None:
            callback(*args)
    except Exception:  # noqa: BLE001
        logger.debug("serving callback failed", exc_info=True)
