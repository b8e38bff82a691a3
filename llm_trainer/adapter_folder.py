"""A saved LoRA adapter folder, checked before any model loads: each problem is one line naming the file.

A folder holds ``adapter_model.safetensors`` (the LoRA weights), ``adapter_config.json`` (peft's settings: rank,
target modules, base model), the tokenizer and ``llm_trainer_adapter.json`` (the base model this project trained
it on). An empty or truncated weights file, a config that is not JSON, a rank that does not match the weights, a
base model whose vocabulary is smaller than the tokenizer's: each is found here from the
files' headers, without loading a weight.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llm_trainer.errors import UserError
from llm_trainer.fsutil import read_text_file


ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_INFO_FILE = "llm_trainer_adapter.json"
AGAIN = "save or copy the adapter again"
LORA_TENSOR = re.compile(r"\.lora_(?:embedding_)?([AB])(?:\.weight)?$")  # peft's names, adapter name removed


def check_adapter_folder(path: str | Path) -> str:
    """Refuse a folder that peft would fail on, cheapest check first; returns the base model it belongs to."""
    folder = Path(path)
    weights, config_file, info_file = folder / ADAPTER_WEIGHTS, folder / ADAPTER_CONFIG, folder / ADAPTER_INFO_FILE
    if not weights.is_file():  # peft would fall back to a pickle-based adapter_model.bin
        found = ", ".join(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else "no such folder"
        raise UserError(f"adapter: '{folder}' holds no {ADAPTER_WEIGHTS} (found: {found or 'nothing'}); "
                        "adapters load from safetensors only")
    if not config_file.is_file():
        raise UserError(f"adapter: {folder} is not an adapter folder (no {ADAPTER_CONFIG})")
    config = read_json_object(config_file)
    info = read_json_object(info_file) if info_file.is_file() else {}
    base_model = info.get("base_model") or config.get("base_model_name_or_path")
    if not isinstance(base_model, str) or not base_model.strip():
        raise UserError(f"adapter: {config_file} has no base_model_name_or_path (and no {ADAPTER_INFO_FILE} names "
                        "the base model), so which base model the adapter belongs to is unknown")
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserError(f"adapter: {config_file}: 'r' (the LoRA rank) must be a positive integer, got {rank!r}")
    _check_weights(weights, config_file, rank, config.get("rank_pattern") or {})
    return base_model


def read_json_object(path: Path, where: str = "adapter", fix: str = AGAIN) -> dict[str, Any]:
    """A JSON file that must hold an object; a file that is not JSON, or holds a list, is a one-line UserError."""
    try:
        data = json.loads(read_text_file(path, "a JSON file"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: {path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                        f"{fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{where}: {path} holds a JSON {type(data).__name__}, not an object; {fix}")
    return data


def _check_weights(weights: Path, config_file: Path, rank: int, rank_pattern: dict[str, int]) -> None:
    """The safetensors header (read; no tensor is): it must cover the whole file, hold LoRA weights, and each
    LoRA pair's inner dimension must be the configured rank (per-module ``rank_pattern`` entries included)."""
    from safetensors import SafetensorError, safe_open

    if weights.stat().st_size == 0:
        raise UserError(f"adapter: {weights} is empty (0 bytes): the save or copy was cut short; {AGAIN}")
    try:
        with safe_open(str(weights), framework="numpy") as handle:
            shapes = {name: handle.get_slice(name).get_shape() for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise UserError(f"adapter: {weights} is truncated or damaged ({' '.join(str(exc).split())}); {AGAIN}") \
            from None
    lora = {match: shape for name, shape in shapes.items() if (match := LORA_TENSOR.search(name))}
    if not lora:
        raise UserError(f"adapter: {weights} holds no LoRA weights ({len(shapes)} other tensors); {AGAIN}")
    for match, shape in lora.items():
        module = match.string[:match.start()]
        expected = next((r for key, r in rank_pattern.items() if re.match(rf"(.*\.)?{key}$", module)), rank)
        found = shape[0] if match.group(1) == "A" else shape[1] if len(shape) > 1 else None  # A: (r, in), B: (out, r)
        if found != expected:
            raise UserError(f"adapter: {weights} holds rank-{found} LoRA weights ({match.string}: {list(shape)}), but "
                            f"{config_file} says r: {expected}; the two files come from different adapters")


def check_vocabulary(base_model: str, tokenizer: Any, tokenizer_source: str | Path) -> None:
    """A base model whose embedding has fewer rows than the tokenizer has tokens fails on the first token past its
    end; a local base folder's config.json says so before its weights load (a Hub id is not checked here)."""
    config_file = Path(base_model).expanduser() / "config.json"
    if not config_file.is_file():
        return
    rows = read_json_object(config_file, "model.base_model", "the base model folder is damaged").get("vocab_size")
    if isinstance(rows, int) and rows < len(tokenizer):
        raise UserError(f"model.base_model: {config_file} has vocab_size {rows}, fewer than the {len(tokenizer)} "
                        f"tokens of the tokenizer in {tokenizer_source}: the tokenizer is not this base model's")
