"""Evaluators: BaseEvaluator and the reasoning evaluator, selected by ``evaluation.evaluator``."""

from llm_trainer.evaluation.base import BaseEvaluator, EvalResult, build_evaluator

__all__ = ["BaseEvaluator", "EvalResult", "build_evaluator"]
