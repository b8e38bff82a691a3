"""CodeEvaluator: Python generation judged by running the problem's tests in the code sandbox.

For each test problem the code is read out of the generation (``extract_code``: a ```python / ```py / bare fence,
or unfenced code from its first def/class/import line to the prose after it; ``<think>`` blocks skipped) and run with
the problem's setup and asserts in ``llm_trainer.code_sandbox`` (model output is hostile input). Metrics: pass@1,
and pass@k for each k of ``evaluation.code_pass_k`` from ``evaluation.code_samples`` samples per problem with the
unbiased estimator of Chen et al. 2021, overall and per task family (``pass_at_<k>_task_<family>``, with
``accuracy_task_<family>`` = pass@1 and ``count_task_<family>`` for the shared report tables); failures are counted
by reason (``error_<reason>``: no_code, syntax_error, wrong_answer, timeout, memory, crashed, denied).

The module imports nothing heavy: the config validator reads ``metric_names`` through the registry.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

from llm_trainer.code_sandbox import ERRORS, CodeSandbox, Job, Limits, SandboxSession, check_mode
from llm_trainer.evaluation.base import Answers, BaseEvaluator, EvalResult

TESTS_MARKER = "# --- tests ---"
GENERATION = ("generated_tokens", "generation_tokens_per_second", "hit_token_cap")
LOSS = ("eval_loss", "perplexity", "loss_tokens")
FIXED = ("pass_at_1", "accuracy", "examples", "samples_per_problem", *(f"error_{reason}" for reason in ERRORS))

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|$)", re.DOTALL)
_CODE_START = re.compile(r"^(?:async[ \t]+def|def|class|import|from[ \t]+[\w.]+[ \t]+import)\b", re.MULTILINE)
_TOP_LEVEL_CODE = re.compile(
    r"^(?:[@#\])}]|(?:def|class|import|from|async|if|elif|else|for|while|try|except|finally|with|return|print|assert|"
    r"raise|pass|global|lambda)\b|[A-Za-z_][\w.]*(?:\[[^\]]*\])?[ \t]*(?:[-+*/%&|^]?=(?!=)|\(|\[|,|:[ \t]*\w+[ \t]*=))")
MAX_TRIM_LINES = 200


def extract_code(text: str) -> str:
    """The Python in ``text`` ("" when there is none): the first ```python/```py fence, else the first bare fence,
    else unfenced code from its first def/class/import line up to the prose after it; ``<think>`` blocks skipped."""
    text = _THINK.sub("", text or "")
    fences = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    for wanted in (("python", "py", "python3"), ("",)):
        for lang, body in fences:
            if lang in wanted and body.strip():
                return body.strip("\n").rstrip()
    start = _CODE_START.search(text)
    if start is None:
        return ""
    lines = text[start.start():].splitlines()
    kept = [lines[0]]
    for line in lines[1:]:
        if line.strip() and not line[0].isspace() and not _TOP_LEVEL_CODE.match(line):
            break  # an unindented line that reads as prose: the code ended before it
        kept.append(line)
    return _longest_compiling_prefix("\n".join(kept).rstrip())


def _longest_compiling_prefix(code: str) -> str:
    """``code``, or when it does not compile its longest prefix of whole lines that does (prose often follows
    unfenced code); ``code`` itself when no prefix compiles (then it is scored a syntax error)."""
    if _compiles(code):
        return code
    lines = code.splitlines()
    for end in range(len(lines) - 1, max(0, len(lines) - MAX_TRIM_LINES), -1):
        prefix = "\n".join(lines[:end]).rstrip()
        if prefix and _compiles(prefix):
            return prefix
    return code


def _compiles(code: str) -> bool:
    try:
        compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        return False
    return True


def join_reference(tests: str, setup: str = "") -> str:
    """A problem's tests (and setup, before a marker line) as one ``reference_answer`` string, which is what GRPO's
    ``tests_pass`` reward receives."""
    return f"{setup.rstrip()}\n{TESTS_MARKER}\n{tests}" if setup.strip() else tests


def split_reference(reference: str) -> tuple[str, str]:
    """(tests, setup) of a ``join_reference`` string."""
    setup, marker, tests = reference.partition(f"\n{TESTS_MARKER}\n")
    return (tests, setup) if marker else (reference, "")


def _tests_text(tests: str | list[str]) -> str:
    return "\n".join(tests) if isinstance(tests, list | tuple) else str(tests)


def score_code_many(generations: list[str], tests: list[str | list[str]], setups: list[str] | None = None,
                    timeout_seconds: float = 5.0, memory_mb: int = 1024, sandbox: str = "strict",
                    workers: int | None = None, session: SandboxSession | None = None) -> list[dict[str, Any]]:
    """``score_code`` for many generations at once: the sandbox runs them in parallel (one process each), or one
    after another through ``session`` (``CodeSandbox(...).session()``, whose own limits and mode then apply)."""
    setups = setups or [""] * len(generations)
    rows = [{"code": "", "correct": False, "error": None, "error_detail": ""} for _ in generations]
    jobs, where = [], []
    for i, (generation, test, setup) in enumerate(zip(generations, tests, setups)):
        code = extract_code(generation)
        rows[i]["code"] = code[:4000]
        if not code.strip():
            rows[i]["error"] = "no_code"
            continue
        jobs.append(Job(code, _tests_text(test), setup or ""))
        where.append(i)
    if jobs:
        if session is not None:
            results = session.run_many(jobs)
        else:
            runner = CodeSandbox(Limits(timeout_seconds=timeout_seconds, memory_mb=memory_mb), mode=sandbox)
            results = runner.run_many(jobs, workers=workers)
        for i, result in zip(where, results):
            rows[i].update(correct=result.passed, error=result.error, error_detail=result.detail[:500])
    return rows


def score_code(generation: str, tests: str | list[str], setup: str = "", timeout_seconds: float = 5.0,
               memory_mb: int = 1024, sandbox: str = "strict", session: SandboxSession | None = None) -> dict[str, Any]:
    """One generation's verdict: ``correct`` (every test passed in the sandbox), ``error`` (None, or why not: no_code,
    syntax_error, wrong_answer, timeout, memory, crashed, denied), ``error_detail`` and the extracted ``code``. Each
    call starts a sandbox server (tens of ms); many calls in a row go faster through a ``session``."""
    return score_code_many([generation], [tests], [setup], timeout_seconds, memory_mb, sandbox, workers=1,
                           session=session)[0]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), computed as a product to stay exact for large n."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def task_key(task: str) -> str:
    """A task family as a metric-name key: lowercase letters, digits and _ ("" when there is none)."""
    return re.sub(r"[^a-z0-9]+", "_", (task or "").lower()).strip("_")


def aggregate_code(samples: list[list[dict[str, Any]]], tasks: list[str], ks: list[int]) -> dict[str, float]:
    """pass@k overall and per task family from each problem's sample verdicts, and failures counted by reason."""
    n = min((len(s) for s in samples), default=1)
    ks = sorted({1, *(k for k in ks if k <= n)})
    metrics: dict[str, float] = {"examples": len(samples), "samples_per_problem": n}
    groups: dict[str, list[list[dict[str, Any]]]] = {"": samples}
    for problem, task in zip(samples, tasks):
        if task_key(task):
            groups.setdefault(task_key(task), []).append(problem)
    for group, problems in groups.items():
        for k in ks:
            value = sum(pass_at_k(len(p), sum(bool(s["correct"]) for s in p), k) for p in problems) / max(len(problems), 1)
            metrics[f"pass_at_{k}_task_{group}" if group else f"pass_at_{k}"] = value
        if group:
            metrics[f"accuracy_task_{group}"] = metrics[f"pass_at_1_task_{group}"]
            metrics[f"count_task_{group}"] = len(problems)
    metrics["accuracy"] = metrics["pass_at_1"]
    reasons = Counter(s["error"] for problem in samples for s in problem if s["error"])
    for reason in ERRORS:
        metrics[f"error_{reason}"] = reasons.pop(reason, 0)
    metrics.update({f"error_{reason}": n for reason, n in reasons.items()})
    return metrics


