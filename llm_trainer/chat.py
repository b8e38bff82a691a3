"""`use`: chat with a model, answer a JSONL file of prompts, or merge an adapter for serving engines."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from llm_trainer.config import ModelConfig
from llm_trainer.errors import DataError, UserError
from llm_trainer.fsutil import write_dir_atomically
from llm_trainer.inference import generate_batch, stream_reply

logger = logging.getLogger(__name__)
MERGED_MARKER = "merged_by_llm_trainer.json"  # what `--merge DIR --overwrite` looks for before it replaces DIR
HELP = "Type a message. /reset clears the conversation, /exit quits."


def base_messages(system_prompt: str) -> list[dict[str, str]]:
    """The start of every conversation: the system prompt as its first message, or nothing without one."""
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


def check_input_file(path: Path, output: Path | None = None) -> int:
    """Before any model loads: the file exists, has at least one prompt and is not ``output`` too; returns how
    many prompts it has."""
    if not path.is_file():
        raise DataError(f"--input: file not found: {path}")
    if output is not None and (output.resolve() == path.resolve() or (output.exists() and output.samefile(path))):
        raise UserError(f"--output {output} is the --input file; answers go to another file")
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
    check_input_file(input_path, output_path)
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


def check_merge_target(path: str | Path, overwrite: bool = False) -> Path:
    """The folder a merged model goes to, as an absolute path ("." and "x/.." need a name to be renamed); refuses
    one where something of the user's would be lost: a file, a folder with files in it (unless ``overwrite``), or,
    even with ``overwrite``, a folder that holds no merged model of this project."""
    folder = Path(os.path.abspath(Path(path).expanduser()))
    if not folder.exists() and not folder.is_symlink():
        return folder
    if not folder.is_dir():
        raise UserError(f"--merge {path}: a file is there; give a folder that is new or empty")
    if not any(folder.iterdir()):
        return folder
    if not overwrite:
        raise UserError(f"--merge {path}: the folder is not empty; give a new or empty one, or add --overwrite to "
                        "replace a merged model written there before")
    if not (folder / MERGED_MARKER).is_file():
        raise UserError(f"--merge {path}: the folder holds no merged model written by `use --merge` (no "
                        f"{MERGED_MARKER}); it is left as it is, even with --overwrite")
    return folder


MERGE_WEIGHTS = ("original", "dequantized")


def merged_from(cfg: ModelConfig, weights: str) -> str:
    """What ``merge_adapter`` merges into, in words (for the user and the merged folder's marker)."""
    if weights not in MERGE_WEIGHTS:
        raise UserError(f"--merge-weights: '{weights}' is none of {', '.join(MERGE_WEIGHTS)}")
    if weights == "dequantized" and cfg.load_in_4bit:
        return "the NF4 weights that were evaluated, dequantized"
    return "the base model's original weights" + (" (not the NF4 weights that were evaluated)"
                                                  if cfg.load_in_4bit else "")


def merge_adapter(cfg: ModelConfig, base_model: str, adapter_path: str | Path, output_dir: str | Path,
                  overwrite: bool = False, weights: str = "original") -> Path:
    """Merge the adapter into the base model and save it in safetensors (vLLM, TGI), on the CPU: the 16-bit base
    (16 GB at 8B) does not fit the cards a 4-bit run trains on. An existing ``output_dir`` is replaced only if
    it is empty, or with ``overwrite`` if it holds an earlier merged model.

    ``weights``: "original", the base model's own 16-bit weights (the model the adapter's base is published as;
    with a 4-bit run, the adapter was trained and evaluated against their NF4 rounding, so answers may differ a
    little from those evaluated), or "dequantized", the NF4 weights training and evaluation used, dequantized to
    the compute dtype (the merged model answers as the evaluated one did)."""
    from llm_trainer.adapter_folder import check_vocabulary
    from llm_trainer.modeling import attach_adapter, compute_dtype, load_model, load_tokenizer, torch_dtype

    made_from = merged_from(cfg, weights)
    output_dir = check_merge_target(output_dir, overwrite)
    tokenizer = load_tokenizer(str(adapter_path), cfg)
    check_vocabulary(base_model, tokenizer, adapter_path)
    on_cpu = cfg.model_copy(update={"allow_cpu": True})  # merging is a few additions: no GPU needed
    if weights == "dequantized" and cfg.load_in_4bit:
        base = load_model(base_model, on_cpu, device_map={"": "cpu"}).dequantize(dtype=torch_dtype(compute_dtype(cfg)))
    else:
        base = load_model(base_model, on_cpu.model_copy(update={"load_in_4bit": False}), device_map={"": "cpu"})
    merged = attach_adapter(base, adapter_path).merge_and_unload()

    def save(folder: str) -> None:
        merged.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (Path(folder) / MERGED_MARKER).write_text(json.dumps({"base_model": base_model, "weights": made_from,
                                                             "adapter": str(Path(adapter_path).resolve())}) + "\n")

    check_merge_target(output_dir, overwrite)  # again: something may have appeared while the model loaded
    return write_dir_atomically(output_dir, save, replace=True)
