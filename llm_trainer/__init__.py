"""llm_trainer: the library behind the pipelines. It never imports zenml (a test enforces it)."""

__version__ = "0.1.0"
