"""Batch collators (padding-free, packed blocks, padded), the length-grouped order the Trainer draws rows in,
and ``compute_efficiency``: the share of the positions the model computes that are real tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from llm_trainer.data.labels import IGNORE_INDEX


@dataclass
class PaddingFreeCollator:
    """Concatenate the batch into one row of shape [1, total tokens], without any padding.

    ``position_ids`` restart at 0 for each sample (taken from packed blocks, or made per example), so
    attention never crosses a sample border: transformers builds a block-diagonal causal mask from them
    when no attention_mask is given. The first label of every sample is ignored, because the token
    before it belongs to another sample.
    """

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = np.concatenate([np.asarray(f["input_ids"], dtype=np.int64) for f in features])
        labels = np.concatenate([np.asarray(f["labels"], dtype=np.int64) for f in features])
        positions = np.concatenate([
            np.asarray(f["position_ids"], dtype=np.int64) if f.get("position_ids") is not None
            else np.arange(len(f["input_ids"]), dtype=np.int64)
            for f in features
        ])
        labels[positions == 0] = IGNORE_INDEX
        return {
            "input_ids": torch.from_numpy(input_ids)[None],
            "labels": torch.from_numpy(labels)[None],
            "position_ids": torch.from_numpy(positions)[None],
        }


@dataclass
class PaddedCollator:
    """Right-pad to the longest sample in the batch (or to ``max_length``), with an attention mask."""

    pad_token_id: int
    max_length: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = self.max_length or max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            n = min(len(feature["input_ids"]), width)
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"][:n])
            labels[row, :n] = torch.as_tensor(feature["labels"][:n])
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


@dataclass
class PackedBlockCollator:
    """Stack packed blocks into [batch, longest block]; ``position_ids`` keep samples apart.

    Blocks are nearly full (best-fit packing), so the only padding is each block's short tail, which
    gets labels -100 and its own position run so it forms a separate, ignored segment. Used with SDPA and
    eager attention, where one flattened row would cost attention quadratic in the whole batch's length.
    """

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.arange(width, dtype=torch.long).repeat(len(features), 1)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"])
            labels[row, :n] = torch.as_tensor(feature["labels"])
            positions[row, :n] = torch.as_tensor(feature["position_ids"])
            positions[row, n:] = torch.arange(width - n)
        labels[positions == 0] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels, "position_ids": positions}


def collator_for(packing: bool, attn_implementation: str, pad_token_id: int) -> Any:
    """Padding-free flattening needs varlen attention (flash_attention_2) to be cheap; else per block."""
    if not packing:
        return PaddedCollator(pad_token_id)
    if attn_implementation == "flash_attention_2":
        return PaddingFreeCollator()
    return PackedBlockCollator(pad_token_id)


# Batch sizes the tokenize report gives compute_efficiency for (the train step reports the configured one).
REPORTED_BATCH_SIZES = (1, 2, 4, 8, 16)


def grouped_order(lengths: np.ndarray, group_size: int, seed: int) -> np.ndarray:
    """Row indices in groups of ``group_size`` rows of similar length, the groups in random order.

    Rows are sorted longest first (random among equal lengths) and cut into groups, so every micro-batch, a
    run of consecutive rows inside a group, holds rows of nearly one length and pads little. The longest
    group comes first (an out-of-memory shows at the first step, not hours in), a short last group last, the
    others shuffled. With ``group_size`` = batch x accumulation x processes, one optimizer step draws the same
    rows however they are split into micro-batches and ranks (accelerate deals whole batches out to the ranks).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(lengths)), -lengths))
    full = len(order) // group_size
    middle = rng.permutation(np.arange(1, full)) if full > 1 else np.zeros(0, dtype=np.int64)
    groups = np.concatenate([[0], middle]).astype(np.int64) if full else np.zeros(0, dtype=np.int64)
    picked = (groups[:, None] * group_size + np.arange(group_size)).ravel()
    return np.concatenate([order[picked], order[full * group_size:]])


def padded_efficiency(lengths_in_order: np.ndarray, batch_size: int) -> float:
    """Real tokens / positions when consecutive rows form batches padded to their longest row."""
    lengths = np.asarray(lengths_in_order, dtype=np.int64)
    if len(lengths) == 0:
        return 1.0
    starts = np.arange(0, len(lengths), batch_size)
    sizes = np.diff(np.append(starts, len(lengths)))
    return round(float(lengths.sum() / (sizes * np.maximum.reduceat(lengths, starts)).sum()), 4)


def grouped_efficiency(lengths: np.ndarray, batch_sizes: tuple[int, ...] = REPORTED_BATCH_SIZES) -> dict[str, float]:
    """compute_efficiency of length-grouped batches, per batch size (any seed and accumulation: every
    micro-batch is a run of the rows sorted by length)."""
    ordered = np.sort(np.asarray(lengths, dtype=np.int64))[::-1]
    return {str(size): padded_efficiency(ordered, size) for size in batch_sizes}


class LengthGroupedSampler(Sampler[int]):
    """The Trainer's training order: ``grouped_order``, reshuffled each epoch, the same on every process."""

    def __init__(self, lengths: np.ndarray, group_size: int, seed: int):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.group_size, self.seed, self.epoch = max(group_size, 1), seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose order ``__iter__`` yields (the Trainer calls it each epoch)."""
        self.epoch = epoch

    def order(self) -> np.ndarray:
        """The row order of the current epoch: length groups shuffled by seed plus epoch."""
        return grouped_order(self.lengths, self.group_size, self.seed + self.epoch)

    def __iter__(self):
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return len(self.lengths)


def compute_efficiency(collator: Any, lengths_in_order: np.ndarray, batch_size: int) -> float:
    """Real tokens / positions the model computes, for this collator and the rows in training order."""
    if isinstance(collator, PaddingFreeCollator):
        return 1.0  # one flattened row, no padding
    if isinstance(collator, PaddedCollator) and collator.max_length:
        lengths = np.minimum(np.asarray(lengths_in_order, dtype=np.int64), collator.max_length)
        return round(float(lengths.sum() / (len(lengths) * collator.max_length)), 4) if len(lengths) else 1.0
    return padded_efficiency(lengths_in_order, batch_size)
