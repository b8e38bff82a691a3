"""Data processors: load a source, clean and format it into chat messages, split, tokenize and pack."""

from llm_trainer.config import DataConfig
from llm_trainer.data.base import BaseDataProcessor
from llm_trainer.data.reasoning import ReasoningDataProcessor
from llm_trainer.registry import PROCESSORS


def build_processor(cfg: DataConfig) -> BaseDataProcessor:
    """The processor named by ``data.processor``."""
    return PROCESSORS.resolve(cfg.processor)(cfg)


__all__ = ["BaseDataProcessor", "ReasoningDataProcessor", "build_processor"]
