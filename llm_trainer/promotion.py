"""The promotion gate: a new model version goes to production only if it beats the base model and the
current production version on the configured metric by more than the configured margin."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llm_trainer.errors import ConfigError
from llm_trainer.evaluation.answer_types import LOWER_IS_BETTER


@dataclass
class PromotionDecision:
    promote: bool
    stage: str  # "production" or "staging"
    reason: str
    metric: str
    candidate: float
    base: float
    production: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(metric: str, margin: float, candidate: dict[str, Any], base: dict[str, Any],
                     production: dict[str, Any] | None) -> PromotionDecision:
    if metric not in candidate or metric not in base:
        known = ", ".join(sorted(k for k, v in candidate.items() if isinstance(v, int | float)))
        raise ConfigError(f"registry.promotion_metric: '{metric}' is not an evaluation metric (have: {known})")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    direction = "lower" if sign < 0 else "higher"
    value, base_value = float(candidate[metric]), float(base[metric])
    production_value = float(production[metric]) if production and metric in production else None

    def beats(other: float) -> bool:
        return sign * (value - other) > margin

    def decision(promote: bool, reason: str) -> PromotionDecision:
        return PromotionDecision(promote, "production" if promote else "staging", reason + _extraction(candidate, base),
                                 metric, value, base_value, production_value)

    if not beats(base_value):
        return decision(False, f"{metric} {value:.4g} does not beat the base model's {base_value:.4g} by more than "
                               f"{margin:g} ({direction} is better)")
    if production_value is not None and not beats(production_value):
        return decision(False, f"{metric} {value:.4g} does not beat production's {production_value:.4g} by more "
                               f"than {margin:g} ({direction} is better)")
    against = f"and production's {production_value:.4g}" if production_value is not None else "(no production yet)"
    return decision(True, f"{metric} {value:.4g} beats the base model's {base_value:.4g} {against} by more than "
                          f"{margin:g} ({direction} is better)")


def _extraction(candidate: dict[str, Any], base: dict[str, Any]) -> str:
    """An unfair comparison must be visible: how often no answer could be read out of each model's output."""
    if "extraction_failed" not in candidate or "extraction_failed" not in base:
        return ""
    return (f"; no answer could be extracted from {float(candidate['extraction_failed']):.0%} of the fine-tuned "
            f"model's and {float(base['extraction_failed']):.0%} of the base model's outputs")
