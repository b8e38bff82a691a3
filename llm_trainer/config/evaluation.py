"""The evaluation and registry sections: how models are scored and which metric promotes them."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from llm_trainer.errors import ConfigError
from llm_trainer.registry import EVALUATORS

from llm_trainer.config.base import TINY_MODEL_NAME, Section


class JudgeConfig(Section):
    """A local LLM that judges long and prose references with a one-token yes/no verdict."""

    model: str = Field(description=f"Hub id, local path, or '{TINY_MODEL_NAME}' (the run's own tiny base model).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the judge model.")
    load_in_4bit: bool = Field(True, description="Load the judge in 4-bit NF4.")
    batch_size: int = Field(8, gt=0, description="Verdicts per forward pass.")


class EvaluationConfig(Section):
    """The ``evaluation`` section: which evaluator scores the test rows, how many, and how answers are judged."""

    evaluator: str = Field("reasoning", description="Evaluator name (registry: reasoning, chat, sql, code) or "
                           "'module:Class'.")
    max_samples: int | None = Field(200, gt=0, description="Test rows answered by each model (the first ones); all "
                                    "when null. The test loss uses the whole split.")
    batch_size: int = Field(8, gt=0, description="Prompts generated together, and blocks per batch of the test "
                        "loss.")
    max_new_tokens: int = Field(512, gt=0, description="Tokens an answer may have; an answer cut there before its "
                                "final line is scored wrong.")
    numeric_tolerance: float = Field(0.0, ge=0, description="Relative tolerance for numbers; 0 accepts only "
                                     "exact values (a rounded 0.3333 is not 1/3).")
    verify_timeout_seconds: int = Field(3, gt=0, description="Limit for each math-verify parse or comparison; "
                                        "an answer over it is wrong and counted as verify_timeout.")
    short_answer_max_words: int = Field(20, gt=0, description="References with more words are 'long': scored "
                                        "by token F1 and ROUGE-L rather than as correct or wrong.")
    judge: JudgeConfig | None = Field(None, description="Optional LLM judge for long and prose references.")
    benchmarks: list[str] = Field([], description="lm-eval-harness tasks run on each evaluated model, e.g. [gsm8k].")
    benchmark_limit: int | None = Field(None, gt=0, description="Examples per benchmark task (all when null).")
    benchmark_include_path: str | None = Field(None, description="Folder of extra lm-eval task YAMLs.")
    sql_timeout_seconds: float = Field(2.0, gt=0, description="sql: deadline for each predicted query; over it "
                                       "the query is wrong and counted as timeout.")
    sql_max_rows: int = Field(10_000, gt=0, description="sql: result rows read at most; a longer result is wrong.")
    code_sandbox: Literal["strict", "weak"] = Field("strict", description="code: strict refuses to run model-written "
                                                    "code unless every sandbox layer is active (namespaces, Landlock, "
                                                    "seccomp, ...); weak runs it with the layers this machine has.")
    code_timeout_seconds: float = Field(5.0, gt=0, description="code: wall-clock limit for one answer's tests; over "
                                        "it the answer is wrong and counted as timeout.")
    code_memory_mb: int = Field(1024, ge=64, description="code: address-space limit of the process that runs an "
                                "answer; over it the answer is wrong and counted as memory.")
    code_samples: int = Field(1, gt=0, description="code: answers per problem; 1 is greedy, more are sampled at "
                              "code_temperature (pass@k needs k of them).")
    code_pass_k: list[int] = Field([1], description="code: the k of the pass@k metrics (pass_at_<k>), each at most "
                                   "code_samples.")
    code_temperature: float = Field(0.8, gt=0, description="code: sampling temperature when code_samples > 1.")
    code_top_p: float = Field(0.95, gt=0, le=1, description="code: nucleus top_p when code_samples > 1.")

    @model_validator(mode="after")
    def _k_within_samples(self) -> EvaluationConfig:
        over = [k for k in self.code_pass_k if not 1 <= k <= self.code_samples]
        if over:
            raise ValueError(f"code_pass_k: each k must be between 1 and code_samples ({self.code_samples}); got "
                             f"{', '.join(map(str, over))}")
        return self

    @field_validator("evaluator")
    @classmethod
    def _known_evaluator(cls, value: str) -> str:
        return EVALUATORS.check(value)

    def scoring(self) -> ScoringSpec:
        """The settings that decide whether one answer is correct (evaluation and GRPO's reward judge alike)."""
        return ScoringSpec(**{name: getattr(self, name) for name in ScoringSpec.model_fields})

    def metric_names(self) -> tuple[str, ...]:
        """Every fixed metric name the evaluator declares for these settings (BaseEvaluator.metric_names_for;
        benchmark metrics are ``benchmark.<task>.*``); none for an evaluator that cannot be imported."""
        evaluator = self._evaluator()
        names_for = getattr(evaluator, "metric_names_for", None)
        return tuple(names_for(self) if names_for else getattr(evaluator, "metric_names", ()))

    def metric_families(self) -> tuple[str, ...]:
        """The evaluator's templates of metric names that depend on the data, e.g. accuracy_task_<family>."""
        return tuple(getattr(self._evaluator(), "metric_families", ()))

    def produces(self, metric: str) -> bool:
        """Whether the evaluator declares ``metric``: a fixed name, or a template with each <...> filled by a key of
        lowercase letters, digits and _; an evaluator that declares nothing is taken at its word for any name."""
        names, families = self.metric_names(), self.metric_families()
        return not (names or families) or metric in names or any(
            re.fullmatch("[a-z0-9_]+".join(map(re.escape, re.split(r"<[^<>]+>", family))), metric)
            for family in families)

    def _evaluator(self) -> Any:
        """The evaluator class, through the registry: its module imports nothing heavy (a config validates fast)."""
        try:
            return EVALUATORS.resolve(self.evaluator)
        except ConfigError:
            return None


class ScoringSpec(Section):
    """How an answer is judged correct: the evaluation's ``numeric_tolerance``, ``verify_timeout_seconds`` and
    ``short_answer_max_words``, carried to trainers that score answers (GRPO's rewards), so that the reward and the
    evaluation judge one answer alike and a change re-trains."""

    numeric_tolerance: float = Field(0.0, description="evaluation.numeric_tolerance.")
    verify_timeout_seconds: int = Field(3, description="evaluation.verify_timeout_seconds.")
    short_answer_max_words: int = Field(20, description="evaluation.short_answer_max_words.")
    code_sandbox: str = Field("strict", description="evaluation.code_sandbox (the tests_pass reward).")
    code_timeout_seconds: float = Field(5.0, description="evaluation.code_timeout_seconds.")
    code_memory_mb: int = Field(1024, description="evaluation.code_memory_mb.")


class RegistryConfig(Section):
    """The ``registry`` section: the registered model's name and the metrics that gate its promotion."""

    model_name: str | None = Field(None, description="ZenML/MLflow model name; default: the run name.")
    promotion_metric: str = Field("accuracy", description="Metric on which a new version must beat the base model "
                                  "and production to be promoted, e.g. accuracy or benchmark.<task>.<metric>.")
    promotion_margin: float = Field(0.0, ge=0, description="How much the new version must beat them by, more than "
                                    "(in the metric's units; 0: any gain).")
    guard_metrics: dict[str, float] = Field({}, description="Metric -> the most it may worsen (in its own units: "
                                            "0.02 on accuracy is 2 points) against the base model and production; "
                                            "a guard beyond that blocks promotion, e.g. {accuracy: 0.0}.")

    @field_validator("guard_metrics")
    @classmethod
    def _allowances_not_negative(cls, value: dict[str, float]) -> dict[str, float]:
        negative = [name for name, allowance in value.items() if not allowance >= 0]
        if negative:
            raise ValueError(f"allowances must be 0 or more (how much worse a metric may get): {', '.join(negative)}")
        return value
