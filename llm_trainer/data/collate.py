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
