"""Trainers: BaseTrainer and the QLoRA trainer, selected by ``training.trainer``; one run through run_training."""

from llm_trainer.training.base import BaseTrainer, LoraAdapter, TrainResult, build_trainer
from llm_trainer.training.run import process_count, run_folder, run_training

__all__ = ["BaseTrainer", "LoraAdapter", "TrainResult", "build_trainer", "process_count", "run_folder", "run_training"]
