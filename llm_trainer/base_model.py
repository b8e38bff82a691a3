"""The base model, resolved in one place: a Hub id (with its revision) or a built folder (the offline tiny model).

The tokenize step prepares the tokenizer; the ``base_model`` step resolves the base model once, into a
:class:`BaseModelRef` that travels between steps as an artifact (the materializer copies a built folder into the
artifact store), so that train and evaluate steps on another machine load exactly what was resolved here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_trainer.config import ModelConfig
from llm_trainer.errors import UserError
from llm_trainer.modeling import load_tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseModelRef:
    """What ``from_pretrained`` loads: a Hub id at a revision or a local path, as configured; or a folder this
    project ``built`` (the tiny model), whose files travel inside the artifact."""

    name_or_path: str
    revision: str | None = None
    built: bool = False


def prepare_tokenizer(cfg: ModelConfig, train_split: Any) -> Any:
    """The base model's tokenizer; for tiny-llama, one trained on the train split's text."""
    if not cfg.is_tiny:
        return load_tokenizer(cfg.base_model, cfg)
    from llm_trainer.tiny_model import build_tiny_tokenizer

    return build_tiny_tokenizer(conversation_texts(train_split), cfg)


def conversation_texts(train_split: Any) -> Any:
    """Each row's turns (texts), streamed in batches: what the tiny tokenizer and model are built from."""
    return ([turn["content"] for turn in messages] for batch in train_split.iter(batch_size=1000)
            for messages in batch["messages"])


def resolve_base_model(cfg: ModelConfig, tokenizer: Any, seed: int, train_split: Any = None) -> BaseModelRef:
    """The Hub id or path as configured, or the tiny model built for this tokenizer (and seed). The tiny model is
    cached by content; where the cache is empty (another machine), ``train_split`` gives its pre-training text."""
    if not cfg.is_tiny:
        return BaseModelRef(cfg.base_model, revision=cfg.revision)
    from llm_trainer.tiny_model import build_tiny_model

    rows = conversation_texts(train_split) if train_split is not None else None
    return BaseModelRef(str(build_tiny_model(tokenizer, cfg, seed, rows=rows)), built=True)


def looks_like_path(name: str) -> bool:
    """A local path rather than a Hub id ('org/name')."""
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1


def base_model_here(base_model: str, adapter_folder: Path, model: ModelConfig, seed: int, rebuild: str) -> str:
    """The adapter's base model as recorded, unless that is a local folder that is gone (after `make clean`, or an
    adapter trained on another machine). Then, for the tiny model, the same build on this machine (same tokenizer,
    ``model.tiny`` settings and seed) if there is one; otherwise one line naming the missing folder and the
    command ``rebuild`` that builds it again."""
    if not looks_like_path(base_model) or Path(base_model).expanduser().exists():
        return base_model
    gone = f"the adapter's base model folder {base_model} is gone"
    if not model.is_tiny:
        raise UserError(f"model.base_model: {gone} (deleted or moved, or the adapter was trained on another "
                        "machine); the adapter needs that model there")
    from llm_trainer.tiny_model import tiny_model_folder

    here = tiny_model_folder(load_tokenizer(str(adapter_folder), model), model, seed)
    if here.is_dir():
        logger.warning("%s; using the same tiny model built here: %s", gone, here)
        return str(here)
    raise UserError(f"model.base_model: {gone} (`make clean`, or another machine); rebuild it from the same data, "
                    f"seed and model.tiny settings with `{rebuild}`, then run this again")

