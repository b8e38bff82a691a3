"""PreferenceDataProcessor: preference pairs in the three shapes people's data comes in -> a prompt and two answers.

- ``pairs_text``: ``{"prompt": str, "chosen": str, "rejected": str}``;
- ``pairs_chat``: the same with chat message lists for the answers (and optionally the prompt), as in
  UltraFeedback-binarized, where ``chosen`` and ``rejected`` are whole conversations that start with the prompt;
- ``pairs_conversation``: no prompt column; ``chosen`` and ``rejected`` are conversations whose last assistant turn
  differs (the turns before it are the prompt), as in Anthropic's HH-RLHF.

``data.format: auto`` picks the shape from the columns and the first row, and names it in the report. A processed
row has ``messages`` (the prompt turns, then the chosen answer: what SFT tokenization, the validation loss and the
evaluators read, with the same chat template and prompt mask as SFT), and ``chosen`` and ``rejected`` (the two
answers' texts), which the DPO trainer turns into TRL's pairs. Malformed pairs are dropped and counted by reason:
missing_prompt, empty_answer, same_answers, prompts_differ, malformed_pair, too_long (and too_long after
tokenization, in training, against ``training.dpo.max_prompt_length`` and ``max_length``).
"""

from __future__ import annotations

from typing import Any

import datasets

from llm_trainer.config import DataConfig
from llm_trainer.data.base import TOO_LONG, BaseDataProcessor
from llm_trainer.data.conversations import ROLES
from llm_trainer.data.text import clean_text, dedup_key
from llm_trainer.errors import ConfigError, DataError

SHAPES = ("pairs_text", "pairs_chat", "pairs_conversation")
Turns = list[dict[str, str]]


def detect_shape(raw: datasets.Dataset) -> str:
    """The pair shape of ``raw`` from its columns and its first row with a chosen answer."""
    columns = raw.column_names
    if not {"chosen", "rejected"} <= set(columns):
        raise DataError(f"data.processor preference: the data needs 'chosen' and 'rejected' columns; it has "
                        f"{', '.join(sorted(columns))}")
    if "prompt" not in columns:
        return "pairs_conversation"
    first = next((c for c in raw["chosen"] if c is not None), None)
    return "pairs_chat" if isinstance(first, list) else "pairs_text"


class PreferenceDataProcessor(BaseDataProcessor):
    """``data.processor: preference``: prompt, chosen and rejected answers (for ``training.trainer: dpo``)."""

    extra_columns = ("chosen", "rejected")

    def __init__(self, cfg: DataConfig):
        super().__init__(cfg)
        if cfg.format not in ("auto", *SHAPES):
            raise ConfigError(f"data.format: '{cfg.format}' is a chat shape; the preference processor reads "
                              f"{', '.join(SHAPES)} (or auto)")
        self.format = None if cfg.format == "auto" else cfg.format

    def preprocess(self, raw: datasets.Dataset) -> tuple[datasets.DatasetDict, dict[str, Any]]:
        """As the base's, with the pair shape detected first and named in the report."""
        detected = self.format is None
        if detected:
            self.format = detect_shape(raw)
        processed, report = super().preprocess(raw)
        return processed, {"format": self.format, "format_detected": detected, **report}

    def format_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Rows of the pair shape -> prompt turns + chosen answer, and the two answers; bad pairs dropped."""
        out, (load_errors, prompts, chosen, rejected) = self.begin_batch(batch, "load_error", "prompt", "chosen",
                                                                        "rejected")
        for load_error, prompt, good, bad in zip(load_errors, prompts, chosen, rejected):
            reason, turns, good_text, bad_text = load_error, [], "", ""
            if reason is None:
                reason, turns, good_text, bad_text = self.pair(prompt, good, bad)
                turns = self.with_system_prompt(turns)
            if reason is None and sum(len(t["content"]) for t in turns) + len(good_text) + len(bad_text) > \
                    self.cfg.max_chars:
                reason = TOO_LONG
            if reason is not None:
                turns, good_text, bad_text = [], "", ""
            messages = [*turns, {"role": "assistant", "content": good_text}] if reason is None else []
            out["messages"].append(messages)
            out["question"].append(next((t["content"] for t in reversed(turns) if t["role"] == "user"), ""))
            out["reference_answer"].append(good_text)
            out["chosen"].append(good_text)
            out["rejected"].append(bad_text)
            out["dedup_text"].append(dedup_key("\n".join([*(t["content"] for t in turns), good_text, bad_text])))
            out["drop_reason"].append(reason)
        return out

    def pair(self, prompt: Any, chosen: Any, rejected: Any) -> tuple[str | None, Turns, str, str]:
        """(drop reason or None, the prompt turns, chosen text, rejected text) for one row."""
        try:
            prompt_turns = _prompt_turns(prompt)
            good_prefix, good = _answer(chosen)
            bad_prefix, bad = _answer(rejected)
        except ValueError:
            return "malformed_pair", [], "", ""
        if prompt_turns is None:  # pairs_conversation: the turns before the answers are the prompt
            if good_prefix != bad_prefix:
                return "prompts_differ", [], "", ""
            prompt_turns = good_prefix
        elif any(prefix and prefix != prompt_turns for prefix in (good_prefix, bad_prefix)):
            return "prompts_differ", [], "", ""
        if not prompt_turns or not any(t["role"] == "user" and t["content"] for t in prompt_turns):
            return "missing_prompt", [], "", ""
        if not good or not bad:
            return "empty_answer", [], "", ""
        if good == bad:
            return "same_answers", [], "", ""
        return None, prompt_turns, good, bad


def _prompt_turns(prompt: Any) -> Turns | None:
    """The prompt column as chat turns; None when there is no prompt column (or it is empty in this row)."""
    if prompt is None:
        return None
    if isinstance(prompt, str):
        return [{"role": "user", "content": clean_text(prompt)}] if prompt.strip() else []
    return _turns(prompt)


def _answer(side: Any) -> tuple[Turns, str]:
    """(the turns before the answer, the answer's text) of a chosen or rejected value: a text, or a conversation
    whose last turn is the assistant's answer. A ValueError when it is neither."""
    if side is None:
        return [], ""
    if isinstance(side, str):
        return [], clean_text(side)
    turns = _turns(side)
    if not turns or turns[-1]["role"] != "assistant":
        raise ValueError("the answer's conversation does not end with an assistant turn")
    return turns[:-1], turns[-1]["content"]


def _turns(value: Any) -> Turns:
    """A list of {role, content} messages, cleaned; a ValueError for anything else."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ValueError("not a list of messages")
    turns = []
    for turn in value:
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES or not (content is None or isinstance(content, str)):
            raise ValueError(f"bad message {turn!r:.80}")
        turns.append({"role": role, "content": clean_text(content or "")})
    return turns
