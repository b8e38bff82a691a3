"""`use`: chat with a model, answer a JSONL file of prompts, or merge an adapter for serving engines."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from llm_trainer.config import ModelConfig
from llm_trainer.errors import DataError
from llm_trainer.fsutil import write_dir_atomically
from llm_trainer.inference import generate_batch, stream_reply

logger = logging.getLogger(__name__)
HELP = "Type a message. /reset clears the conversation, /exit quits."


def base_messages(system_prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt}] if system_prompt else []


def chat_loop(model: Any, tokenizer: Any, system_prompt: str, max_new_tokens: int, read: Callable[[str], str],
              out: TextIO) -> int:
    """Interactive chat with history and streamed replies; returns the number of replies given."""
    history = base_messages(system_prompt)
    replies = 0
    out.write(HELP + "\n")
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            break
        if line == "/exit":
            break
        if line == "/reset":
            history = base_messages(system_prompt)
            out.write("(conversation cleared)\n")
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        out.write("assistant> ")
        pieces = []
        for piece in stream_reply(model, tokenizer, history, max_new_tokens):
            pieces.append(piece)
            out.write(piece)
            out.flush()
        out.write("\n")
        history.append({"role": "assistant", "content": "".join(pieces).strip()})
        replies += 1
    return replies


def read_prompts(path: Path) -> Iterable[tuple[int, str | None, str | None]]:
    """(line number, prompt, error) per non-blank line; a line is {"prompt"|"question": str} or a string."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                yield number, None, "invalid JSON"
                continue
            prompt = record if isinstance(record, str) else (
                record.get("prompt", record.get("question")) if isinstance(record, dict) else None)
            if not isinstance(prompt, str):
                yield number, None, "no 'prompt' string"
            elif not prompt.strip():
                yield number, None, "empty prompt"
            else:
                yield number, prompt.strip(), None


def answer_file(model: Any, tokenizer: Any, system_prompt: str, input_path: Path, output_path: Path,
                max_new_tokens: int, batch_size: int) -> dict[str, int]:
    """Answer every good line in batches; bad lines are reported by number and kept in the output."""
    if not input_path.is_file():
        raise DataError(f"--input: file not found: {input_path}")
    rows = list(read_prompts(input_path))
    good = [(n, p) for n, p, e in rows if e is None]
    for number, _, error in rows:
        if error:
            logger.warning("%s line %d: %s; skipped", input_path, number, error)
    conversations = [base_messages(system_prompt) + [{"role": "user", "content": p}] for _, p in good]
    generations = generate_batch(model, tokenizer, conversations, max_new_tokens, batch_size) if good else []
    answers = {n: g for (n, _), g in zip(good, generations)}
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with output_path.open("w") as out:
        for number, prompt, error in rows:
            record = {"line": number, "prompt": prompt}
            if error:
                record["error"] = error
            else:
                record["response"] = answers[number].text
                record["prompt_truncated"] = answers[number].prompt_truncated
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"answered": len(good), "errors": len(rows) - len(good)}


def merge_adapter(cfg: ModelConfig, base_model: str, adapter_path: str | Path, output_dir: str | Path) -> Path:
    """Merge the adapter into a full-precision copy of the base and save it in safetensors (vLLM, TGI)."""
    from llm_trainer.modeling import attach_adapter, load_model, load_tokenizer

    full_precision = cfg.model_copy(update={"load_in_4bit": False})  # dtype "auto": the checkpoint's own
    merged = attach_adapter(load_model(base_model, full_precision), adapter_path).merge_and_unload()
    tokenizer = load_tokenizer(str(adapter_path), cfg)

    def save(folder: str) -> None:
        merged.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    return write_dir_atomically(Path(output_dir), save, replace=True)
