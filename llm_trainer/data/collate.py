"""Batch collators: padding-free (packed) and padded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llm_trainer.data.tokenization import IGNORE_INDEX


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
