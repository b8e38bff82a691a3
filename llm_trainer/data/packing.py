"""Pack tokenized samples into blocks of at most max_seq_length tokens.

Best-fit decreasing first; then the samples of the blocks it left under ``REFILL_BELOW`` full are packed again,
block by block, each block filled as tightly as the remaining lengths allow (an exact subset sum). Samples of
similar length are where best-fit decreasing wastes most (five ~100-token samples fit a 512 block, but it
places the longest first and closes blocks at four).

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


REFILL_BELOW = 0.95


def pack_lengths(lengths: np.ndarray, capacity: int, refill_below: float = REFILL_BELOW) -> list[list[int]]:
    """Blocks of sample indices: best-fit decreasing, then its under-filled blocks re-packed tightly.

    The re-packing is kept only when it needs fewer blocks, so the result is never worse than BFD.
    """
    bins = best_fit_decreasing(lengths, capacity)
    if not bins or refill_below <= 0:
        return bins
    counts = np.fromiter((len(b) for b in bins), dtype=np.int64, count=len(bins))
    flat = np.fromiter((i for b in bins for i in b), dtype=np.int64, count=int(counts.sum()))
    loads = np.add.reduceat(lengths[flat], np.concatenate([[0], np.cumsum(counts)[:-1]]))
    full = loads >= refill_below * capacity
    loose = [b for b, ok in zip(bins, full) if not ok]
    if len(loose) < 2:
        return bins
    refilled = tightest_blocks(lengths, np.concatenate([np.asarray(b, dtype=np.int64) for b in loose]), capacity)
    kept = [b for b, ok in zip(bins, full) if ok]
    return kept + (refilled if len(refilled) < len(loose) else loose)


def tightest_blocks(lengths: np.ndarray, indices: np.ndarray, capacity: int) -> list[list[int]]:
    """Greedy over blocks, exact within one: each block takes the longest remaining sample, then the subset
    of the remaining samples that fills the rest of the block best."""
    pool: dict[int, list[int]] = {}  # length -> indices of samples not yet placed
    for index in indices[np.argsort(lengths[indices], kind="stable")].tolist():
        pool.setdefault(int(lengths[index]), []).append(index)
    blocks: list[list[int]] = []
    while pool:
        block = [_take(pool, max(pool))]
        room = capacity - int(lengths[block[0]])
        block += [_take(pool, size) for size in best_subset({n: len(v) for n, v in pool.items() if 0 < n <= room}, room)]
        blocks.append(block)
    return blocks


def best_subset(available: dict[int, int], room: int) -> list[int]:
    """Sizes (with repeats, at most ``available[size]`` of each) whose sum is the largest one <= room.

    Bounded subset sum with a Python integer as the bit set of reachable sums (bit s: some choice sums to s);
    stops early once ``room`` itself is reachable.
    """
    sizes = sorted(available, reverse=True)  # ties between equal sums go to the longer samples
    mask, reach, before = (1 << (room + 1)) - 1, 1, []
    for size in sizes:
        before.append(reach)
        for _ in range(min(available[size], room // size)):
            grown = (reach | (reach << size)) & mask
            if grown == reach:
                break
            reach = grown
        if reach >> room & 1:
            break
    total, chosen = reach.bit_length() - 1, []
    for size, prior in zip(reversed(sizes[: len(before)]), reversed(before)):
        copies = 0
        while not prior >> (total - copies * size) & 1:  # fewest copies of this size that reach the total
            copies += 1
        chosen += [size] * copies
        total -= copies * size
    return chosen


def _take(pool: dict[int, list[int]], length: int) -> int:
    index = pool[length].pop()
    if not pool[length]:
        del pool[length]
    return index


def pack_dataset(tokenized: datasets.Dataset, max_seq_length: int) -> tuple[datasets.Dataset, dict[str, Any]]:
    lengths = np.asarray(tokenized.with_format("arrow")[:].column("length").to_numpy())
    bins = pack_lengths(lengths, max_seq_length)
    bins_ds = datasets.Dataset.from_dict({"sample_ids": bins})
    fingerprint = hashlib.sha256(f"{tokenized._fingerprint}|pack|{max_seq_length}|v2".encode()).hexdigest()[:16]
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
