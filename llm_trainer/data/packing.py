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
import os
import tempfile
from bisect import bisect_left, insort
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter
from datasets.table import InMemoryTable

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


# Tokens held in memory at once by pack_dataset (two int32 columns: about 8 bytes a token).
CHUNK_TOKENS = 16_000_000


def pack_dataset(tokenized: datasets.Dataset, max_seq_length: int, chunk_tokens: int = CHUNK_TOKENS
                 ) -> tuple[datasets.Dataset, dict[str, Any]]:
    """Blocks planned from the lengths alone; the samples are then read in storage order, never gathered at random.

    A set that fits ``chunk_tokens`` is packed in memory. A larger one goes through a two-pass bucket sort on
    disk: pass 1 reads the samples chunk by chunk in storage order and appends each to the bucket file of the
    blocks it belongs to (a bucket is a run of consecutive blocks of about ``chunk_tokens`` tokens); pass 2
    reads one bucket at a time, orders its samples by block and writes the blocks. Both passes read and write
    sequentially, and memory holds one chunk or one bucket, whatever the size of the set. Both paths give the
    same blocks in the same order.
    """
    lengths = sample_lengths(tokenized)
    bins = pack_lengths(lengths, max_seq_length)
    fingerprint = hashlib.sha256(f"{tokenized._fingerprint}|pack|{max_seq_length}|v3".encode()).hexdigest()[:16]
    total = int(lengths.sum())
    stats = {
        "blocks": len(bins),
        "samples_per_block": round(len(lengths) / max(len(bins), 1), 2),
        "packing_efficiency": round(total / (len(bins) * max_seq_length), 4) if bins else 0.0,
    }
    counts = np.fromiter((len(b) for b in bins), dtype=np.int64, count=len(bins))
    flat = np.fromiter((i for b in bins for i in b), dtype=np.int64, count=int(counts.sum()))
    source = tokenized.select_columns(["input_ids", "labels", "length"]).with_format("arrow")
    cache_dir = _cache_dir(tokenized)
    if total <= chunk_tokens or cache_dir is None:
        rows = source[:]  # storage order, then reordered in memory
        packed = datasets.Dataset(InMemoryTable(_blocks_table(rows.take(pa.array(flat)), counts)),
                                  info=datasets.DatasetInfo(features=PACKED_FEATURES), fingerprint=fingerprint)
    else:
        packed = _pack_on_disk(source, lengths, flat, counts, chunk_tokens, cache_dir, fingerprint)
    return packed, stats


def sample_lengths(tokenized: datasets.Dataset) -> np.ndarray:
    """The ``length`` column as int64, read alone (never the token columns)."""
    column = tokenized.select_columns(["length"]).with_format("arrow")[:].column("length")
    return np.asarray(column.to_numpy(), dtype=np.int64)


def _cache_dir(tokenized: datasets.Dataset) -> Path | None:
    files = tokenized.cache_files
    return Path(files[0]["filename"]).parent if files else None


def _pack_on_disk(source: datasets.Dataset, lengths: np.ndarray, flat: np.ndarray, counts: np.ndarray,
                  chunk_tokens: int, cache_dir: Path, fingerprint: str) -> datasets.Dataset:
    output = cache_dir / f"cache-pack-{fingerprint}.arrow"
    if output.exists() and datasets.is_caching_enabled():
        packed = datasets.Dataset.from_file(str(output))
        packed._fingerprint = fingerprint
        return packed
    # rank: a sample's place in the packed output; bucket: which run of blocks it lands in.
    rank = np.empty(len(flat), dtype=np.int64)
    rank[flat] = np.arange(len(flat))
    block_tokens = np.bincount(np.repeat(np.arange(len(counts)), counts), weights=lengths[flat],
                               minlength=len(counts)).astype(np.int64)
    block_bucket = (np.cumsum(block_tokens) - block_tokens) // chunk_tokens
    bucket = np.empty(len(flat), dtype=np.int64)
    bucket[flat] = np.repeat(block_bucket, counts)
    buckets = int(block_bucket[-1]) + 1
    with tempfile.TemporaryDirectory(prefix="pack-", dir=cache_dir) as scratch:
        paths = [Path(scratch) / f"bucket-{b}.arrow" for b in range(buckets)]
        writers: list[pa.ipc.RecordBatchFileWriter | None] = [None] * buckets
        try:
            for start, stop in _storage_chunks(lengths, chunk_tokens):
                rows = source[int(start):int(stop)]
                chunk_bucket = bucket[start:stop]
                order = np.argsort(chunk_bucket, kind="stable")
                rows = rows.append_column("rank", pa.array(rank[start:stop])).take(pa.array(order))
                sorted_buckets = chunk_bucket[order]
                edges = np.flatnonzero(np.diff(sorted_buckets)) + 1
                for first, last in zip(np.concatenate([[0], edges]), np.concatenate([edges, [len(order)]])):
                    b = int(sorted_buckets[first])
                    part = rows.slice(int(first), int(last - first))
                    if writers[b] is None:
                        writers[b] = pa.ipc.new_file(str(paths[b]), part.schema)
                    writers[b].write_table(part)
        finally:
            for writer in writers:
                if writer is not None:
                    writer.close()
        block_starts = np.concatenate([[0], np.cumsum(np.bincount(block_bucket, minlength=buckets))])
        tmp_output = Path(scratch) / "packed.arrow"
        writer = ArrowWriter(features=PACKED_FEATURES, path=str(tmp_output))
        for b in range(buckets):
            with pa.memory_map(str(paths[b])) as handle:
                rows = pa.ipc.open_file(handle).read_all()
            rows = rows.take(pc.sort_indices(rows.column("rank")))
            writer.write_table(_blocks_table(rows, counts[block_starts[b]:block_starts[b + 1]]))
            paths[b].unlink()
        writer.finalize()
        os.replace(tmp_output, output)
    packed = datasets.Dataset.from_file(str(output))
    packed._fingerprint = fingerprint
    return packed


def _storage_chunks(lengths: np.ndarray, chunk_tokens: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of at most ``chunk_tokens`` tokens each (at least one row)."""
    ends = np.cumsum(lengths)
    chunks, start = [], 0
    while start < len(lengths):
        before = int(ends[start - 1]) if start else 0
        stop = max(int(np.searchsorted(ends, before + chunk_tokens, side="right")), start + 1)
        chunks.append((start, stop))
        start = stop
    return chunks


def _blocks_table(rows: pa.Table, counts: np.ndarray) -> pa.Table:
    """Blocks from samples already in block order: ``counts[i]`` consecutive samples make block i."""
    lengths = rows.column("length").to_numpy().astype(np.int64)
    bin_of_sample = np.repeat(np.arange(len(counts)), counts)
    block_lengths = np.bincount(bin_of_sample, weights=lengths, minlength=len(counts)).astype(np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(block_lengths)]).astype(np.int32))
    sample_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)  # < 2**31: one chunk's tokens
    positions = np.arange(int(lengths.sum()), dtype=np.int32) - np.repeat(sample_starts, lengths)
    return pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(offsets, _values(rows.column("input_ids"))),
            "labels": pa.ListArray.from_arrays(offsets, _values(rows.column("labels"))),
            "position_ids": pa.ListArray.from_arrays(offsets, pa.array(positions)),
            "length": pa.array(block_lengths.astype(np.int32)),
            "num_samples": pa.array(counts.astype(np.int32)),
        }
    ).cast(PACKED_FEATURES.arrow_schema)


def _values(column: pa.ChunkedArray) -> pa.Array:
    """The list column's values, in order, whatever its chunking and slicing."""
    return column.combine_chunks().flatten()
