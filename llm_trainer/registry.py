"""Name -> class registries for the extension points, resolved lazily.

Entries are import paths, so validating a config never imports torch or transformers. A YAML value may
also be a full import path (``my_package.module:MyProcessor``), so a user extends the project without
editing it.
"""

from __future__ import annotations

import importlib
from typing import Any

from llm_trainer.errors import ConfigError


class Registry:
    """One extension point's names -> 'module:Class' paths, imported only when resolved."""

    def __init__(self, key: str, entries: dict[str, str]):
        self.key = key
        self._entries = dict(entries)

    def names(self) -> list[str]:
        """The registered names, sorted (for error messages)."""
        return sorted(self._entries)

    def register(self, name: str, target: str | type) -> None:
        """Register a class (or a "module:Class" path) under ``name``."""
        if isinstance(target, type):
            target = f"{target.__module__}:{target.__qualname__}"
        self._entries[name] = target

    def check(self, name: str) -> str:
        """A config validator: the name if registered or a 'module:Class' path, else a ValueError."""
        if name in self._entries or _is_import_path(name):
            return name
        raise ValueError(f"unknown name '{name}'; known: {', '.join(self.names())} (or a 'module:Class' path)")

    def resolve(self, name: str) -> Any:
        """The class a name (or 'module:Class' path) stands for, imported now; a ConfigError if not."""
        path = self._entries.get(name, name)
        if not _is_import_path(path):
            raise ConfigError(f"{self.key}: unknown name '{name}'; known: {', '.join(self.names())}")
        module_name, _, attr = path.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{self.key}: cannot import '{path}': {exc}") from exc


def _is_import_path(value: str) -> bool:
    module, sep, attr = value.partition(":")
    return bool(sep and module and attr.isidentifier())


PROCESSORS = Registry("data.processor", {"reasoning": "llm_trainer.data.reasoning:ReasoningDataProcessor",
                                         "sql": "llm_trainer.data.sql:SqlDataProcessor",
                                         "chat": "llm_trainer.data.conversations:ChatDataProcessor",
                                         "preference": "llm_trainer.data.preference:PreferenceDataProcessor",
                                         "code": "llm_trainer.data.code:CodeDataProcessor"})
TRAINERS = Registry("training.trainer", {"qlora": "llm_trainer.training.qlora:QLoraTrainer",
                                         "grpo": "llm_trainer.training.grpo:GrpoTrainer",
                                         "dpo": "llm_trainer.training.dpo:DpoTrainer"})
REWARDS = Registry("grpo.rewards", {"answer_correct": "llm_trainer.training.rewards:AnswerCorrectReward",
                                    "format": "llm_trainer.training.rewards:FormatReward",
                                    "length": "llm_trainer.training.rewards:LengthReward",
                                    "tests_pass": "llm_trainer.training.rewards:TestsPassReward"})
EVALUATORS = Registry("evaluation.evaluator", {"reasoning": "llm_trainer.evaluation.reasoning:ReasoningEvaluator",
                                               "sql": "llm_trainer.evaluation.sql:SqlEvaluator",
                                               "chat": "llm_trainer.evaluation.conversation:ChatEvaluator",
                                               "code": "llm_trainer.evaluation.code:CodeEvaluator"})
