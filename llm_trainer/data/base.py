"""BaseDataProcessor: load -> clean/format (one abstract method) -> de-duplicate -> split -> tokenize.

A new data set needs one subclass that implements ``format_batch`` (``begin_batch`` gives it its empty output
and the raw columns it reads); the rest (counting drops, strict mode, de-duplication, hash-stable splits,
chat-template tokenization, packing) is shared and vectorised.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc

from llm_trainer.config import DataConfig
from llm_trainer.data import tokenization
from llm_trainer.data.sources import CONVERTED, load_source
from llm_trainer.data.text import hash_to_unit_interval, stable_hash64
from llm_trainer.errors import DataError

logger = logging.getLogger(__name__)
DUPLICATE = "duplicate"
TOO_LONG = "too_long"
# Drops that follow from the config rather than from broken input: strict mode lets them pass.
NOT_MALFORMED = {DUPLICATE, TOO_LONG}
SPLITS = ("train", "validation", "test")
KEPT_COLUMNS = ["row_id", "question", "reference_answer", "messages"]
FORMATTED_COLUMNS = ("messages", "question", "reference_answer", "dedup_text", "drop_reason")  # format_batch's


class BaseDataProcessor(ABC):
    """Base of the data processors: a subclass formats raw rows, and the rest of processing is shared."""

    # Columns beyond KEPT_COLUMNS that ``format_batch`` returns and the evaluator needs (e.g. a SQL row's schema).
    extra_columns: tuple[str, ...] = ()
    # The system prompt while data.system_prompt is left at its default, which is the reasoning processor's own: a
    # domain's instruction (SQL, code), or none (chat and preference data bring their own turns).
    domain_system_prompt = ""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg

    def system_prompt(self) -> str:
        """data.system_prompt when the config sets one, else ``domain_system_prompt``."""
        prompt = self.cfg.system_prompt
        return self.domain_system_prompt if prompt == DataConfig.model_fields["system_prompt"].default else prompt

    def with_system_prompt(self, turns: list[dict[str, str]]) -> list[dict[str, str]]:
        """The chat turns after the system prompt (``system_prompt``), unless there is none or they start with
        their own."""
        system = self.system_prompt()
        if not system or (turns and turns[0]["role"] == "system"):
            return turns
        return [{"role": "system", "content": system}, *turns]

    def load(self) -> datasets.Dataset:
        """The configured source as a Dataset, each row numbered (``row_id``) and its read errors kept."""
        return load_source(self.cfg)

    @abstractmethod
    def format_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Clean and format a batch of raw rows.

        Returns, per input row: ``messages`` (chat turns ending with the assistant's target, or []),
        ``question`` and ``reference_answer`` (cleaned text, "" if none), ``dedup_text`` (text that
        identifies a duplicate) and ``drop_reason`` (None to keep the row).
        """

    def begin_batch(self, batch: dict[str, list[Any]], *names: str) -> tuple[dict[str, list[Any]], list[list[Any]]]:
        """``format_batch``'s start: its output (FORMATTED_COLUMNS and ``extra_columns``, empty) and the raw
        batch's columns ``names``, a column the batch lacks (or leaves empty) read as None in every row."""
        out: dict[str, list[Any]] = {k: [] for k in (*FORMATTED_COLUMNS, *self.extra_columns)}
        n = len(batch["row_id"])
        return out, [batch.get(name) or [None] * n for name in names]

    def preprocess(self, raw: datasets.Dataset) -> tuple[datasets.DatasetDict, dict[str, Any]]:
        """Raw rows -> train/validation/test splits (cleaned, de-duplicated), and the report."""
        formatted = raw.map(
            self._format_with_keys,
            batched=True,
            batch_size=self.cfg.map_batch_size,
            num_proc=_num_proc(self.cfg.num_proc, len(raw)),
            remove_columns=[c for c in raw.column_names if c != "row_id"],
            desc="clean and format",
        )
        reasons = np.array(formatted.data.column("drop_reason").to_pylist(), dtype=object)
        if self.cfg.strict:
            self._fail_on_first_malformed(formatted, reasons)
        keys = formatted.data.column("key_hash").to_numpy()
        kept = np.flatnonzero(reasons == None)  # noqa: E711 - elementwise comparison on an object array
        if self.cfg.deduplicate and len(kept):
            _, first = np.unique(keys[kept], return_index=True)
            duplicates = np.setdiff1d(kept, kept[first], assume_unique=True)
            reasons[duplicates] = DUPLICATE
            kept = np.sort(kept[first])
        splits = self._assign_splits(keys[kept])
        columns = KEPT_COLUMNS + list(self.extra_columns)
        processed = datasets.DatasetDict(
            {name: formatted.select(kept[splits == i]).select_columns(columns) for i, name in enumerate(SPLITS)}
        )
        if len(kept) == 0:
            raise DataError(f"data.source: no usable row in {self.cfg.source} ({_format_counts(reasons)})")
        report = {
            "rows_read": len(raw),
            "rows_kept": int(len(kept)),
            "dropped": _count(reasons[reasons != None]),  # noqa: E711
            "converted": _converted(raw),
            "splits": {name: len(ds) for name, ds in processed.items()},
        }
        if converted := report["converted"].get(CONVERTED):
            logger.warning("%s: %d reference answer(s) given as a number or a list of strings were read as text; "
                           "their rows are kept (%s)", self.cfg.source, converted, CONVERTED)
        return processed, report

    def tokenize(self, processed: datasets.DatasetDict, tokenizer: Any) -> tuple[datasets.DatasetDict, dict[str, Any]]:
        """The processed splits tokenized with the chat template (and packed), and the report."""
        return tokenization.tokenize_splits(processed, tokenizer, self.cfg)

    def _format_with_keys(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out = self.format_batch(batch)
        out["key_hash"] = np.array([stable_hash64(text) for text in out.pop("dedup_text")], dtype=np.uint64)
        return out

    def _assign_splits(self, keys: np.ndarray) -> np.ndarray:
        """0/1/2 = train/validation/test from the question's hash: stable as the data set grows."""
        fractions = self.cfg.splits
        unit = hash_to_unit_interval(keys)
        return np.searchsorted(np.array([fractions.train, fractions.train + fractions.validation]), unit, side="right")

    def _fail_on_first_malformed(self, formatted: datasets.Dataset, reasons: np.ndarray) -> None:
        bad = [i for i in np.flatnonzero(reasons != None) if reasons[i] not in NOT_MALFORMED]  # noqa: E711
        if bad:
            row_id = formatted[int(bad[0])]["row_id"]
            raise DataError(f"data.strict: row {row_id} of {self.cfg.source} is malformed: {reasons[bad[0]]}")


def _num_proc(requested: int, rows: int) -> int | None:
    # Worker processes cost ~1 s each to start; not worth it for small inputs.
    return requested if requested > 1 and rows >= 10_000 else None


def _count(values: np.ndarray) -> dict[str, int]:
    if len(values) == 0:
        return {}
    counts = pc.value_counts(values.astype(str))
    return {str(item["values"]): int(item["counts"]) for item in counts.to_pylist()}


def _converted(raw: datasets.Dataset) -> dict[str, int]:
    """Rows kept in a changed form when read (``load_note``), by kind."""
    if "load_note" not in raw.column_names:
        return {}
    notes = pc.drop_null(raw.with_format("arrow")["load_note"])
    return _count(np.array(notes.to_pylist(), dtype=object))


def _format_counts(reasons: np.ndarray) -> str:
    counts = _count(reasons[reasons != None])  # noqa: E711
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items())) or "no rows"


def check_needed_splits(processed: datasets.DatasetDict, tokenized: datasets.DatasetDict, cfg: DataConfig,
                        needed: list[str], purpose: str) -> None:
    """One line naming the first split ``purpose`` needs that holds no sample, and why it is empty."""
    for name in needed:
        if len(tokenized[name]):
            continue
        if len(processed[name]) == 0:
            why = f"no kept row hashed into it ({tokenization.split_sizes(processed, cfg)})"
        else:
            why = (f"all its {len(processed[name])} rows were dropped in tokenization (longer than "
                   f"data.max_seq_length = {cfg.max_seq_length} tokens)")
        raise DataError(f"data.splits: the {name} split is empty: {why}; {purpose} needs {name} rows")

