"""A transformers Trainer on a toy model with the project's TrainingProgress, for the progress tests.

    python tests/helpers/toy_progress.py STEPS LOGGING_STEPS SECONDS_PER_STEP OUTPUT_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import PrinterCallback, Trainer, TrainingArguments  # noqa: E402

from llm_trainer.progress import TrainingProgress  # noqa: E402


class Toy(torch.nn.Module):
    def __init__(self, pause: float):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.pause = pause

    def forward(self, x, labels):
        if self.training:
            time.sleep(self.pause)
        return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}


def main() -> None:
    steps, logging_steps, pause, output = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    torch.manual_seed(0)
    rows = [{"x": torch.randn(4), "labels": torch.tensor(1.0)} for _ in range(steps * 2)]
    arguments = TrainingArguments(output_dir=output, max_steps=steps, per_device_train_batch_size=2,
                                  logging_steps=logging_steps, save_strategy="no", report_to="none", use_cpu=True,
                                  disable_tqdm=True, learning_rate=0.1)
    trainer = Trainer(model=Toy(pause), args=arguments, train_dataset=rows, callbacks=[TrainingProgress()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()


if __name__ == "__main__":
    main()
