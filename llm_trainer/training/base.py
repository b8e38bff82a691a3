"""BaseTrainer: turn tokenized splits and a tokenizer into a trained adapter folder plus metrics."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.config import RunConfig
from llm_trainer.errors import DataError
from llm_trainer.registry import TRAINERS

# Called with (metrics, global step) at every logging step and evaluation: the tracking hook.
MetricsHook = Callable[[dict[str, float], int], None]


ADAPTER_INFO_FILE = "llm_trainer_adapter.json"


@dataclass
class LoraAdapter:
    """A saved adapter folder (safetensors + adapter_config.json + tokenizer) and the base it belongs to."""

    path: Path
    base_model: str

    @classmethod
    def from_folder(cls, folder: str | Path) -> LoraAdapter:
        """Read an adapter folder; the base model comes from our info file, else from adapter_config.json."""
        folder = Path(folder)
        if not (folder / "adapter_config.json").is_file():
            raise DataError(f"{folder} is not an adapter folder (no adapter_config.json)")
        info = folder / ADAPTER_INFO_FILE
        source = info if info.is_file() else folder / "adapter_config.json"
        data = json.loads(source.read_text())
        return cls(path=folder, base_model=data.get("base_model") or data["base_model_name_or_path"])


@dataclass
class TrainResult:
    adapter: LoraAdapter
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    model: Any = field(default=None, repr=False)  # the trained PEFT model, still in memory


class BaseTrainer(ABC):
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    @abstractmethod
    def train(self, tokenized: Any, tokenizer: Any, run_dir: Path, on_metrics: MetricsHook | None = None
              ) -> TrainResult:
        """Train on ``tokenized["train"]`` (evaluating on "validation"), checkpointing under ``run_dir``."""


def build_trainer(cfg: RunConfig) -> BaseTrainer:
    return TRAINERS.resolve(cfg.training.trainer)(cfg)


def process_count(cfg: RunConfig) -> int:
    """``training.num_processes``, with 'auto' as one process per visible GPU (1 without a GPU)."""
    if cfg.training.num_processes != "auto":
        return cfg.training.num_processes
    from llm_trainer.modeling import visible_gpus

    return max(1, visible_gpus())


def run_training(cfg: RunConfig, tokenized: Any, tokenizer: Any, run_dir: Path,
                 on_metrics: MetricsHook | None = None, keep_model: bool = False) -> TrainResult:
    """Train in this process, or in ``training.num_processes`` data-parallel processes. Unless ``keep_model``,
    the trained model is dropped and its (GPU) memory freed before returning: the next step in this process
    (evaluation) loads its own. The run folder is held meanwhile: a second run of the same config and data
    waits for this one instead of resuming from its live checkpoints."""
    from llm_trainer.fsutil import run_folder_lock

    with run_folder_lock(run_dir):
        return _run_training(cfg, tokenized, tokenizer, run_dir, on_metrics, keep_model)


def _run_training(cfg: RunConfig, tokenized: Any, tokenizer: Any, run_dir: Path, on_metrics: MetricsHook | None,
                  keep_model: bool) -> TrainResult:
    if process_count(cfg) > 1:
        from llm_trainer.modeling import resolve_base_model
        from llm_trainer.training.distributed import train_in_processes

        resolve_base_model(cfg.model, tokenizer, cfg.seed)  # build/cache the tiny base once, not per rank
        result = train_in_processes(cfg, tokenized, tokenizer, run_dir, on_metrics)
    else:
        result = build_trainer(cfg).train(tokenized, tokenizer, run_dir, on_metrics)
    if cfg.model.is_tiny:  # what the offline base model cost to build (it is cached by content afterwards)
        from llm_trainer.tiny_model import build_info

        result.metrics.update({f"tiny_model_{k}": v for k, v in build_info(result.adapter.base_model).items()})
    if not keep_model:
        from llm_trainer.modeling import free_accelerator_memory

        result.model = None
        free_accelerator_memory()
    return result
