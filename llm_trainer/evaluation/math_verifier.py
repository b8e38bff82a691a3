"""Symbolic answer equivalence through HF's math-verify, in bounded time.

math-verify (sympy underneath) can hang on model output such as ``10^{10^{10^{10}}}`` or a few hundred nested
brackets. Its own timeouts use SIGALRM, which works only in a process's main thread, and a signal does not stop
sympy inside a long C call. So every comparison runs in a worker process (in its main thread, where
math-verify's timeouts hold), and the parent kills a worker that overruns a hard deadline and starts a new
one. That holds inside a ZenML step, in a thread, and in a training worker alike.

Workers are plain ``python -m`` subprocesses speaking JSON lines, not multiprocessing children: they need no
``if __name__ == "__main__"`` guard in the user's script and never fork a process that holds threads.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import OrderedDict
from multiprocessing.connection import wait
from typing import Any

from llm_trainer.paths import PROJECT_ROOT

EQUAL, DIFFERENT, UNPARSED, TIMEOUT = "equal", "different", "unparsed", "timeout"
TOO_LONG, TOO_COMPLEX = "too_long", "too_complex"  # refused before math-verify, each counted like a timeout
MAX_CHARS = 2000  # longer answers are never a closed form worth a sympy call; they count as timeouts
MAX_NESTING = 12  # brackets inside brackets: a closed form answer needs a few, sympy's parser recurses on each
MAX_POWERS = 8  # "^" signs in one answer: more is a tower no answer needs, and each level multiplies sympy's work
MAX_DIGITS = 10_000  # a power of plain numbers with more digits than this (9^{9^9}) is never computed
POWER_OF_NUMBERS = re.compile(r"\d+(?:\.\d+)?(?:\s*(?:\^|\*\*)\s*\{?\s*\d+(?:\.\d+)?)+")


def too_complex(text: str) -> bool:
    """True for an answer sympy could spend minutes (or all memory) on: deep nesting, many powers, or a power of
    plain numbers too large to write out. Cheap and bounded: one pass over the text and one regex."""
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth = max(0, depth - 1)
    if deepest > MAX_NESTING or text.count("^") + text.count("**") > MAX_POWERS:
        return True
    return any(_digits_of_power(match.group(0)) > MAX_DIGITS for match in POWER_OF_NUMBERS.finditer(text))


def _digits_of_power(tower: str) -> float:
    """log10 of a right-associative power of plain numbers ("10^{10^{10}}"), or inf when even that overflows."""
    numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", tower)]
    digits = math.log10(numbers[-1]) if numbers[-1] > 0 else 0.0  # log10 of the exponent so far
    for base in reversed(numbers[:-1]):
        if digits > 300:  # the exponent has more than 300 digits: the power is beyond any limit
            return math.inf if base > 1 else 0.0
        digits = (10 ** digits) * math.log10(base) if base > 0 else 0.0
    return digits
UNICODE_MATH = {"π": "\\pi", "−": "-", "×": "\\times", "·": "\\cdot", "÷": "/", "∞": "\\infty", "√": "\\sqrt",
                "≤": "\\le", "≥": "\\ge", "≠": "\\ne", "∪": "\\cup", "∩": "\\cap", "°": "^\\circ"}


def as_latex(text: str) -> str:
    """Unicode symbols as LaTeX, inside math delimiters so math-verify's LaTeX extraction finds it."""
    for symbol, latex in UNICODE_MATH.items():
        text = text.replace(symbol, f" {latex} " if latex.startswith("\\") else latex)
    text = text.strip()
    delimited = text.startswith(("$", "\\(", "\\[")) or "\\boxed" in text
    return text if delimited else f"${text}$"


def compare(golds: tuple[str, ...], predictions: tuple[str, ...], timeout: int) -> str:
    """EQUAL if any prediction equals any gold, else DIFFERENT, UNPARSED (nothing parsed) or TIMEOUT.

    Runs math-verify with its own signal timeouts: call it in a process's main thread (a worker's)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    timed_out = False

    def parsed(text: str) -> list:
        nonlocal timed_out
        try:
            return parse(as_latex(text), extraction_config=configs, parsing_timeout=timeout, raise_on_error=True)
        except TimeoutException:
            timed_out = True
        except Exception:  # noqa: BLE001 - sympy raises anything on odd input; unparsable is the answer
            pass
        return []

    gold_parses = [p for p in map(parsed, dict.fromkeys(map(as_latex, golds))) if p]
    prediction_parses = [p for p in map(parsed, dict.fromkeys(map(as_latex, predictions))) if p]
    for gold in gold_parses:
        for prediction in prediction_parses:
            if _differ_at_a_point(gold[0], prediction[0]):
                continue
            try:
                if verify(gold, prediction, timeout_seconds=timeout, raise_on_error=True):
                    return EQUAL
            except TimeoutException:
                timed_out = True
            except Exception:  # noqa: BLE001 - a comparison sympy cannot make is not an equality
                pass
    if timed_out:
        return TIMEOUT
    return DIFFERENT if gold_parses and prediction_parses else UNPARSED


def _differ_at_a_point(gold: Any, prediction: Any) -> bool:
    """True when two plain expressions evaluate to clearly different numbers at a fixed point: a sound and fast
    proof of inequality that spares sympy's simplification (most wrong answers end here)."""
    from sympy import Expr, Rational

    if not (isinstance(gold, Expr) and isinstance(prediction, Expr)):
        return False
    try:
        symbols = sorted(gold.free_symbols | prediction.free_symbols, key=str)
        point = {symbol: Rational(7 + 3 * index, 11 + 2 * index) for index, symbol in enumerate(symbols)}
        a, b = complex(gold.evalf(30, subs=point)), complex(prediction.evalf(30, subs=point))
    except Exception:  # noqa: BLE001 - anything odd goes to math-verify proper
        return False
    scale = max(1.0, abs(a), abs(b))
    return all(map(lambda v: v == v and abs(v) != float("inf"), (a, b))) and abs(a - b) > 1e-6 * scale


