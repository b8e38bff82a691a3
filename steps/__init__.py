"""One thin ZenML step per file: read a config section, call the library, return named artifacts."""

import materializers  # noqa: F401  (registers the project's materializers before any step runs)
from steps.load_data import load_data
from steps.preprocess import preprocess
from steps.tokenize import tokenize
from steps.train import train_model

__all__ = ["load_data", "preprocess", "tokenize", "train_model"]
