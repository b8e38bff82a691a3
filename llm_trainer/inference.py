"""Load a base model (+ adapter) for inference and generate: batched greedy for evaluation and files,
streamed for chat. The prompt comes first: when prompt + max_new_tokens is over the context window the reply's
budget shrinks (one warning); only a prompt that alone fills the window is cut from the left (a warning too)."""

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
    """One generated reply: its text, token counts and whether its prompt was cut to fit."""

    text: str
    new_tokens: int
    prompt_truncated: bool = False
    prompt_tokens: int = 0
    max_new_tokens: int = 0  # the budget this reply had: less than asked when the prompt left less room


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
    """Tokens the model can attend to: the smaller of the config's and the tokenizer's limits."""
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    return min(int(x) for x in limits if x and x < 10**9) if any(limits) else 2048


def encode_prompts(tokenizer: Any, conversations: list[list[dict]], max_prompt_tokens: int, keep: int | None = None
                   ) -> tuple[list[list[int]], list[bool]]:
    """Chat-template the conversations (ending with a user turn); a prompt over ``max_prompt_tokens`` keeps its
    last ``keep`` tokens (default: max_prompt_tokens)."""
    keep = max_prompt_tokens if keep is None else keep
    texts = tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    truncated = [len(ids) > max_prompt_tokens for ids in encoded]
    for index, cut in enumerate(truncated):
        if cut:
            logger.warning("prompt %d has %d tokens; keeping the last %d (context window)", index,
                           len(encoded[index]), keep)
            encoded[index] = encoded[index][-keep:]
    return encoded, truncated


def fit_prompts(tokenizer: Any, conversations: list[list[dict]], window: int, max_new_tokens: int
                ) -> tuple[list[list[int]], list[bool], list[int]]:
    """Encoded prompts, whether each was cut, and each one's new-token budget, so that prompt + reply fit the
    context window. A prompt is never cut to make room for the budget: the budget shrinks instead, with one
    warning for all. A prompt that alone fills the window is cut from the left (warned by encode_prompts),
    leaving room for min(max_new_tokens, window // 2) new tokens."""
    reply_floor = max(1, min(max_new_tokens, window // 2))
    encoded, truncated = encode_prompts(tokenizer, conversations, window - 1, keep=window - reply_floor)
    budgets = [min(max_new_tokens, window - len(ids)) for ids in encoded]
    short = [b for b, cut in zip(budgets, truncated) if b < max_new_tokens and not cut]
    if short:
        after = f"the {len(encoded[0])}-token prompt" if len(encoded) == 1 else \
            f"{len(short)} of the {len(encoded)} prompts"
        most = f"{min(short)}-{max(short)}" if min(short) != max(short) else f"{short[0]}"
        logger.warning("max_new_tokens %d does not fit the %d-token context window after %s: the reply gets at "
                       "most %s new tokens (the prompt is kept whole)", max_new_tokens, window, after, most)
    return encoded, truncated, budgets


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

    encoded, truncated, budgets = fit_prompts(tokenizer, conversations, context_window(model, tokenizer),
                                              max_new_tokens)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: list[Generation | None] = [None] * len(encoded)
    device = next(model.parameters()).device
    stop_ids = stop_token_ids(tokenizer)
    for indices in tqdm(_batches(order, budgets, batch_size), desc="generate", disable=not progress):
        input_ids, attention = left_pad([encoded[i] for i in indices], tokenizer.pad_token_id)
        width, budget = input_ids.shape[1], budgets[indices[0]]
        with torch.no_grad():
            output = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                    max_new_tokens=budget, **(sampling or decoding()), eos_token_id=stop_ids,
                                    pad_token_id=tokenizer.pad_token_id, use_cache=True)
        for row, i in enumerate(indices):
            new = output[row, width:].tolist()
            new = new[: next((k for k, t in enumerate(new) if t in stop_ids), len(new))]
            results[i] = Generation(tokenizer.decode(new, skip_special_tokens=True).strip(), len(new), truncated[i],
                                    len(encoded[i]), budget)
    return results  # type: ignore[return-value]


def left_pad(encoded: list[list[int]], pad_token_id: int) -> tuple[Any, Any]:
    """Token id lists as one batch padded on the left, as generation wants: (input_ids, attention_mask), long
    tensors on the CPU as wide as the longest list."""
    import torch

    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        attention[row, width - len(ids):] = 1
    return input_ids, attention


def _batches(order: list[int], budgets: list[int], size: int) -> list[list[int]]:
    """Consecutive runs of ``order`` with the same budget, at most ``size`` long: a prompt whose budget shrank
    does not shrink its neighbours'."""
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < size and budgets[batches[-1][0]] == budgets[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


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

    (ids,), _, (budget,) = fit_prompts(tokenizer, [conversation], context_window(model, tokenizer), max_new_tokens)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    device = next(model.parameters()).device
    kwargs = {"input_ids": torch.tensor([ids], device=device), "attention_mask": torch.ones((1, len(ids)), device=device,
              dtype=torch.long), "max_new_tokens": budget, **(sampling or decoding()), "streamer": streamer,
              "eos_token_id": stop_token_ids(tokenizer), "pad_token_id": tokenizer.pad_token_id,
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


def stop_token_ids(tokenizer: Any) -> list[int]:
    """End of turn and end of text: Llama 3 ends an assistant turn with <|eot_id|>."""
    ids = {tokenizer.eos_token_id}
    for token in ("<|eot_id|>", "<|end_of_text|>", "<|im_end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def timed_generate(model: Any, tokenizer: Any, conversations: list[list[dict]], max_new_tokens: int,
                   batch_size: int, progress: bool = False) -> tuple[list[Generation], float]:
    """``generate_batch``, and the seconds it took (for tokens/s)."""
    started = time.time()
    generations = generate_batch(model, tokenizer, conversations, max_new_tokens, batch_size, progress)
    return generations, time.time() - started
