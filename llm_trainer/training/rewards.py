"""GRPO rewards, registered by name like processors and evaluators (``training.grpo.rewards: {name: weight}``).

A reward scores a batch of completions against their reference answers; ``RewardFunction`` wraps it for TRL:
a reward that raises on a completion scores that completion 0 (and counts it) instead of ending the run, and
it remembers the range of its values so that a reward constant over a whole run is reported.

    answer_correct  1 when the evaluation's judge (``score_many``: rules, then math-verify) finds it correct; only the
                    last final-answer line counts, and lines (or "or"-numbers) stating different answers score 0
    format          1 when a final-answer line is present and states an answer ("Final answer: 8")
    length          0 up to ``length_budget`` completion tokens, then falling linearly to -1 at the limit
    tests_pass      1 when the completion's code passes its problem's tests in the code sandbox (``score_code``;
                    the code processor's ``reference_answer`` holds the tests), else 0
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from typing import Any

from llm_trainer.evaluation.extraction import extract
from llm_trainer.evaluation.math_verifier import TIMEOUT, TOO_COMPLEX, TOO_LONG
from llm_trainer.evaluation.scoring import ScoringSettings, score_many
from llm_trainer.registry import REWARDS

logger = logging.getLogger(__name__)
UNVERIFIABLE = (TIMEOUT, TOO_LONG, TOO_COMPLEX)


class BaseReward(ABC):
    """Base of the GRPO rewards: ``score`` gives one float per completion."""

    # Whether the reward judges answers to questions with a short reference answer (one word or a few): rows whose
    # reference is longer are then left out of GRPO and of verifier-built pairs. False for a reward whose reference
    # is a test suite.
    needs_short_reference = True

    def __init__(self, cfg: Any):
        self.cfg = cfg

    def answered(self, completion: str) -> bool:
        """Whether a completion gives an answer at all (pairs count the questions no sample answered)."""
        return bool(completion.strip())

    @abstractmethod
    def score(self, completions: list[str], references: list[str], lengths: list[int]) -> list[float]:
        """One reward per completion; ``lengths`` are the completions' token counts."""


class AnswerCorrectReward(BaseReward):
    """The evaluation's own judge, with the run's scoring settings (TrainSpec.scoring). Answers too large or too
    deeply nested for the symbolic check score 0 at once, counted in ``unverifiable``, never stalling a step."""

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.settings = scoring_settings(cfg)
        self.unverifiable = 0

    def answered(self, completion: str) -> bool:
        """Whether the completion states an answer on a final-answer line."""
        return has_final_answer(completion)

    def score(self, completions: list[str], references: list[str], lengths: list[int]) -> list[float]:
        """1 for each completion the evaluation's judge finds correct, else 0."""
        rows = score_many(completions, references, self.settings)
        self.unverifiable += sum(row["verify_status"] in UNVERIFIABLE for row in rows)
        return [1.0 if row["correct"] else 0.0 for row in rows]


def scoring_settings(cfg: Any) -> ScoringSettings:
    """How answers are judged: a TrainSpec's ``scoring`` (the evaluation's settings, carried for GRPO), a whole
    RunConfig's ``evaluation``, else the defaults."""
    return ScoringSettings.from_config(getattr(cfg, "scoring", None) or getattr(cfg, "evaluation", None))


class FormatReward(BaseReward):
    """``format`` reward: 1 when the completion ends with a final-answer line stating an answer."""

    def score(self, completions: list[str], references: list[str], lengths: list[int]) -> list[float]:
        """1 for each completion with a final-answer line that states an answer, else 0."""
        return [float(has_final_answer(text)) for text in completions]


def has_final_answer(text: str) -> bool:
    """Whether the text states its answer on a final-answer line ('Final answer: 8')."""
    extraction = extract(text)
    return extraction.method == "final_line" and bool(extraction.answer)


class LengthReward(BaseReward):
    """``length`` reward: 0 up to the length budget, falling linearly to -1 at the completion limit."""

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        grpo = cfg.training.grpo
        self.limit = grpo.max_completion_length
        self.budget = grpo.length_budget if grpo.length_budget is not None else (3 * self.limit) // 4

    def score(self, completions: list[str], references: list[str], lengths: list[int]) -> list[float]:
        """0 up to the budget, then down to -1 at max_completion_length, per completion length."""
        span = max(1, self.limit - self.budget)
        return [-min(1.0, max(0, n - self.budget) / span) for n in lengths]


