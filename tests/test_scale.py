"""Data at natural_reasoning's size: chunked packing, compute efficiency, over-length rows made visible."""

from __future__ import annotations

import logging

import datasets
import numpy as np
import pytest

from llm_trainer.data.collate import (LengthGroupedSampler, PackedBlockCollator, compute_efficiency, grouped_efficiency,
                                      grouped_order, padded_efficiency)
from llm_trainer.data.packing import pack_dataset, pack_lengths
from llm_trainer.data.tokenization import tokenize_splits


def _tokenize(sample, **data):
    cfg = sample.cfg.data.model_copy(update=data)
    return tokenize_splits(sample.processed, sample.tokenizer, cfg)


@pytest.fixture(scope="module")
def sample():
    """The quickstart's config, processed sample data and tiny tokenizer (those of tiny_fp32, without
    building the model)."""
    from types import SimpleNamespace

    from conftest import QUICKSTART
    from llm_trainer.base_model import prepare_tokenizer
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor

    cfg = load_config(QUICKSTART, ["model.load_in_4bit=false", "model.dtype=float32"])
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    return SimpleNamespace(cfg=cfg, processed=processed, tokenizer=prepare_tokenizer(cfg.model, processed["train"]))


@pytest.fixture(scope="module")
def full_lengths(sample):
    """Train-split (length, prompt length) of every sample, unpacked, at a limit nothing reaches."""
    tokenized, _ = _tokenize(sample, packing=False, max_seq_length=4096)
    train = tokenized["train"]
    return np.asarray(train["length"]), np.asarray(train["prompt_length"])


def test_chunked_packing_gives_the_same_blocks_as_unchunked(sample, full_lengths, monkeypatch):
    limit = 512
    tokenized, _ = _tokenize(sample, packing=False, max_seq_length=limit)
    lengths = full_lengths[0]
    train = tokenized["train"].select(np.flatnonzero(lengths < np.percentile(lengths, 90)))  # as when rows are
    assert train._indices is not None  # dropped as too long: the packer reads through an indices mapping
    in_memory, stats = pack_dataset(train, limit, chunk_tokens=10**9)
    monkeypatch.setattr(datasets, "is_caching_enabled", lambda: False)  # compute it, never reuse a cached file
    reads = []
    getitem = datasets.Dataset.__getitem__
    monkeypatch.setattr(datasets.Dataset, "__getitem__", lambda self, key: reads.append(key) or getitem(self, key))
    chunked, chunked_stats = pack_dataset(train, limit, chunk_tokens=5000)
    monkeypatch.undo()

    assert not in_memory.cache_files and chunked.cache_files  # the chunked one went through the disk path
    assert chunked_stats == stats and len(chunked) == stats["blocks"]
    assert chunked.with_format("arrow")[:].equals(in_memory.with_format("arrow")[:])
    # Samples are read in storage order: consecutive slices that cover the split once, and nothing else.
    chunks = [key for key in reads if isinstance(key, slice) and key.start is not None]
    assert all(isinstance(key, slice) for key in reads) and len(chunks) >= 20
    assert [c.start for c in chunks] == [0] + [c.stop for c in chunks[:-1]] and chunks[-1].stop == len(train)
    # Every block is its samples end to end, each sample whole, positions restarting at each sample.
    block = chunked[int(np.argmax(chunked["num_samples"]))]
    starts = np.flatnonzero(np.asarray(block["position_ids"]) == 0)
    assert len(starts) == block["num_samples"] >= 2 and block["length"] <= limit


def test_overlength_rows_and_tokens_are_counted_per_split_and_warned_about(sample, full_lengths, caplog):
    lengths, prompts = full_lengths
    limit = int(np.percentile(lengths, 50))
    over = lengths > limit
    with caplog.at_level(logging.WARNING):
        _, report = _tokenize(sample, packing=False, max_seq_length=limit)
    train = report["splits"]["train"]
    assert train["overlength"] == {"policy": "drop", "dropped_rows": int(over.sum()),
                                   "dropped_tokens": int(lengths[over].sum()),
                                   "dropped_share": round(float(over.mean()), 4)}
    assert train["dropped"] == {"too_long": int(over.sum())}
    edges, counts = np.asarray(train["length_histogram"]["edges"]), np.asarray(train["length_histogram"]["counts"])
    assert limit in edges and counts[edges[:-1] >= limit].sum() == over.sum()  # the chart's line splits exactly
    assert len(report["warnings"]) == 1 and f"longer than {limit} tokens" in report["warnings"][0]
    assert [r.getMessage() for r in caplog.records if "longer than" in r.getMessage()] == report["warnings"]

    _, truncated = _tokenize(sample, packing=False, max_seq_length=limit, overlength="truncate")
    cut = over & (prompts < limit)
    assert truncated["splits"]["train"]["overlength"] == {
        "policy": "truncate", "truncated_rows": int(cut.sum()), "truncated_tokens": int((lengths - limit)[cut].sum()),
        "dropped_rows": int((over & ~cut).sum()), "dropped_tokens": int(lengths[over & ~cut].sum()),
        "dropped_share": round(float((over & ~cut).mean()), 4)}
    assert "warnings" not in truncated


