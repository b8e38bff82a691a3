"""Evaluators: BaseEvaluator and the reasoning evaluator, selected by ``evaluation.evaluator``.

Names load lazily so that a light module of the package (``answer_types``, ``text_metrics``) imports without the
evaluators."""

from __future__ import annotations

from llm_trainer.lazy import lazy_names

__all__ = ["BaseEvaluator", "EvalResult", "build_evaluator", "evaluate_model_on_test"]

# Lazy names, the packages' one way (llm_trainer/lazy.py).
__getattr__ = lazy_names(__name__, {name: "llm_trainer.evaluation.base" for name in __all__})
