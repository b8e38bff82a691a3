"""Train the tiny model from the command line, optionally killing itself with SIGKILL at a given step.

    python tests/helpers/train_once.py RUN_DIR OUT_JSON [KILL_AT_STEP] [--set key=value ...]
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from transformers import TrainerCallback  # noqa: E402

from llm_trainer.config import load_config  # noqa: E402
from llm_trainer.data import build_processor  # noqa: E402
from llm_trainer.base_model import prepare_tokenizer  # noqa: E402
from llm_trainer.training.qlora import QLoraTrainer  # noqa: E402


class KillAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillingTrainer(QLoraTrainer):
    kill_at: int | None = None

    def _callbacks(self):
        return super()._callbacks() + ([KillAt(self.kill_at)] if self.kill_at else [])


def main() -> None:
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    rest = sys.argv[3:]
    kill_at = int(rest.pop(0)) if rest and rest[0].isdigit() else None
    overrides = [arg for arg in rest if arg != "--set"]
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", overrides)
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(cfg.model, processed["train"])
    tokenized, _ = processor.tokenize(processed, tokenizer)
    trainer = KillingTrainer(cfg)
    trainer.kill_at = kill_at
    result = trainer.train(tokenized, tokenizer, run_dir)
    out.write_text(json.dumps({"metrics": result.metrics, "history": result.history}))


if __name__ == "__main__":
    main()