def test_grouped_order_is_a_permutation_of_similar_length_groups():
    lengths = np.random.default_rng(0).integers(1, 2048, size=1003)
    order = grouped_order(lengths, group_size=16, seed=3)
    assert sorted(order.tolist()) == list(range(1003))
    assert set(order[:16].tolist()) == set(np.argsort(-lengths, kind="stable")[:16].tolist())  # longest first
    assert set(order[-11:].tolist()) == set(np.argsort(lengths, kind="stable")[:11].tolist())  # short rest last
    assert not np.array_equal(order, grouped_order(lengths, 16, seed=4))  # groups reshuffled per seed/epoch
    sampler = LengthGroupedSampler(lengths, 16, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    assert first == order.tolist() and list(sampler) != first and len(sampler) == 1003
    grouped = padded_efficiency(lengths[order], 2)
    assert grouped == grouped_efficiency(lengths)["2"] > 0.99 > padded_efficiency(lengths, 2)


def test_compute_efficiency_matches_the_collated_batches_on_the_sample_data(sample):
    tokenized, report = _tokenize(sample)  # quickstart: packed at 512, batches of 8
    blocks = tokenized["train"]
    batch = sample.cfg.training.per_device_train_batch_size
    lengths = np.asarray(blocks["length"])
    order = LengthGroupedSampler(lengths, batch * 2, seed=42).order()
    collate = PackedBlockCollator(pad_token_id=sample.tokenizer.pad_token_id)
    positions = sum(collate([blocks[int(i)] for i in order[s:s + batch]])["input_ids"].numel()
                    for s in range(0, len(order), batch))
    measured = round(float(lengths.sum() / positions), 4)
    assert compute_efficiency(collate, lengths[order], batch) == measured
    assert report["splits"]["train"]["compute_efficiency"][str(batch)] == measured >= 0.98


def test_compute_efficiency_at_natural_reasoning_lengths():
    """Samples shaped like natural_reasoning's at 2048 tokens (mean ~1,480 after dropping the longer half):
    blocks hold ~1.1 samples, so batches of 2 random blocks pad a lot; length-grouped ones do not."""
    rng = np.random.default_rng(0)
    lengths = rng.lognormal(np.log(2000), 0.45, size=6000).astype(np.int64)
    lengths = lengths[(lengths <= 2048) & (lengths > 50)]
    blocks = pack_lengths(lengths, 2048)
    block_lengths = np.array([lengths[b].sum() for b in blocks])
    assert 1.05 < len(lengths) / len(blocks) < 1.4
    random_order = padded_efficiency(block_lengths[rng.permutation(len(block_lengths))], 2)
    assert grouped_efficiency(block_lengths)["2"] >= 0.95 > random_order - 0.02


def test_the_trainer_draws_batches_in_the_grouped_order(sample, tmp_path):
    from llm_trainer.training import build_trainer

    cfg = sample.cfg
    training = cfg.training.model_copy(update={"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                                               "max_steps": 1, "eval_steps": 1000, "save_steps": 1000,
                                               "gradient_checkpointing": False})
    tokenized, _ = _tokenize(sample)
    tokenized["validation"] = tokenized["validation"].select([])
    result = build_trainer(cfg.model_copy(update={"training": training})).train(tokenized, sample.tokenizer,
                                                                                tmp_path / "run")
    lengths = np.asarray(tokenized["train"]["length"])
    first = grouped_order(lengths, 2, cfg.seed)[:2]
    labels = [np.asarray(tokenized["train"][int(i)]["labels"]) for i in first]
    positions = [np.asarray(tokenized["train"][int(i)]["position_ids"]) for i in first]
    # The first step trained the two longest blocks: their label tokens, less each sample's first label.
    expected = sum(int(((lab != -100) & (pos != 0)).sum()) for lab, pos in zip(labels, positions))
    assert result.metrics["trained_tokens"] == expected
    assert result.metrics["compute_efficiency"] == padded_efficiency(lengths[grouped_order(lengths, 2, cfg.seed)], 2)
