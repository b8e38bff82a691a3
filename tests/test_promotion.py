"""The promotion gate with fixed metric inputs."""

from __future__ import annotations

import pytest

from llm_trainer.errors import ConfigError
from llm_trainer.promotion import decide_promotion


@pytest.mark.parametrize(
    ("metric", "margin", "candidate", "base", "production", "promote", "reason_part"),
    [
        ("exact_match", 0.0, 0.40, 0.10, None, True, "no production yet"),
        ("exact_match", 0.0, 0.40, 0.10, 0.35, True, "production's 0.35"),
        ("exact_match", 0.0, 0.40, 0.10, 0.40, False, "does not beat production's 0.4"),
        ("exact_match", 0.0, 0.40, 0.40, None, False, "does not beat the base model's 0.4"),
        ("exact_match", 0.05, 0.44, 0.40, None, False, "by more than 0.05"),
        ("exact_match", 0.05, 0.46, 0.40, None, True, "beats the base model's 0.4"),
        ("exact_match", 0.05, 0.50, 0.10, 0.46, False, "does not beat production's 0.46"),
        ("eval_loss", 0.0, 1.40, 2.50, None, True, "lower is better"),
        ("eval_loss", 0.0, 2.60, 2.50, None, False, "does not beat the base model's 2.5"),
        ("eval_loss", 0.1, 1.45, 2.50, 1.40, False, "does not beat production's 1.4"),
        ("eval_loss", 0.1, 1.20, 2.50, 1.40, True, "production's 1.4"),
        ("perplexity", 0.0, 3.0, 12.0, 3.5, True, "lower is better"),
    ],
)
def test_gate(metric, margin, candidate, base, production, promote, reason_part):
    decision = decide_promotion(metric, margin, {metric: candidate}, {metric: base},
                                None if production is None else {metric: production})
    assert decision.promote is promote
    assert decision.stage == ("production" if promote else "staging")
    assert reason_part in decision.reason
    assert decision.candidate == candidate and decision.base == base and decision.production == production


def test_production_without_the_metric_is_ignored():
    decision = decide_promotion("exact_match", 0.0, {"exact_match": 0.3}, {"exact_match": 0.1}, {"eval_loss": 1.0})
    assert decision.promote and decision.production is None


def test_unknown_metric_is_a_config_error():
    with pytest.raises(ConfigError, match="registry.promotion_metric: 'bleu' is not an evaluation metric"):
        decide_promotion("bleu", 0.0, {"exact_match": 0.3}, {"exact_match": 0.1}, None)


def test_gate_on_a_per_type_metric_states_each_models_extraction_failures():
    candidate = {"accuracy_short": 0.50, "accuracy": 0.2, "extraction_failed": 0.05}
    base = {"accuracy_short": 0.25, "accuracy": 0.3, "extraction_failed": 0.40}
    decision = decide_promotion("accuracy_short", 0.1, candidate, base, {"accuracy_short": 0.45})
    assert decision.promote is False and "does not beat production's 0.45" in decision.reason
    assert "from 5% of the fine-tuned model's and 40% of the base model's outputs" in decision.reason
    decision = decide_promotion("accuracy_short", 0.1, candidate, base, {"accuracy_short": 0.30})
    assert decision.promote is True and decision.candidate == 0.5 and decision.base == 0.25


def test_extraction_failures_are_lower_is_better():
    decision = decide_promotion("extraction_failed", 0.0, {"extraction_failed": 0.1}, {"extraction_failed": 0.6}, None)
    assert decision.promote is True and "lower is better" in decision.reason


def test_a_guard_keeps_a_format_better_accuracy_worse_version_out_of_production():
    """The GRPO quickstart promotes on extraction_failed: a version that writes its final line more often but
    answers worse than production must stay in staging, and the decision must say which guard blocked it."""
    production = {"extraction_failed": 0.20, "accuracy": 0.32}
    candidate = {"extraction_failed": 0.02, "accuracy": 0.03}
    base = {"extraction_failed": 0.90, "accuracy": 0.01}
    unguarded = decide_promotion("extraction_failed", 0.0, candidate, base, production)
    assert unguarded.promote is True  # what happened before guards
    guarded = decide_promotion("extraction_failed", 0.0, candidate, base, production, {"accuracy": 0.02})
    assert guarded.promote is False and guarded.stage == "staging" and guarded.guards_failed == ["accuracy"]
    assert "blocked by guard metrics: accuracy 0.03 is more than 0.02 worse than production's 0.32" in guarded.reason
    assert "worse than the base model" not in guarded.reason  # 0.03 is no regression against the base


@pytest.mark.parametrize(("accuracy", "allowance", "promote"), [(0.31, 0.02, True), (0.29, 0.02, False),
                                                                 (0.32, 0.0, True), (0.3199, 0.0, False)])
def test_a_guard_allows_exactly_its_allowance(accuracy, allowance, promote):
    decision = decide_promotion("extraction_failed", 0.0, {"extraction_failed": 0.1, "accuracy": accuracy},
                                {"extraction_failed": 0.9, "accuracy": 0.0},
                                {"extraction_failed": 0.2, "accuracy": 0.32}, {"accuracy": allowance})
    assert decision.promote is promote and decision.guards_failed == ([] if promote else ["accuracy"])


def test_lower_is_better_guards_and_unknown_guards():
    decision = decide_promotion("accuracy", 0.0, {"accuracy": 0.5, "extraction_failed": 0.4},
                                {"accuracy": 0.1, "extraction_failed": 0.1}, None, {"extraction_failed": 0.1})
    assert decision.guards_failed == ["extraction_failed"] and "lower is better" in decision.reason
    with pytest.raises(ConfigError, match="registry.guard_metrics: 'bleu' is not an evaluation metric"):
        decide_promotion("accuracy", 0.0, {"accuracy": 0.5}, {"accuracy": 0.1}, None, {"bleu": 0.0})


def test_guard_metrics_are_checked_with_the_config(make_config):
    from pydantic import ValidationError

    assert make_config(registry={"guard_metrics": {"accuracy": 0.02, "accuracy_task_arithmetic": 0.0}})
    with pytest.raises(ValidationError, match="registry.guard_metrics: 'acuracy' is not a metric"):
        make_config(registry={"guard_metrics": {"acuracy": 0.0}})
    with pytest.raises(ValidationError, match="allowances must be 0 or more"):
        make_config(registry={"guard_metrics": {"accuracy": -0.1}})
