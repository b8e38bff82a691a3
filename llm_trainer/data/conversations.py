"""ChatDataProcessor: the three shapes users' own chat and instruction data come in -> chat messages.

- ``messages``: OpenAI style, ``{"messages": [{"role": "system|user|assistant", "content": ...}, ...]}``;
- ``alpaca``: ``instruction``, optional ``input``, ``output``;
- ``sharegpt``: ``{"conversations": [{"from": "human|gpt|system", "value": ...}, ...]}``.

``data.format: auto`` picks the shape from the columns and names it in the report. Malformed conversations are
dropped and counted by reason: unknown_role, empty_content, no_assistant_turn, consecutive_user_turns (and
consecutive_assistant_turns) when ``data.alternating_turns`` (most chat templates forbid them), misplaced_system_turn,
malformed_conversation, and other_format for a row in another of the three shapes than ``data.format`` (a file that
mixes shapes: the report warns, naming how many rows each other shape has). Turns after the last assistant turn
have no target and are cut.

Multi-turn conversations train on every assistant turn: ``tokenize_multiturn_batch`` masks everything else.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import datasets

from llm_trainer.config import DataConfig
from llm_trainer.data import tokenization
from llm_trainer.data.base import TOO_LONG, BaseDataProcessor
from llm_trainer.data.text import clean_text, dedup_key
from llm_trainer.errors import ConfigError, DataError

FORMAT_COLUMNS = {"messages": ("messages",), "sharegpt": ("conversations",), "alpaca": ("instruction", "output")}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}
ROLES = ("system", "user", "assistant")
SHAPE_COLUMNS = tuple(dict.fromkeys(c for needed in FORMAT_COLUMNS.values() for c in needed))
OTHER_FORMAT = "other_format"
logger = logging.getLogger(__name__)


def detect_format(columns: list[str]) -> str:
    """The shape named by the columns; an error naming them when none or several match."""
    found = [name for name, needed in FORMAT_COLUMNS.items() if all(c in columns for c in needed)]
    if len(found) == 1:
        return found[0]
    what = f"columns for several shapes ({', '.join(found)})" if found else "no chat columns"
    raise DataError(f"data.format: cannot detect the data's shape: {what} among {', '.join(sorted(columns))}; "
                    "expected 'messages' (messages), 'conversations' (sharegpt) or 'instruction' + 'output' "
                    "(alpaca); set data.format")


class ChatDataProcessor(BaseDataProcessor):
    """``data.processor: chat``: multi-turn conversations (messages, alpaca or sharegpt rows)."""

    def __init__(self, cfg: DataConfig):
        super().__init__(cfg)
        if cfg.format not in ("auto", *FORMAT_COLUMNS):
            raise ConfigError(f"data.format: '{cfg.format}' is a preference shape; the chat processor reads "
                              f"{', '.join(FORMAT_COLUMNS)} (or auto)")
        self.format = None if cfg.format == "auto" else cfg.format

    def preprocess(self, raw: datasets.Dataset) -> tuple[datasets.DatasetDict, dict[str, Any]]:
        """As the base's, with the rows' format detected first and named in the report."""
        detected = self.cfg.format == "auto"
        if detected:
            self.format = detect_format(raw.column_names)
        missing = [c for c in FORMAT_COLUMNS[self.format] if c not in raw.column_names]
        if missing:
            raise DataError(f"data.format: {self.format} data needs the column(s) {', '.join(missing)}; "
                            f"{self.cfg.source} has {', '.join(sorted(raw.column_names))}")
        processed, report = super().preprocess(raw)
        report = {"format": self.format, "format_detected": detected, **report}
        if report["dropped"].get(OTHER_FORMAT):
            warning = self._other_format_warning(raw, report["dropped"][OTHER_FORMAT])
            logger.warning(warning)
            report["warnings"] = [warning]
        return processed, report

    def _other_format_warning(self, raw: datasets.Dataset, dropped: int) -> str:
        columns = [c for c in SHAPE_COLUMNS if c in raw.column_names]
        shapes: Counter[str] = Counter()
        for batch in raw.select_columns(columns).iter(batch_size=self.cfg.map_batch_size):
            shapes.update(shape for shape in map(self._other_shape, _rows(batch)) if shape)
        found = ", ".join(f"{shape}: {n}" for shape, n in sorted(shapes.items()))
        return (f"data.format: {dropped} rows are in another chat shape than {self.format} ({found}) and were "
                f"dropped as {OTHER_FORMAT}; the file mixes shapes: split it by shape to train on every row")

    def _other_shape(self, row: dict[str, Any]) -> str | None:
        """The other shape a row is written in, when its own shape's columns are empty and another's are filled."""
        if any(row.get(c) is not None for c in FORMAT_COLUMNS[self.format]):
            return None
        return next((name for name, needed in FORMAT_COLUMNS.items()
                     if name != self.format and all(row.get(c) is not None for c in needed)), None)

    def tokenize(self, processed: datasets.DatasetDict, tokenizer: Any) -> tuple[datasets.DatasetDict, dict[str, Any]]:
        """As the base's, with every assistant turn of a conversation learnt, not only the last."""
        return tokenization.tokenize_splits(processed, tokenizer, self.cfg, batch_fn=tokenize_multiturn_batch)

    def format_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Rows of the detected format -> chat messages; a malformed conversation is dropped."""
        if self.format is None:  # format_batch called directly, without preprocess
            self.format = detect_format(list(batch))
        out, (load_errors,) = self.begin_batch(batch, "load_error")
        for index, load_error in enumerate(load_errors):
            if load_error is not None:
                reason, messages = load_error, []
            else:
                reason, messages = self._conversation(batch, index)
                if reason is None:
                    reason = self._check(messages)
            if reason is not None:
                messages = []
            out["messages"].append(messages)
            out["question"].append(next((m["content"] for m in reversed(messages) if m["role"] == "user"), ""))
            out["reference_answer"].append(messages[-1]["content"] if messages else "")
            out["dedup_text"].append(dedup_key("\n".join(f"{m['role']}: {m['content']}" for m in messages)))
            out["drop_reason"].append(reason)
        return out

    def _conversation(self, batch: dict[str, list[Any]], index: int) -> tuple[str | None, list[dict[str, str]]]:
        """(drop reason or None, the turns as {role, content}) for one row."""
        if self._other_shape({c: batch[c][index] for c in SHAPE_COLUMNS if c in batch}):
            return OTHER_FORMAT, []
        if self.format == "alpaca":
            instruction, output = batch["instruction"][index], batch["output"][index]
            extra = batch["input"][index] if "input" in batch else None
            if not all(isinstance(v, str) or v is None for v in (instruction, output, extra)):
                return "malformed_conversation", []
            prompt = "\n\n".join(clean_text(part) for part in (instruction or "", extra or "") if part and part.strip())
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": clean_text(output or "")}]
        else:
            turns = batch[FORMAT_COLUMNS[self.format][0]][index]
            role_key, content_key = ("role", "content") if self.format == "messages" else ("from", "value")
            if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
                return "malformed_conversation", []
            messages = []
            for turn in turns:
                role, content = turn.get(role_key), turn.get(content_key)
                role = SHAREGPT_ROLES.get(str(role).lower()) if self.format == "sharegpt" else role
                if role not in ROLES:
                    return "unknown_role", []
                if content is not None and not isinstance(content, str):
                    return "malformed_conversation", []
                messages.append({"role": role, "content": clean_text(content or "")})
        return None, self.with_system_prompt(messages)

    def _check(self, messages: list[dict[str, str]]) -> str | None:
        if any(not m["content"] for m in messages):
            return "empty_content"
        if any(m["role"] == "system" for m in messages[1:]):
            return "misplaced_system_turn"
        last_assistant = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last_assistant is None:
            return "no_assistant_turn"
        del messages[last_assistant + 1:]  # trailing turns have no target
        if self.cfg.alternating_turns:
            roles = [m["role"] for m in messages if m["role"] != "system"]
            for previous, current in zip(roles, roles[1:]):
                if previous == current:
                    return f"consecutive_{current}_turns"
        if sum(len(m["content"]) for m in messages) > self.cfg.max_chars:
            return TOO_LONG
        return None


def _rows(batch: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(batch, values)) for values in zip(*batch.values())]


def render_multiturn_segments(tokenizer: Any, conversation: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, is_label) pieces: each assistant turn (its content and end-of-turn) is a
    label piece; the system and user turns and the assistant headers are not. Relies on the chat template rendering
    every prefix of the conversation as a prefix of the whole."""
    full = tokenizer.apply_chat_template(conversation, tokenize=False)
    pieces, done = [], 0
    for i, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        start = tokenizer.apply_chat_template(conversation[:i], tokenize=False, add_generation_prompt=True)
        end = tokenizer.apply_chat_template(conversation[:i + 1], tokenize=False)
        if not (full.startswith(end) and end.startswith(start) and len(start) >= done):
            raise ConfigError("model.chat_template: a prefix of the conversation does not render as a prefix of the "
                              "whole, so the assistant turns cannot be masked exactly")
        pieces += [(full[done:len(start)], False), (end[len(start):], True)]
        done = len(end)
    if done < len(full):
        pieces.append((full[done:], False))
    return [(text, label) for text, label in pieces if text]


