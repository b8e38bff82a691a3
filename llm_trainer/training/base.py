"""BaseTrainer: turn tokenized splits and a tokenizer into a trained adapter folder plus metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.adapter_folder import ADAPTER_INFO_FILE, check_adapter_folder  # noqa: F401 - trainers import it here
from llm_trainer.config import TrainSpec
from llm_trainer.registry import TRAINERS

# Called with (metrics, global step) at every logging step and evaluation: the tracking hook.
MetricsHook = Callable[[dict[str, float], int], None]


@dataclass
class LoraAdapter:
    """A saved adapter folder (safetensors + adapter_config.json + tokenizer) and the base it belongs to."""

    path: Path
    base_model: str

    @classmethod
    def from_folder(cls, folder: str | Path) -> LoraAdapter:
        """Read (and check) an adapter folder; the base model comes from our info file, else from
        adapter_config.json."""
        folder = Path(folder)
        return cls(path=folder, base_model=check_adapter_folder(folder))


@dataclass
class TrainResult:
    adapter: LoraAdapter
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    model: Any = field(default=None, repr=False)  # the trained PEFT model, still in memory


class BaseTrainer(ABC):
    """``cfg``: the sections training reads. ``base_model``: the resolved base model (a Hub id or a folder, see
    llm_trainer.base_model), which the pipeline passes as an artifact; library callers may leave it out, and it
    is resolved from the config and tokenizer then."""

    # What ``train`` takes: "tokenized" blocks (supervised fine-tuning) or the "processed" rows (e.g. GRPO, which
    # generates from the prompts and scores against the references).
    inputs = "tokenized"

    def __init__(self, cfg: TrainSpec, base_model: str | None = None):
        self.cfg = cfg
        self.base_model = base_model

    def base_model_for(self, tokenizer: Any) -> str:
        if self.base_model is None:
            from llm_trainer.base_model import resolve_base_model

            self.base_model = resolve_base_model(self.cfg.model, tokenizer, self.cfg.seed).name_or_path
        return self.base_model

    @abstractmethod
    def train(self, tokenized: Any, tokenizer: Any, run_dir: Path, on_metrics: MetricsHook | None = None
              ) -> TrainResult:
        """Train on ``tokenized["train"]`` (evaluating on "validation"), checkpointing under ``run_dir``."""


def build_trainer(cfg: TrainSpec, base_model: str | None = None) -> BaseTrainer:
    return TRAINERS.resolve(cfg.training.trainer)(cfg, base_model)
