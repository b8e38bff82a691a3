"""The data section: where the rows come from, how they are cleaned, split, templated and packed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from llm_trainer.registry import PROCESSORS

from llm_trainer.config.base import Section


class SplitFractions(Section):
    """Fractions of the cleaned rows per split; assignment is by a stable hash of the question."""

    train: float = Field(0.9, gt=0, le=1, description="Share of the rows the adapter trains on.")
    validation: float = Field(0.05, ge=0, lt=1, description="Share for the validation loss during training "
                              "(early stopping reads it).")
    test: float = Field(0.05, ge=0, lt=1, description="Share held out for the evaluation of the base and the "
                        "fine-tuned model.")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must sum to 1 (got {total:g})")
        return self


class DataConfig(Section):
    """The ``data`` section: which processor reads which source, how rows are cleaned, split, templated, packed."""

    processor: str = Field("reasoning", description="Data processor name (registry) or 'module:Class'.")
    source: str = Field(description="Hub data set id, or a local .jsonl/.json/.parquet/.csv file or folder.")
    split: str = Field("train", description="Split of a Hub data set to read.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for reproducibility.")
    max_samples: int | None = Field(None, gt=0, description="Read only the first N rows of the source.")
    num_proc: int = Field(1, gt=0, description="Worker processes for the batched map steps.")
    map_batch_size: int = Field(1000, gt=0, description="Rows per batch in the batched map steps.")
    system_prompt: str = Field(
        "You are a careful assistant. Reason step by step, then end with a line 'Final answer: <answer>'.",
        description="System message put first in training, evaluation, `use` and `serve`; '' for none. The chat "
        "and sql processors do not use this default (sql has its own).")
    target: Literal["reference_answer", "response", "response_with_answer"] = Field(
        "response_with_answer",
        description="What the assistant learns: the reference answer, the first response, or the response "
        "followed by a final-answer line built from the reference answer (falls back to whichever exists).",
    )
    final_answer_template: str = Field("Final answer: {answer}", description="The line that target "
                                       "response_with_answer puts after the response; must contain '{answer}'.")
    response_model: str | None = Field(None, description="Use the response of this model; default: the first.")
    max_chars: int = Field(100_000, gt=0, description="Rows whose question+target exceed this are dropped early.")
    max_seq_length: int = Field(2048, ge=16, description="Tokens per training sample (and per packed block).")
    overlength: Literal["drop", "truncate"] = Field("drop", description="A sample over max_seq_length: drop it, or "
                                                    "cut its completion (a prompt that alone is too long is dropped).")
    packing: bool = Field(True, description="Pack samples into max_seq_length blocks (attention never crosses "
                          "samples); false: one sample a row, padded per batch.")
    deduplicate: bool = Field(True, description="Drop rows that repeat an earlier one (reasoning: the same question "
                              "up to case and spacing).")
    strict: bool = Field(False, description="Fail on the first malformed row instead of dropping it.")
    splits: SplitFractions = Field(SplitFractions(), description="Train/validation/test fractions; a row's split "
                                   "comes from a stable hash of its question, so it keeps it as the data grows.")
    # The chat processor (llm_trainer/data/conversations.py).
    format: Literal["auto", "messages", "alpaca", "sharegpt", "pairs_text", "pairs_chat", "pairs_conversation"] = Field(
        "auto", description="chat (messages, alpaca, sharegpt) and preference (pairs_text, pairs_chat, "
        "pairs_conversation): the rows' shape; auto detects it from the columns and names it in the report.")
    alternating_turns: bool = Field(True, description="chat: drop conversations with two user (or assistant) "
                                    "turns in a row, which most chat templates forbid.")
    # The SQL processor (llm_trainer/data/sql.py).
    sql_dialect: str = Field("sqlite", description="sql: dialect of gold queries that SQLite rejects; they are "
                             "transpiled from it to SQLite with sqlglot (and counted).")
    sql_with_explanation: bool = Field(False, description="sql: the target is the explanation, then the SQL.")

    @field_validator("processor")
    @classmethod
    def _known_processor(cls, value: str) -> str:
        return PROCESSORS.check(value)

    @field_validator("sql_dialect")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        from sqlglot.dialects.dialect import Dialect

        try:
            Dialect.get_or_raise(value)
        except ValueError as exc:
            raise ValueError(f"unknown SQL dialect '{value}' (sqlglot: {' '.join(str(exc).split())[:120]})") from exc
        return value

    @field_validator("final_answer_template")
    @classmethod
    def _has_answer_field(cls, value: str) -> str:
        if "{answer}" not in value:
            raise ValueError("must contain '{answer}'")
        return value

    @field_validator("source")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value