def tokenize_multiturn_batch(batch: dict[str, list], tokenizer: Any, max_seq_length: int,
                             truncate: bool) -> dict[str, list]:
    """``tokenization.tokenize_batch`` for conversations with several assistant turns: labels on all of them.
    ``prompt_length`` is the length before the first label token."""
    segments = [render_multiturn_segments(tokenizer, conversation) for conversation in batch["messages"]]
    flat = [text for pieces in segments for text, _ in pieces]
    encoded = iter(tokenization.encode(tokenizer, flat))
    out: dict[str, list] = {"input_ids": [], "labels": [], "length": [], "prompt_length": [], "label_tokens": [],
                            tokenization.CUT_TOKENS: []}
    for pieces in segments:
        ids, labels = [], []
        for _, is_label in pieces:
            piece = next(encoded)
            ids += piece
            labels += piece if is_label else [tokenization.IGNORE_INDEX] * len(piece)
        prompt = next((i for i, label in enumerate(labels) if label != tokenization.IGNORE_INDEX), len(labels))
        full = len(ids)
        if truncate and prompt < max_seq_length and len(ids) > max_seq_length:
            ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        kept_labels = len(labels) - labels.count(tokenization.IGNORE_INDEX)
        out[tokenization.CUT_TOKENS].append(full - len(ids))
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["length"].append(len(ids))
        out["prompt_length"].append(prompt)
        out["label_tokens"].append(kept_labels)
    return out
