"""Pack tokenized samples into blocks of at most max_seq_length tokens (best-fit decreasing).

A block keeps its samples apart: ``position_ids`` restart at 0 for each sample, which is how the model
(and the padding-free collator) knows where attention must stop. Blocks are built with Arrow list
offsets, not Python loops over tokens.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, insort
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PACKED_FEATURES = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),
        "labels": datasets.List(datasets.Value("int32")),
        "position_ids": datasets.List(datasets.Value("int32")),
        "length": datasets.Value("int32"),
        "num_samples": datasets.Value("int32"),
    }
)


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Assign sample indices to bins: longest first, each into the fullest bin it still fits."""
    if len(lengths) and int(lengths.max()) > capacity:
        raise ValueError(f"a sample of {int(lengths.max())} tokens does not fit a block of {capacity}")
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted
    for index in np.argsort(-lengths, kind="stable").tolist():
        length = int(lengths[index])
        position = bisect_left(free, (length, -1))
        if position < len(free):
            remaining, bin_index = free.pop(position)
            bins[bin_index].append(index)
        else:
            remaining, bin_index = capacity, len(bins)
            bins.append([index])
        if remaining - length > 0:
            insort(free, (remaining - length, bin_index))
    return bins


def pack_dataset(tokenized: datasets.Dataset, max_seq_length: int) -> tuple[datasets.Dataset, dict[str, Any]]:
    lengths = np.asarray(tokenized.with_format("arrow")[:].column("length").to_numpy())
    bins = best_fit_decreasing(lengths, max_seq_length)
    bins_ds = datasets.Dataset.from_dict({"sample_ids": bins})
    fingerprint = hashlib.sha256(f"{tokenized._fingerprint}|pack|{max_seq_length}|v1".encode()).hexdigest()[:16]
    packed = bins_ds.with_format("arrow").map(
        _gather_bins,
        batched=True,
        batch_size=1000,
        fn_kwargs={"source": tokenized.with_format("arrow")},
        remove_columns=["sample_ids"],
        features=PACKED_FEATURES,
        new_fingerprint=fingerprint,
        desc="pack",
    ).with_format(None)
    total = int(lengths.sum())
    stats = {
        "blocks": len(bins),
        "samples_per_block": round(len(lengths) / max(len(bins), 1), 2),
        "packing_efficiency": round(total / (len(bins) * max_seq_length), 4) if bins else 0.0,
    }
    return packed, stats


def _gather_bins(batch: pa.Table, source: datasets.Dataset) -> pa.Table:
    sample_ids = batch.column("sample_ids").combine_chunks()
    counts = pc.list_value_length(sample_ids).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = source[sample_ids.flatten().to_numpy(zero_copy_only=False).tolist()]
    lengths = rows.column("length").to_numpy().astype(np.int64)
    bin_of_sample = np.repeat(np.arange(len(counts)), counts)
    block_lengths = np.bincount(bin_of_sample, weights=lengths, minlength=len(counts)).astype(np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(block_lengths)]).astype(np.int32))
    sample_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    positions = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(sample_starts, lengths)
    return pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(offsets, rows.column("input_ids").combine_chunks().flatten()),
            "labels": pa.ListArray.from_arrays(offsets, rows.column("labels").combine_chunks().flatten()),
            "position_ids": pa.ListArray.from_arrays(offsets, pa.array(positions.astype(np.int32))),
            "length": pa.array(block_lengths.astype(np.int32)),
            "num_samples": pa.array(counts.astype(np.int32)),
        }
    )