class TestsPassReward(BaseReward):
    """``tests_pass`` reward: the code evaluator's verdict (``score_code``), with the evaluation's sandbox mode, time
    and memory limits; the completions of a batch run in parallel, each in its own sandboxed process."""

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        section = getattr(cfg, "scoring", None) or getattr(cfg, "evaluation", None)
        self.sandbox = getattr(section, "code_sandbox", "strict")
        self.timeout_seconds = getattr(section, "code_timeout_seconds", 5.0)
        self.memory_mb = getattr(section, "code_memory_mb", 1024)
        from llm_trainer.code_sandbox import check_mode

        check_mode(self.sandbox)  # a missing layer refuses when training starts, not at the first reward

    needs_short_reference = False  # the reference is the tests

    def answered(self, completion: str) -> bool:
        """Whether the completion holds code (fenced, or from a def/class/import line)."""
        from llm_trainer.evaluation.code import extract_code

        return bool(extract_code(completion).strip())

    def score(self, completions: list[str], references: list[str], lengths: list[int]) -> list[float]:
        """1 for each completion whose code passes every test of its reference, else 0."""
        from llm_trainer.evaluation.code import score_code_many, split_reference

        tests, setups = zip(*(split_reference(r) for r in references)) if references else ((), ())
        rows = score_code_many(completions, list(tests), list(setups), self.timeout_seconds, self.memory_mb,
                               self.sandbox)
        return [1.0 if row["correct"] else 0.0 for row in rows]


class RewardFunction:
    """A reward as TRL calls it: keyword arguments in, one float per completion out; never raises."""

    def __init__(self, name: str, reward: BaseReward):
        self.__name__ = name  # TRL names the logged metrics rewards/<name>/mean and /std after it
        self.reward = reward
        self.errors = 0
        self.scored = 0
        self.low, self.high = math.inf, -math.inf

    def __call__(self, prompts: list, completions: list, completion_ids: list[list[int]],
                 reference_answer: list[str] | None = None, **_: Any) -> list[float]:
        texts = [_text(c) for c in completions]
        references = list(reference_answer or [""] * len(texts))
        lengths = [len(ids) for ids in completion_ids]
        try:
            values = [float(v) for v in self.reward.score(texts, references, lengths)]
            if len(values) != len(texts):
                raise ValueError(f"returned {len(values)} rewards for {len(texts)} completions")
        except Exception:  # noqa: BLE001 - score one by one: only the completions it fails on get 0
            values = [self._one(text, reference, n) for text, reference, n in zip(texts, references, lengths)]
        values = [v if math.isfinite(v) else self._failed(ValueError(f"non-finite reward {v}")) for v in values]
        self.scored += len(values)
        if values:
            self.low, self.high = min(self.low, *values), max(self.high, *values)
        return values

    def _one(self, text: str, reference: str, length: int) -> float:
        try:
            (value,) = self.reward.score([text], [reference], [length])
            return float(value)
        except Exception as exc:  # noqa: BLE001 - a reward's bug on one completion must not end the run
            return self._failed(exc)

    def _failed(self, exc: Exception) -> float:
        self.errors += 1
        if self.errors == 1:
            logger.warning("reward '%s' failed on a completion (scored 0, counted in rewards/%s/errors): %s",
                           self.__name__, self.__name__, " ".join(str(exc).split())[:200] or type(exc).__name__)
        return 0.0

    @property
    def constant(self) -> bool:
        """Whether every value scored so far was the same (a reward that teaches nothing)."""
        return self.scored > 0 and self.low == self.high


def build_rewards(cfg: Any) -> tuple[list[RewardFunction], list[float]]:
    """The configured rewards, wrapped for TRL, and their weights (in the config's order)."""
    rewards = cfg.training.grpo.rewards
    # Metric names: the registered name, or the class name of a 'module:Class' path.
    functions = [RewardFunction(name.rpartition(":")[2], REWARDS.resolve(name)(cfg)) for name in rewards]
    return functions, [float(weight) for weight in rewards.values()]


def report_constant_rewards(functions: list[RewardFunction]) -> list[str]:
    """One warning line for the rewards that gave every completion of the run the same value (no signal)."""
    constant = [f"{f.__name__}={f.low:g}" for f in functions if f.constant]
    if constant:
        logger.warning("rewards constant over the whole run (%d completions), so they taught nothing: %s",
                       max(f.scored for f in functions), ", ".join(constant))
    return [f.__name__ for f in functions if f.constant]


def _text(completion: Any) -> str:
    """A completion as text: TRL passes conversational completions as [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, str):
        return completion
    return "".join(turn.get("content") or "" for turn in completion if isinstance(turn, dict))
