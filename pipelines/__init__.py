"""Pipelines: wiring only."""

from pipelines.process import process_pipeline

__all__ = ["process_pipeline"]
