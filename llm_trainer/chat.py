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
              out: TextIO, sampling: dict[str, Any] | None = None, loaded: str | None = None) -> int:
    """Interactive chat with history and streamed replies; returns the number of replies given.
    Ctrl-C while a reply is generated stops that reply and keeps the conversation (with the part already
    shown); Ctrl-C at the prompt raises KeyboardInterrupt to the caller."""
    history = base_messages(system_prompt)
    replies = 0
    if loaded:
        out.write(f"chatting with {loaded}\n")
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
        out.flush()
        pieces: list[str] = []
        try:
            for piece in stream_reply(model, tokenizer, history, max_new_tokens, sampling):
                pieces.append(piece)
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            out.write(" [stopped]")
        out.write("\n")
        reply = "".join(pieces).strip()
        if reply:
            history.append({"role": "assistant", "content": reply})
            replies += 1
        else:  # stopped before a word: as if the question had not been asked
            history.pop()
    return replies


def read_prompts(path: Path) -> Iterable[tuple[int, str | None, str | None, dict[str, Any]]]:
    """(line number, prompt, error, the line's other fields) per non-blank line; a line is
    {"prompt"|"question": str, ...} or a string."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                yield number, None, "invalid JSON", {}
                continue
            fields = record if isinstance(record, dict) else {}
            prompt = record if isinstance(record, str) else fields.get("prompt", fields.get("question"))
            if not isinstance(prompt, str):
                yield number, None, "no 'prompt' string", fields
            elif not prompt.strip():
                yield number, None, "empty prompt", fields
            else:
                yield number, prompt.strip(), None, fields


def check_input_file(path: Path) -> int:
    """Before any model loads: the file exists and has at least one prompt; returns how many it has."""
    if not path.is_file():
        raise DataError(f"--input: file not found: {path}")
    try:
        good = sum(error is None for _, _, error, _ in read_prompts(path))
    except OSError as exc:
        raise DataError(f"--input: cannot read {path}: {exc.strerror or exc}") from exc
    if not good:
        raise DataError(f"--input: {path} has no line with a prompt (expected JSON lines like "
                        '{"prompt": "..."} or "..." strings)')
    return good


def answer_file(model: Any, tokenizer: Any, system_prompt: str, input_path: Path, output_path: Path,
                max_new_tokens: int, batch_size: int, sampling: dict[str, Any] | None = None) -> dict[str, int]:
    """Answer every good line in batches; bad lines are reported by number and kept in the output. Each output
    line keeps every field of its input line (an ``id``, say) and adds line, response and prompt_truncated."""
    if not input_path.is_file():
        raise DataError(f"--input: file not found: {input_path}")
    rows = list(read_prompts(input_path))
    good = [(n, p) for n, p, e, _ in rows if e is None]
    for number, _, error, _ in rows:
        if error:
            logger.warning("%s line %d: %s; skipped", input_path, number, error)
    conversations = [base_messages(system_prompt) + [{"role": "user", "content": p}] for _, p in good]
    generations = generate_batch(model, tokenizer, conversations, max_new_tokens, batch_size,
                                 sampling=sampling) if good else []
    answers = {n: g for (n, _), g in zip(good, generations)}
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with output_path.open("w") as out:
        for number, prompt, error, fields in rows:
            record = {**fields, "line": number, "prompt": prompt}
            if error:
                record["error"] = error
            else:
                record["response"] = answers[number].text
                record["prompt_truncated"] = answers[number].prompt_truncated
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"answered": len(good), "errors": len(rows) - len(good)}


def merge_adapter(cfg: ModelConfig, base_model: str, adapter_path: str | Path, output_dir: str | Path) -> Path:
    """Merge the adapter into a full-precision copy of the base and save it in safetensors (vLLM, TGI)."""
    from llm_trainer.adapter_folder import check_vocabulary
    from llm_trainer.modeling import attach_adapter, load_model, load_tokenizer

    tokenizer = load_tokenizer(str(adapter_path), cfg)
    check_vocabulary(base_model, tokenizer, adapter_path)
    full_precision = cfg.model_copy(update={"load_in_4bit": False})  # dtype "auto": the checkpoint's own
    merged = attach_adapter(load_model(base_model, full_precision), adapter_path).merge_and_unload()

    def save(folder: str) -> None:
        merged.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    return write_dir_atomically(Path(output_dir), save, replace=True)
