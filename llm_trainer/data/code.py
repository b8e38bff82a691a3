"""CodeDataProcessor: Python problems with tests (MBPP and HumanEval shapes) -> chat messages.

MBPP shape (google-research-datasets/mbpp): ``text`` (the task), ``code`` (a reference solution), ``test_list``
(assert lines) and ``test_setup_code``. HumanEval shape (openai/openai_humaneval): ``prompt`` (signature and
docstring), ``canonical_solution`` (its body), ``test`` (a ``check(candidate)`` function) and ``entry_point``. The
shape is read per row from its columns. An optional ``task`` column names the row's task family (the evaluator's
per-family metrics).

The prompt is the task with its tests (MBPP, as the MBPP paper prompts) or the function to complete (HumanEval); the
target is the whole solution in a ```python fence. ``reference_answer`` holds the tests (and the setup before a
marker line, ``evaluation.code.join_reference``): what the evaluator and GRPO's ``tests_pass`` reward run.

Rows are dropped, and counted, when they have no task, no reference solution or no tests, when they are longer than
``data.max_chars``, and when the reference solution fails its own tests: every reference runs in the code sandbox,
a batch at a time, in parallel (with the layers the machine has: the references come from the data set you chose,
not from a model).
"""

from __future__ import annotations

import logging
from typing import Any

from llm_trainer.code_sandbox import CodeSandbox, Job, Limits, describe_layers, layers
from llm_trainer.data.base import TOO_LONG, BaseDataProcessor
from llm_trainer.data.text import dedup_key
from llm_trainer.evaluation.code import join_reference

logger = logging.getLogger(__name__)
DEFAULT_SYSTEM_PROMPT = "You write correct Python. Answer with the complete code in one ```python code block."
REFERENCE_TIMEOUT_SECONDS = 10.0
REFERENCE_FAILS = "reference_fails_tests"


def mbpp_prompt(text: str, tests: str) -> str:
    """The user turn of an MBPP-shaped row: the task, then the tests the code must pass."""
    return f"{text}\nYour code should pass these tests:\n{tests}"


def humaneval_prompt(prompt: str) -> str:
    """The user turn of a HumanEval-shaped row: the function to complete."""
    return f"Complete this Python function:\n```python\n{prompt.rstrip()}\n```"


def code_target(code: str) -> str:
    """The assistant turn: the whole solution in a ```python fence."""
    return f"```python\n{code.strip()}\n```"


def _text(value: Any) -> str:
    return value.strip("\n") if isinstance(value, str) else ""


def _tests(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "\n".join(t.strip() for t in value if isinstance(t, str) and t.strip())
    return _text(value).strip()


class CodeDataProcessor(BaseDataProcessor):
    """``data.processor: code``: Python problems whose reference solution passes their own tests."""

    extra_columns = ("task", "reference_code")
    domain_system_prompt = DEFAULT_SYSTEM_PROMPT

    def format_batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Problems -> chat messages, with the tests as the reference; references checked in the sandbox."""
        out, columns = self.begin_batch(batch, "load_error", "text", "code", "test_list", "test_setup_code",
                                        "prompt", "canonical_solution", "test", "entry_point", "task")
        formatted = [self._format_row(*row) for row in zip(*columns)]
        checked = [i for i, (reason, _) in enumerate(formatted) if reason is None]
        if checked:
            jobs = [formatted[i][1]["job"] for i in checked]
            for i, result in zip(checked, self._sandbox().run_many(jobs)):
                if not result.passed:
                    formatted[i] = (REFERENCE_FAILS, None)
        for reason, values in formatted:
            values = values or {"messages": [], "question": "", "reference": "", "task": "", "code": "", "dedup": ""}
            out["messages"].append(values["messages"])
            out["question"].append(values["question"])
            out["reference_answer"].append(values["reference"])
            out["task"].append(values["task"])
            out["reference_code"].append(values["code"])
            out["dedup_text"].append(dedup_key(values["dedup"]))
            out["drop_reason"].append(reason)
        return out

    def _format_row(self, load_error: Any, text: Any, code: Any, test_list: Any, setup: Any, prompt: Any,
                    solution: Any, test: Any, entry_point: Any, task: Any) -> tuple[str | None, dict | None]:
        if load_error is not None:
            return load_error, None
        if _text(prompt).strip() and not _text(text).strip():  # HumanEval shape
            question, entry = _text(prompt).strip(), _text(entry_point).strip()
            reference = (prompt + solution) if _text(solution).strip() else ""  # the body continues the prompt
            tests = f"{_text(test).rstrip()}\n\ncheck({entry})" if _text(test).strip() and entry else ""
            setup_code, user = "", humaneval_prompt(question)
        else:  # MBPP shape
            question, reference, tests = _text(text).strip(), _text(code), _tests(test_list)
            setup_code, user = _text(setup), mbpp_prompt(_text(text).strip(), _tests(test_list))
        if not question.strip():
            return "missing_question", None
        if not reference.strip():
            return "missing_reference_code", None
        if not tests.strip():
            return "no_tests", None
        target = code_target(reference)
        if len(user) + len(target) > self.cfg.max_chars:
            return TOO_LONG, None
        messages = self.with_system_prompt([{"role": "user", "content": user}, {"role": "assistant", "content": target}])
        return None, {"messages": messages, "question": question, "reference": join_reference(tests, setup_code),
                      "task": task if isinstance(task, str) else "", "code": reference.strip(),
                      "dedup": f"{question}\n{tests}", "job": Job(reference, tests, setup_code)}

    @staticmethod
    def _sandbox() -> CodeSandbox:
        if any(layers().values()):
            logger.warning("reference solutions run with the sandbox layers this machine has (%s)",
                           describe_layers())
        return CodeSandbox(Limits(timeout_seconds=REFERENCE_TIMEOUT_SECONDS), mode="weak")