class CodeEvaluator(BaseEvaluator):
    """``evaluation.evaluator: code``: pass@k of generated Python against each problem's tests, in the sandbox."""

    metric_names = (*FIXED, *GENERATION, *LOSS)
    metric_families = ("pass_at_<k>_task_<family>", "accuracy_task_<family>", "count_task_<family>")

    @classmethod
    def metric_names_for(cls, evaluation: Any) -> tuple[str, ...]:
        """The fixed names, with pass_at_<k> for each k of evaluation.code_pass_k."""
        ks = [k for k in getattr(evaluation, "code_pass_k", [1]) if k != 1]
        return (*cls.metric_names, *(f"pass_at_{k}" for k in ks))

    def evaluate(self, model: Any, tokenizer: Any, processed_test: Any, tokenized_test: Any) -> EvalResult:
        """Each problem answered (greedy, or ``code_samples`` samples), each answer run against its tests."""
        cfg = self.cfg.evaluation
        check_mode(cfg.code_sandbox)  # refuse before generating, not after, when a layer is missing
        n = cfg.code_samples
        answers = self.answer_test_questions(model, tokenizer, processed_test) if n == 1 else \
            self._sample(model, tokenizer, processed_test, n)
        rows = answers.rows
        references = list(rows["reference_answer"])
        tests, setups = zip(*(split_reference(r) for r in references)) if references else ((), ())
        verdicts = score_code_many([g.text for g in answers.generations], [t for t in tests for _ in range(n)],
                                   [s for s in setups for _ in range(n)], cfg.code_timeout_seconds,
                                   cfg.code_memory_mb, cfg.code_sandbox)
        tasks = list(rows["task"]) if "task" in rows.column_names else [""] * len(references)
        examples, samples = [], []
        for p, (row_id, question, reference, task) in enumerate(zip(rows["row_id"], rows["question"], references,
                                                                     tasks)):
            problem = verdicts[p * n:(p + 1) * n]
            samples.append(problem)
            for s, verdict in enumerate(problem):
                examples.append({"row_id": row_id, "sample": s, "task": task or "", "question": question,
                                 "reference": reference, "generation": answers.generations[p * n + s].text,
                                 "scored": True, **verdict})
        metrics: dict[str, Any] = aggregate_code(samples, tasks, list(cfg.code_pass_k))
        metrics.update({**answers.speed(), **self.loss_metrics(model, tokenizer, tokenized_test)})
        return EvalResult(metrics=metrics, examples=examples)

    def _sample(self, model: Any, tokenizer: Any, processed_test: Any, n: int) -> Answers:
        """``n`` sampled answers per test problem (evaluation.code_temperature and code_top_p, seeded)."""
        import torch

        from llm_trainer.inference import decoding, generate_batch

        cfg = self.cfg.evaluation
        rows = processed_test
        if cfg.max_samples is not None:
            rows = rows.select(range(min(cfg.max_samples, len(rows))))
        prompts = [messages[:-1] for messages in rows["messages"]]
        torch.manual_seed(self.cfg.seed)
        started = time.time()
        generations = generate_batch(model, tokenizer, [p for p in prompts for _ in range(n)], cfg.max_new_tokens,
                                     cfg.batch_size, progress=True,
                                     sampling=decoding(cfg.code_temperature, cfg.code_top_p))
        return Answers(rows, prompts, generations, time.time() - started)
