"""Evaluators: BaseEvaluator and the reasoning evaluator, selected by ``evaluation.evaluator``.

Names load lazily so that the config validator can import ``answer_types`` without importing evaluators."""

from __future__ import annotations

from typing import Any

__all__ = ["BaseEvaluator", "EvalResult", "build_evaluator", "evaluate_model_on_test"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from llm_trainer.evaluation import base

        return getattr(base, name)
    raise AttributeError(name)
