"""BaseTrainer: turn tokenized splits and a tokenizer into a trained adapter folder plus metrics."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.adapter_folder import ADAPTER_INFO_FILE, check_adapter_folder  # noqa: F401 - the adapter materializer imports it here
from llm_trainer.config import TrainSpec
from llm_trainer.registry import TRAINERS

# Called with (metrics, global step) at every logging step and evaluation: the tracking hook.
MetricsHook = Callable[[dict[str, float], int], None]


# A finished run's figures, beside its adapter: a re-run of the same config, data and seed reports them.
RESULT_FILE = "result.json"


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
    """A finished training run: the saved adapter, final metrics, the logged history and the model."""

    adapter: LoraAdapter
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    model: Any = field(default=None, repr=False)  # the trained PEFT model, still in memory
    primary: bool = True  # False on machines other than 0 of a multi-machine run: nothing to log or register

    def save(self, run_dir: Path) -> None:
        """Record the finished run in its folder (written last, by a rename: its presence means finished)."""
        from llm_trainer.errors import UserError
        from llm_trainer.fsutil import storage_failure

        record = {"adapter": Path(self.adapter.path).name, "metrics": self.metrics, "history": self.history}
        target = Path(run_dir) / RESULT_FILE
        staging = target.with_name(f".{RESULT_FILE}.tmp-{os.getpid()}")
        try:
            staging.write_text(json.dumps(record, default=str))
            os.replace(staging, target)
        except OSError as exc:
            raise UserError(f"cannot record the finished run in {target}: {storage_failure(exc, run_dir)}; "
                            f"the adapter in {self.adapter.path} is complete") from exc
        finally:
            staging.unlink(missing_ok=True)

    @classmethod
    def load_finished(cls, run_dir: Path, base_model: str) -> TrainResult | None:
        """The finished run recorded in ``run_dir`` (an adapter of ``base_model``: the run folder's key holds the
        model section), or None when it has not finished or its record is unreadable."""
        try:
            record = json.loads((Path(run_dir) / RESULT_FILE).read_text())
            adapter = LoraAdapter(path=Path(run_dir) / record["adapter"], base_model=base_model)
            metrics, history = dict(record["metrics"]), list(record["history"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not (adapter.path / "adapter_config.json").is_file():
            return None
        return cls(adapter=adapter, metrics={**metrics, "reused_finished_run": 1}, history=history)


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
        """The base model to train on: the one given, else resolved from the config once."""
        if self.base_model is None:
            from llm_trainer.base_model import resolve_base_model

            self.base_model = resolve_base_model(self.cfg.model, tokenizer, self.cfg.seed).name_or_path
        return self.base_model

    @abstractmethod
    def train(self, tokenized: Any, tokenizer: Any, run_dir: Path, on_metrics: MetricsHook | None = None
              ) -> TrainResult:
        """Train on ``tokenized["train"]`` (evaluating on "validation"), checkpointing under ``run_dir``."""


def build_trainer(cfg: TrainSpec, base_model: str | None = None) -> BaseTrainer:
    """The trainer that ``training.trainer`` names, built for ``cfg``."""
    return TRAINERS.resolve(cfg.training.trainer)(cfg, base_model)
