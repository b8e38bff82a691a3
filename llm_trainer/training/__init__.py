"""Trainers: BaseTrainer and the QLoRA trainer, selected by ``training.trainer``."""

from llm_trainer.training.base import BaseTrainer, LoraAdapter, TrainResult, build_trainer, run_training

__all__ = ["BaseTrainer", "LoraAdapter", "TrainResult", "build_trainer", "run_training"]