def _serve(timeout: int) -> None:
    """Worker loop: one JSON job per stdin line, one JSON status per stdout line."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the protocol
    for line in sys.stdin:
        golds, predictions = json.loads(line)
        protocol.write(json.dumps(compare(tuple(golds), tuple(predictions), timeout)) + "\n")
        protocol.flush()


class MathVerifier:
    """A small pool of math-verify workers with a hard per-comparison deadline.

    ``compare_many([(golds, predictions), ...])`` returns one status per job; results are cached by job."""

    def __init__(self, workers: int | None = None, timeout: int = 3, cache_size: int = 20_000):
        self.workers = max(1, workers or min(2, os.cpu_count() or 1))
        self.timeout = max(1, int(timeout))
        # math-verify may spend up to ``timeout`` in each parse and each comparison; past this the worker dies.
        self.deadline = 4 * self.timeout + 2
        self._pool: list[list[Any]] = []  # [process, job index or None, start time]
        self._cache: OrderedDict[tuple, str] = OrderedDict()
        self._cache_size = cache_size
        self.timeouts = 0

    def compare_many(self, jobs: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> list[str]:
        """One status per (golds, predictions) job: equal, different, unparsed, timeout, ..."""
        results: list[str | None] = [None] * len(jobs)
        pending = []
        for index, job in enumerate(jobs):
            if job in self._cache:
                results[index] = self._cache[job]
            elif max(len(text) for text in (*job[0], *job[1], "")) > MAX_CHARS:
                results[index] = TOO_LONG
            elif any(map(too_complex, job[1])):  # the model's answer; references are the data's own
                results[index] = TOO_COMPLEX
            elif not job[0] or not job[1]:
                results[index] = UNPARSED
            else:
                pending.append(index)
        self._run(jobs, pending, results)
        for index, job in enumerate(jobs):
            if results[index] in (EQUAL, DIFFERENT, UNPARSED):
                self._remember(job, results[index])
        self.timeouts += sum(r in (TIMEOUT, TOO_LONG, TOO_COMPLEX) for r in results)
        return [r or UNPARSED for r in results]

    def _run(self, jobs: list, pending: list[int], results: list[str | None]) -> None:
        queue = list(reversed(pending))
        while queue or any(slot[1] is not None for slot in self._pool):
            self._fill(jobs, queue)
            busy = {slot[0].stdout: slot for slot in self._pool if slot[1] is not None}
            next_deadline = min(slot[2] + self.deadline for slot in busy.values())
            for stream in wait(list(busy), timeout=max(0.0, next_deadline - time.monotonic())):
                slot = busy[stream]
                line = stream.readline()
                if line:
                    results[slot[1]] = json.loads(line)
                else:  # the worker died (out of memory, killed): the answer counts as a timeout
                    results[slot[1]] = TIMEOUT
                    self._replace(slot)
                slot[1] = None
            now = time.monotonic()
            for slot in busy.values():
                if slot[1] is not None and now - slot[2] > self.deadline:
                    results[slot[1]] = TIMEOUT
                    self._replace(slot)

    def _fill(self, jobs: list, queue: list[int]) -> None:
        while len(self._pool) < self.workers:
            self._pool.append(self._start())
        for slot in self._pool:
            if slot[1] is None and queue:
                slot[1] = queue.pop()
                slot[2] = time.monotonic()
                slot[0].stdin.write(json.dumps(jobs[slot[1]]) + "\n")
                slot[0].stdin.flush()

    def _start(self) -> list[Any]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
        process = subprocess.Popen(
            [sys.executable, "-m", "llm_trainer.evaluation.math_verifier", str(self.timeout)], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        return [process, None, 0.0]

    def _replace(self, slot: list[Any]) -> None:
        _stop(slot[0], grace=0)
        slot[:] = self._start()

    def _remember(self, job: tuple, result: str) -> None:
        self._cache[job] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def close(self) -> None:
        """Stop the math-verify worker processes, once scoring is done."""
        for process, _, _ in self._pool:
            _stop(process, grace=2)
        self._pool = []


def _stop(process: subprocess.Popen, grace: float) -> None:
    try:
        process.stdin.close()  # a worker between jobs ends its loop
        process.wait(timeout=grace)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()
    process.stdout.close()


_shared: MathVerifier | None = None


def shared_verifier(timeout: int = 3) -> MathVerifier:
    """One pool per process (started on first use, closed at exit); a new timeout starts a new pool."""
    global _shared
    if _shared is None or _shared.timeout != max(1, int(timeout)):
        if _shared is not None:
            _shared.close()
        _shared = MathVerifier(timeout=timeout)
    return _shared


@atexit.register
def _close_shared() -> None:
    if _shared is not None:
        _shared.close()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
