"""Trainers: BaseTrainer, the QLoRA (SFT) trainer and the GRPO trainer (training/grpo.py, rewards in
training/rewards.py), selected by ``training.trainer`` through the TRAINERS registry (imported only when chosen:
GRPO imports TRL); one run through run_training."""

from llm_trainer.training.base import BaseTrainer, LoraAdapter, TrainResult, build_trainer
from llm_trainer.training.run import process_count, run_folder, run_training

__all__ = ["BaseTrainer", "LoraAdapter", "TrainResult", "build_trainer", "process_count", "run_folder", "run_training"]
