"""Questions captured by ``serve --capture FILE`` (or written by hand) as an evaluation set.

A line of the file is a JSON object with ``messages`` (the conversation the served model was given, as the
capture writes it) or just ``question`` (then asked after the config's system prompt), and a ``reference``: the
right answer, which a person adds to the captured lines they want scored. Lines without a reference are counted
and skipped; other fields (the served ``answer``, ``id``, token counts) are kept in the examples for reading.
The rows come out in the shape of the processed test split (``messages`` ending with the reference turn,
``question``, ``reference_answer``, ``row_id``, ``task``), so the config's evaluator scores them unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.errors import UserError

ROLES = ("system", "user", "assistant")


@dataclass
class CapturedQuestions:
    """The rows to score, and what was left out: lines without a reference, and unreadable lines (1-based)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    no_reference: int = 0
    unreadable: list[int] = field(default_factory=list)

    @property
    def lines(self) -> int:
        """Non-empty lines read."""
        return len(self.rows) + self.no_reference + len(self.unreadable)


def _conversation(row: dict[str, Any], system_prompt: str) -> list[dict[str, str]] | None:
    """The conversation up to the question: the captured ``messages``, else the system prompt and ``question``."""
    messages = row.get("messages")
    if isinstance(messages, list) and messages:
        if not all(isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
                   for m in messages) or messages[-1]["role"] != "user":
            return None
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        return None
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": question.strip()}]


def load_questions(path: str | Path, system_prompt: str = "") -> CapturedQuestions:
    """Read a capture file (JSONL). A missing file, or one with no line to score, is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--questions {path}: no such file")
    found = CapturedQuestions()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            conversation = _conversation(row, system_prompt) if isinstance(row, dict) else None
            if conversation is None:
                found.unreadable.append(number)
                continue
            reference = row.get("reference")
            if reference is None or (isinstance(reference, str) and not reference.strip()):
                found.no_reference += 1
                continue
            reference = str(reference).strip()
            found.rows.append({
                "row_id": str(row.get("id") or f"line-{number}"), "question": conversation[-1]["content"],
                "reference_answer": reference, "task": str(row.get("task") or ""),
                "messages": conversation + [{"role": "assistant", "content": reference}],
                "served_answer": row.get("answer") if isinstance(row.get("answer"), str) else ""})
    if not found.rows:
        raise UserError(f"--questions {path}: none of its {found.lines} lines has a 'reference' to score against "
                        "(add \"reference\": \"<the right answer>\" to the captured lines to score)")
    return found


def questions_dataset(found: CapturedQuestions) -> Any:
    """The rows as a datasets.Dataset, shaped like the processed test split."""
    import datasets

    return datasets.Dataset.from_list(found.rows)


def skipped_message(found: CapturedQuestions, path: str | Path) -> str | None:
    """One line on what was not scored, or None when every line was."""
    parts = []
    if found.no_reference:
        parts.append(f"{found.no_reference} without a 'reference' (skipped; add one to score them)")
    if found.unreadable:
        shown = ", ".join(map(str, found.unreadable[:5])) + (", ..." if len(found.unreadable) > 5 else "")
        parts.append(f"{len(found.unreadable)} unreadable (line {shown}: no JSON object with 'messages' ending "
                     "with a user turn or a 'question')")
    if not parts:
        return None
    return f"{path}: {len(found.rows)} of {found.lines} lines scored; " + "; ".join(parts)
