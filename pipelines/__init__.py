"""Pipelines: wiring only."""

from pipelines.evaluate import evaluate_pipeline
from pipelines.full import full_pipeline
from pipelines.process import process_pipeline
from pipelines.train import train_pipeline

__all__ = ["evaluate_pipeline", "full_pipeline", "process_pipeline", "train_pipeline"]
