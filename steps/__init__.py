"""One thin ZenML step per file: read the typed config sections it uses, call the library, return named artifacts."""

import materializers  # noqa: F401  (registers the project's materializers before any step runs)
from steps.base_model import prepare_base_model
from steps.evaluate import evaluate_model
from steps.fingerprint_source import fingerprint_source
from steps.load_adapter import load_adapter
from steps.load_data import load_data
from steps.preprocess import preprocess
from steps.tokenize import tokenize
from steps.register import register_model
from steps.train import train_model

__all__ = ["evaluate_model", "fingerprint_source", "load_adapter", "load_data", "prepare_base_model", "preprocess",
           "register_model", "tokenize", "train_model"]
