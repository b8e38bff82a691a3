"""ReasoningDataProcessor: facebook/natural_reasoning rows -> system/user/assistant chat messages.

Schema: ``question`` (str), ``reference_answer`` (str, may be empty), ``responses`` (list of
{``response_model``, ``response``}). ``data.target`` picks what the assistant learns.
"""

from __future__ import annotations

import json
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_trainer.data.base import TOO_LONG, BaseDataProcessor
from llm_trainer.data.text import clean_text, dedup_key

TASK = "task"  # optional source column: the row's task family, for accuracy per family


class ReasoningDataProcessor(BaseDataProcessor):
    """``data.processor: reasoning``: question/answer rows such as natural_reasoning's."""

    def preprocess(self, raw: datasets.Dataset) -> tuple[datasets.DatasetDict, dict[str, Any]]:
        """As the base's, with each row's optional ``task`` column carried to its split."""
        processed, report = super().preprocess(raw)
        return _with_task_column(processed, raw), report

    def format_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Question and ``data.target`` -> system/user/assistant messages per row."""
        out, columns = self.begin_batch(batch, "load_error", "question", "reference_answer", "responses")
        for load_error, question, reference, response_list in zip(*columns):
            row = self._format_row(question, reference, response_list) if load_error is None else (load_error,)
            reason, *values = row
            messages, question_text, reference_text = values if values else ([], "", "")
            out["messages"].append(messages)
            out["question"].append(question_text)
            out["reference_answer"].append(reference_text)
            out["dedup_text"].append(dedup_key(question_text))
            out["drop_reason"].append(reason)
        return out

    def _format_row(self, question: Any, reference: Any, responses: Any) -> tuple:
        cfg = self.cfg
        if question is None:
            return ("missing_question",)
        if not isinstance(question, str):
            return ("question_not_a_string",)
        question = clean_text(question)
        if not question:
            return ("empty_question",)
        if reference is not None and not isinstance(reference, str):
            return ("reference_answer_not_a_string",)
        reference = clean_text(reference or "")
        response = self._pick_response(responses)
        if response is False:
            return ("malformed_responses",)
        target = self._target(reference, response)
        if not target:
            return ("no_target",)
        if len(question) + len(target) > cfg.max_chars:
            return (TOO_LONG,)
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": target}]
        if cfg.system_prompt:
            messages.insert(0, {"role": "system", "content": cfg.system_prompt})
        return (None, messages, question, reference)

    def _pick_response(self, responses: Any) -> str | bool:
        """The chosen response text ("" if none), or False when ``responses`` is malformed."""
        if responses is None:
            return ""
        if isinstance(responses, str):  # CSV files carry the list as JSON text
            try:
                responses = json.loads(responses) if responses.strip() else []
            except json.JSONDecodeError:
                return False
        if not isinstance(responses, list):
            return False
        for entry in responses:
            if not isinstance(entry, dict) or not isinstance(entry.get("response"), str):
                return False
        wanted = self.cfg.response_model
        for entry in responses:
            if wanted is None or entry.get("response_model") == wanted:
                text = clean_text(entry["response"])
                if text:
                    return text
        return ""

    def _target(self, reference: str, response: str) -> str:
        target = self.cfg.target
        answer_line = self.cfg.final_answer_template.format(answer=reference) if reference else ""
        if target == "reference_answer":
            return reference
        if target == "response":
            return response
        return "\n\n".join(part for part in (response, answer_line) if part)


def _with_task_column(processed: datasets.DatasetDict, raw: datasets.Dataset) -> datasets.DatasetDict:
    """Each split's rows get their source row's ``task`` (as text, "" if null), looked up by row_id."""
    if TASK not in raw.column_names or "row_id" not in raw.column_names:
        return processed
    source = raw.with_format("arrow")  # respects an indices mapping (data.max_samples), unlike raw.data
    column = source[TASK]
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        try:
            column = pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return processed  # e.g. nested values: no family to group by
    tasks = pc.fill_null(column, "")
    ids = source["row_id"].to_numpy()
    order = np.argsort(ids, kind="stable")
    out = {}
    for name, split in processed.items():
        wanted = split.with_format("arrow")["row_id"].to_numpy()
        positions = order[np.searchsorted(ids, wanted, sorter=order)] if len(wanted) else np.zeros(0, np.int64)
        out[name] = split.add_column(TASK, tasks.take(pa.array(positions)).to_pylist())
    return datasets.DatasetDict(out)
