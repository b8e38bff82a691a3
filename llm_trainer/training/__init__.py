"""Trainers: BaseTrainer and the QLoRA trainer, selected by ``training.trainer``."""

from llm_trainer.training.base import BaseTrainer, LoraAdapter, TrainResult, build_trainer

__all__ = ["BaseTrainer", "LoraAdapter", "TrainResult", "build_trainer"]
