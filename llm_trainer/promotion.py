"""The promotion gate: a new model version goes to production only if it beats the base model and the
current production version on the configured metric by more than the configured margin, and none of the guard
metrics regresses against either by more than its allowance (a version that writes its final line more often but
answers worse must not replace a better one)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from llm_trainer.errors import ConfigError
from llm_trainer.evaluation.answer_types import LOWER_IS_BETTER


@dataclass
class PromotionDecision:
    """The gate's verdict on a model version: promote or not, to which stage, why, on which numbers."""

    promote: bool
    stage: str  # "production" or "staging"
    reason: str
    metric: str
    candidate: float
    base: float
    production: float | None
    guards_failed: list[str] = field(default_factory=list)  # the guard metrics that regressed

    def as_dict(self) -> dict[str, Any]:
        """The decision as a plain dict, for metadata and the report."""
        return asdict(self)


def decide_promotion(metric: str, margin: float, candidate: dict[str, Any], base: dict[str, Any],
                     production: dict[str, Any] | None, guards: dict[str, float] | None = None) -> PromotionDecision:
    """``guards``: metric -> the most it may worsen (in its own units: 0.02 on accuracy is 2 points) against the
    base model and production; any guard beyond that blocks promotion, and the reason names it."""
    for name, key in [(metric, "promotion_metric"), *((guard, "guard_metrics") for guard in guards or {})]:
        if name not in candidate or name not in base:
            known = ", ".join(sorted(k for k, v in candidate.items() if isinstance(v, int | float)))
            raise ConfigError(f"registry.{key}: '{name}' is not an evaluation metric (have: {known})")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    direction = "lower" if sign < 0 else "higher"
    value, base_value = float(candidate[metric]), float(base[metric])
    production_value = float(production[metric]) if production and metric in production else None

    def beats(other: float) -> bool:
        return sign * (value - other) > margin

    failed = _regressed_guards(guards or {}, candidate, base, production)

    def decision(promote: bool, reason: str) -> PromotionDecision:
        if failed:
            promote, reason = False, f"{reason}; blocked by guard metrics: {'; '.join(failed)}"
        return PromotionDecision(promote, "production" if promote else "staging", reason + _extraction(candidate, base),
                                 metric, value, base_value, production_value, [f.split(" ", 1)[0] for f in failed])

    if not beats(base_value):
        return decision(False, f"{metric} {value:.4g} does not beat the base model's {base_value:.4g} by more than "
                               f"{margin:g} ({direction} is better)")
    if production_value is not None and not beats(production_value):
        return decision(False, f"{metric} {value:.4g} does not beat production's {production_value:.4g} by more "
                               f"than {margin:g} ({direction} is better)")
    against = f"and production's {production_value:.4g}" if production_value is not None else "(no production yet)"
    return decision(True, f"{metric} {value:.4g} beats the base model's {base_value:.4g} {against} by more than "
                          f"{margin:g} ({direction} is better)")


def _regressed_guards(guards: dict[str, float], candidate: dict[str, Any], base: dict[str, Any],
                      production: dict[str, Any] | None) -> list[str]:
    """One phrase per guard metric that worsened by more than its allowance against the base model or production."""
    failed = []
    for guard, allowance in guards.items():
        sign = -1.0 if guard in LOWER_IS_BETTER else 1.0
        value = float(candidate[guard])
        others = [("the base model's", base.get(guard)), ("production's", (production or {}).get(guard))]
        worse = [f"{label} {float(other):.4g}" for label, other in others
                 if other is not None and sign * (value - float(other)) < -allowance]
        if worse:
            failed.append(f"{guard} {value:.4g} is more than {allowance:g} worse than {' and '.join(worse)} "
                          f"({'lower' if sign < 0 else 'higher'} is better)")
    return failed


def _extraction(candidate: dict[str, Any], base: dict[str, Any]) -> str:
    """An unfair comparison must be visible: how often no answer could be read out of each model's output."""
    if "extraction_failed" not in candidate or "extraction_failed" not in base:
        return ""
    return (f"; no answer could be extracted from {float(candidate['extraction_failed']):.0%} of the fine-tuned "
            f"model's and {float(base['extraction_failed']):.0%} of the base model's outputs")
