"""Benchmark 2: packing efficiency = share of real (non-pad) token positions in training batches.

On data/sample with the quickstart config (train split, batches of per_device_train_batch_size in a
seeded random order, as the Trainer's sampler draws them):

- packed:                  the library's best-fit-decreasing blocks, each batch padded to its longest block
                           (PackedBlockCollator);
- padded to longest:       unpacked samples, each batch padded to its longest sample (PaddedCollator);
- padded to max_seq_length: unpacked samples, every row padded to max_seq_length.

Also, for the record: the library's block-level figure (tokens / (blocks x max_seq_length)) against plain
best-fit decreasing (the library's first pass, before it re-packs under-filled blocks), and both at larger
block sizes.
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import median, quickstart_assets, report, row


def batch_efficiency(lengths: np.ndarray, batch_size: int, width: int | None = None, seed: int = 42) -> float:
    """Real tokens / padded positions over all batches of a seeded random order (the last one may be short)."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    shuffled = lengths[order]
    starts = np.arange(0, len(shuffled), batch_size)
    sizes = np.diff(np.append(starts, len(shuffled)))
    widths = np.maximum.reduceat(shuffled, starts) if width is None else np.full(len(starts), width)
    return float(shuffled.sum() / (sizes * widths).sum())


def block_efficiency(lengths: np.ndarray, bins: list[list[int]], capacity: int) -> float:
    return float(lengths.sum() / (len(bins) * capacity))


def main() -> dict:
    from llm_trainer.data.packing import best_fit_decreasing, pack_lengths

    cfg, processor, processed, tokenizer = quickstart_assets(["data.packing=false"])
    seq, batch = cfg.data.max_seq_length, cfg.training.per_device_train_batch_size
    unpacked, _ = processor.tokenize(processed, tokenizer)
    lengths = np.asarray(unpacked["train"]["length"], dtype=np.int64)
    cfg.data.packing = True
    packed, report_ = processor.tokenize(processed, tokenizer)
    block_lengths = np.asarray(packed["train"]["length"], dtype=np.int64)
    packed_eff = batch_efficiency(block_lengths, batch)
    timings: dict[str, list[float]] = {"bfd": [], "library": []}
    for _ in range(3):
        for name, packer in (("bfd", best_fit_decreasing), ("library", pack_lengths)):
            started = time.perf_counter()
            bins = packer(lengths, seq)
            timings[name].append(time.perf_counter() - started)
            if name == "bfd":
                bfd = bins
    bfd_eff = batch_efficiency(np.array([int(lengths[b].sum()) for b in bfd]), batch)
    rows = [
        row("real-token share, packed vs padded to max_seq_length", packed_eff,
            batch_efficiency(lengths, batch, width=seq), "share", ">= 0.95 packed"),
        row("real-token share, packed vs padded to longest in batch", packed_eff, batch_efficiency(lengths, batch),
            "share"),
        row("real-token share, library packer vs plain best-fit decreasing", packed_eff, bfd_eff, "share"),
    ]
    ms = {k: median(v) * 1000 for k, v in timings.items()}
    fills = np.sort(block_lengths)
    notes = [
        f"data/sample train split: {len(lengths):,} samples of {lengths.min()}-{lengths.max()} tokens "
        f"(median {int(np.median(lengths))}), max_seq_length {seq}, batches of {batch}, seeded random order.",
        f"Block-level figure (tokens / (blocks x {seq})): library {report_['splits']['train']['packing_efficiency']} "
        f"with {len(block_lengths)} blocks in {ms['library']:.0f} ms; plain BFD "
        f"{block_efficiency(lengths, bfd, seq):.4f} with {len(bfd)} blocks in {ms['bfd']:.0f} ms (medians of 3); "
        f"the fewest possible is {int(np.ceil(lengths.sum() / seq))}. Block fills p5/p25/p50 = "
        f"{int(np.percentile(fills, 5))}/{int(np.percentile(fills, 25))}/{int(np.median(fills))} of {seq}.",
    ]
    for size in (1024, 2048):
        notes.append(f"At max_seq_length {size} on the same samples: library "
                     f"{block_efficiency(lengths, pack_lengths(lengths, size), size):.4f}, plain BFD "
                     f"{block_efficiency(lengths, best_fit_decreasing(lengths, size), size):.4f}.")
    return report({"name": "packing", "title": "2. Packing efficiency", "rows": rows, "notes": notes,
                   "project": "library packer (BFD + tight re-pack of blocks < 95% full), batch padded to its "
                              "longest block",
                   "baseline": "unpacked samples, padded to max_seq_length / to the longest in the batch; "
                               "plain best-fit decreasing"})


if __name__ == "__main__":
    main()
