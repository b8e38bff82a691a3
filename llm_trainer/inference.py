"""Load a base model (+ adapter) for inference and generate: batched greedy for evaluation and files,
streamed for chat. Prompts longer than the context window are cut from the left, with a warning."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_trainer.config import ModelConfig

logger = logging.getLogger(__name__)


@dataclass
class Generation:
    text: str
    new_tokens: int
    prompt_truncated: bool = False


def load_for_inference(cfg: ModelConfig, base_model: str, adapter_path: str | Path | None = None,
                       tokenizer: Any = None) -> Any:
    """The base model (4-bit when configured) with the adapter attached, in eval mode with a KV cache. Given the
    ``tokenizer`` it will run with, the base model's vocabulary is checked against it before anything loads."""
    from llm_trainer.adapter_folder import check_vocabulary
    from llm_trainer.modeling import attach_adapter, load_model

    if tokenizer is not None:
        check_vocabulary(base_model, tokenizer, adapter_path or tokenizer.name_or_path)
    model = load_model(base_model, cfg)
    if adapter_path is not None:
        model = attach_adapter(model, adapter_path)
    model.config.use_cache = True
    model.eval()
    return model


def context_window(model: Any, tokenizer: Any) -> int:
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    return min(int(x) for x in limits if x and x < 10**9) if any(limits) else 2048


def encode_prompts(tokenizer: Any, conversations: list[list[dict]], max_prompt_tokens: int
                   ) -> tuple[list[list[int]], list[bool]]:
    """Chat-template the conversations (ending with a user turn) and keep at most the last N tokens."""
    texts = tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    truncated = [len(ids) > max_prompt_tokens for ids in encoded]
    for index, cut in enumerate(truncated):
        if cut:
            logger.warning("prompt %d has %d tokens; keeping the last %d (context window)", index,
                           len(encoded[index]), max_prompt_tokens)
            encoded[index] = encoded[index][-max_prompt_tokens:]
    return encoded, truncated


def decoding(temperature: float = 0.0, top_p: float = 1.0) -> dict[str, Any]:
    """generate() arguments: greedy at temperature 0 (evaluation's default), else sampling with nucleus top_p."""
    if temperature <= 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p), "top_k": 0}


def generate_batch(model: Any, tokenizer: Any, conversations: list[list[dict]], max_new_tokens: int,
                   batch_size: int, progress: bool = False, sampling: dict[str, Any] | None = None
                   ) -> list[Generation]:
    """Greedy decoding (or ``sampling``, from ``decoding()``), batched with left padding and the KV cache;
    sorted by length to pad less."""
    import torch
    from tqdm.auto import tqdm

    max_prompt = max(1, context_window(model, tokenizer) - max_new_tokens)
    encoded, truncated = encode_prompts(tokenizer, conversations, max_prompt)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: list[Generation | None] = [None] * len(encoded)
    device = next(model.parameters()).device
    stop_ids = _stop_token_ids(tokenizer)
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc="generate", disable=not progress):
        indices = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in indices)
        input_ids = torch.full((len(indices), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            ids = encoded[i]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        with torch.no_grad():
            output = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                    max_new_tokens=max_new_tokens, **(sampling or decoding()), eos_token_id=stop_ids,
                                    pad_token_id=tokenizer.pad_token_id, use_cache=True)
        for row, i in enumerate(indices):
            new = output[row, width:].tolist()
            new = new[: next((k for k, t in enumerate(new) if t in stop_ids), len(new))]
            results[i] = Generation(tokenizer.decode(new, skip_special_tokens=True).strip(), len(new), truncated[i])
    return results  # type: ignore[return-value]


def stream_reply(model: Any, tokenizer: Any, conversation: list[dict], max_new_tokens: int,
                 sampling: dict[str, Any] | None = None) -> Iterator[str]:
    """Yield the reply's text piece by piece as it is generated (for chat). Leaving the loop early (Ctrl-C,
    ``close()``) stops the generation at its next token."""
    import threading

    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    stop = threading.Event()

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    max_prompt = max(1, context_window(model, tokenizer) - max_new_tokens)
    (ids,), _ = encode_prompts(tokenizer, [conversation], max_prompt)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    device = next(model.parameters()).device
    kwargs = {"input_ids": torch.tensor([ids], device=device), "attention_mask": torch.ones((1, len(ids)), device=device,
              dtype=torch.long), "max_new_tokens": max_new_tokens, **(sampling or decoding()), "streamer": streamer,
              "eos_token_id": _stop_token_ids(tokenizer), "pad_token_id": tokenizer.pad_token_id,
              "stopping_criteria": StoppingCriteriaList([_Stop()])}
    thread = threading.Thread(target=lambda: _generate_no_grad(model, kwargs), daemon=True)
    thread.start()
    try:
        yield from streamer
    finally:
        stop.set()
        thread.join()


def _generate_no_grad(model: Any, kwargs: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        model.generate(**kwargs)


def _stop_token_ids(tokenizer: Any) -> list[int]:
    """End of turn and end of text: Llama 3 ends an assistant turn with <|eot_id|>."""
    ids = {tokenizer.eos_token_id}
    for token in ("<|eot_id|>", "<|end_of_text|>", "<|im_end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def timed_generate(model: Any, tokenizer: Any, conversations: list[list[dict]], max_new_tokens: int,
                   batch_size: int, progress: bool = False) -> tuple[list[Generation], float]:
    started = time.time()
    generations = generate_batch(model, tokenizer, conversations, max_new_tokens, batch_size, progress)
    return generations, time.time() - started
