"""Benchmark 3: training throughput in trained (label) tokens per second, on the tiny model, CPU.

project:  the library's QLoraTrainer (4-bit NF4 tiny model, LoRA, packed blocks, PackedBlockCollator),
          quickstart config, ``max_steps`` steps, no validation split (so no evaluation inside the timing).
baseline: transformers' Trainer with the same 4-bit model, the same LoRA and training settings
          (prepare_model_for_kbit_training with non-reentrant gradient checkpointing, same batch size,
          optimizer and learning rate), on the unpacked samples, every row padded to max_seq_length.

Both count label tokens (labels != -100) in the batches they train on and divide by the wall time of
``trainer.train()``. Each run is a fresh subprocess; runs alternate; medians are quoted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import emit, median, quickstart_assets, report, row, run_worker, scratch

STEPS = 20


def _overrides(steps: int) -> list[str]:
    return [f"training.max_steps={steps}", f"training.save_steps={steps * 10}", f"training.logging_steps={steps}"]


def library_worker(steps: int, out: Path) -> dict:
    import datasets

    from llm_trainer.training import build_trainer

    cfg, processor, processed, tokenizer = quickstart_assets(_overrides(steps))
    tokenized, _ = processor.tokenize(processed, tokenizer)
    result = build_trainer(cfg).train(datasets.DatasetDict({"train": tokenized["train"]}), tokenizer, out)
    m = result.metrics
    return {"tokens": m["trained_tokens"], "seconds": m["wall_time_s"], "tokens_per_s": m["train_tokens_per_second"],
            "steps": m["global_step"], "train_loss": m.get("train_loss")}


def baseline_worker(steps: int, out: Path) -> dict:
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from llm_trainer.base_model import resolve_base_model
    from llm_trainer.modeling import load_model, lora_config

    cfg, processor, processed, tokenizer = quickstart_assets(_overrides(steps) + ["data.packing=false"])
    tokenized, _ = processor.tokenize(processed, tokenizer)
    train = tokenized["train"].select_columns(["input_ids", "labels"])
    set_seed(cfg.seed)
    model = load_model(resolve_base_model(cfg.model, tokenizer, cfg.seed).name_or_path, cfg.model)
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, lora_config(cfg.lora))
    t = cfg.training
    args = TrainingArguments(
        output_dir=str(out), learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps, per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, max_steps=steps, optim=t.optim,
        logging_steps=steps, save_strategy="no", seed=cfg.seed, data_seed=cfg.seed, use_cpu=True,
        report_to="none", dataloader_num_workers=0, disable_tqdm=True,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding="max_length", max_length=cfg.data.max_seq_length,
                                      label_pad_token_id=-100)

    class CountingTrainer(Trainer):
        label_tokens = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.label_tokens += int((inputs["labels"] != -100).sum())
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    trainer = CountingTrainer(model=model, args=args, train_dataset=train, data_collator=collator)
    started = time.time()
    output = trainer.train()
    seconds = time.time() - started
    assert torch.isfinite(torch.tensor(output.training_loss))
    return {"tokens": trainer.label_tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(trainer.label_tokens / seconds, 1), "steps": trainer.state.global_step,
            "train_loss": output.training_loss}


def main(steps: int = STEPS, repeats: int = 3) -> dict:
    from llm_trainer.base_model import resolve_base_model

    cfg, _, _, tokenizer = quickstart_assets()
    resolve_base_model(cfg.model, tokenizer, cfg.seed)  # build the tiny model once, before the timed workers
    batch, seq = cfg.training.per_device_train_batch_size, cfg.data.max_seq_length
    runs: dict[str, list[dict]] = {"library": [], "baseline": []}
    for _ in range(repeats):
        for kind in runs:
            runs[kind].append(run_worker("bench.bench_training", "--worker", kind, "--steps", str(steps),
                                         "--out", str(scratch(f"train-{kind}"))))
    lib = median([r["tokens_per_s"] for r in runs["library"]])
    base = median([r["tokens_per_s"] for r in runs["baseline"]])
    per_step = {k: median([r["seconds"] / r["steps"] for r in v]) for k, v in runs.items()}
    tokens = {k: v[0]["tokens"] / v[0]["steps"] for k, v in runs.items()}
    rows = [
        row("trained (label) tokens/s", lib, base, "tokens/s", ">= 2",
            samples={"project": [r["tokens_per_s"] for r in runs["library"]],
                     "baseline": [r["tokens_per_s"] for r in runs["baseline"]]}),
        row("label tokens per step", tokens["library"], tokens["baseline"], "tokens"),
        row("seconds per step", per_step["library"], per_step["baseline"], "s", higher_is_better=False),
    ]
    notes = [f"{steps} steps per run, batch {batch} x {seq} positions, {repeats} "
             "alternating runs each in fresh processes, medians; tiny model (quickstart shape), 4-bit NF4, float32 "
             "compute, gradient checkpointing, CPU. The tiny model is built once before the timed runs."]
    return report({"name": "training", "title": "3. Training throughput", "rows": rows, "notes": notes,
                   "project": "QLoraTrainer on packed blocks (quickstart config)",
                   "baseline": "transformers Trainer, same model/LoRA/settings, rows padded to max_seq_length",
                   "raw": runs})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["library", "baseline"])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        emit((library_worker if args.worker == "library" else baseline_worker)(args.steps, args.out))
    else:
        main(args.steps, args.repeats)
