"""Pipelines: wiring only."""

from pipelines.process import process_pipeline
from pipelines.train import train_pipeline

__all__ = ["process_pipeline", "train_pipeline"]
