"""Chat-template tokenization, label masking, over-length handling, packing and packed-vs-padded loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llm_trainer.config import RunConfig
from llm_trainer.data import build_processor
from llm_trainer.data.collate import PackedBlockCollator, PaddedCollator, PaddingFreeCollator, collator_for
from llm_trainer.data.packing import best_fit_decreasing, best_subset, pack_lengths
from llm_trainer.data.tokenization import IGNORE_INDEX

EOT = "<|eot_id|>"
SAMPLE_DATA = Path(__file__).resolve().parent.parent / "data" / "sample" / "natural_reasoning_sample.jsonl"


def _data_config(**data):
    raw = {"name": "test", "data": {"source": str(SAMPLE_DATA), "max_seq_length": 512, "packing": False, **data},
           "model": {"base_model": "tiny-llama"}}
    return RunConfig.model_validate(raw)


@pytest.fixture(scope="module")
def cfg() -> RunConfig:
    return _data_config()


@pytest.fixture(scope="module")
def processed(cfg):
    processor = build_processor(cfg.data)
    result, report = processor.preprocess(processor.load())
    assert report["rows_kept"] == 2400
    return result


@pytest.fixture(scope="module")
def tokenizer(cfg, processed):
    from llm_trainer.tiny_model import build_tiny_tokenizer

    texts = [turn["content"] for messages in processed["train"]["messages"] for turn in messages]
    return build_tiny_tokenizer(texts, cfg.model)


def _tokenize(processed, tokenizer, **data):
    cfg = _data_config(**data)
    return build_processor(cfg.data).tokenize(processed, tokenizer)


@pytest.fixture(scope="module")
def unpacked(processed, tokenizer):
    """Tokenized, not packed, at 512 tokens: nothing in the sample data is longer (the longest is ~135)."""
    tokenized, report = _tokenize(processed, tokenizer)
    assert all(report["splits"][s]["dropped"] == {} for s in tokenized)
    return tokenized, report


# --- label masking ----------------------------------------------------------------------------------------------


def test_labels_are_exactly_the_assistant_turn(processed, tokenizer, unpacked):
    tokenized, report = unpacked
    train = tokenized["train"]
    assert len(train) == len(processed["train"]) == report["splits"]["train"]["samples"]
    bos = tokenizer.bos_token_id
    total_labels = 0
    for sample, row in zip(train, processed["train"]):
        ids, labels = sample["input_ids"], sample["labels"]
        n_prompt = sample["prompt_length"]
        assert len(ids) == len(labels) == sample["length"]
        assert ids[0] == bos and ids.count(bos) == 1
        assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:]  # every completion token is learned, none is masked
        learned = [t for t, label in zip(ids, labels) if label != IGNORE_INDEX]
        assert tokenizer.decode(learned, skip_special_tokens=False) == row["messages"][-1]["content"] + EOT
        assert tokenizer.decode(ids, skip_special_tokens=False) == tokenizer.apply_chat_template(
            row["messages"], tokenize=False)
        assert tokenizer.decode(ids[:n_prompt], skip_special_tokens=False).endswith(
            "<|start_header_id|>assistant<|end_header_id|>\n\n")
        total_labels += len(learned)
        assert sample["label_tokens"] == len(learned)
    assert report["splits"]["train"]["label_tokens"] == total_labels
    assert report["splits"]["train"]["tokens"] == sum(train["length"])


def _slow_split(tokenizer, conversations):
    """The reference: every prompt rendered with add_generation_prompt, the completion is the rest."""
    prompts = tokenizer.apply_chat_template([c[:-1] for c in conversations], tokenize=False,
                                            add_generation_prompt=True)
    fulls = tokenizer.apply_chat_template(conversations, tokenize=False)
    return prompts, [full[len(prompt):] for prompt, full in zip(prompts, fulls)]


def test_one_render_split_equals_rendering_every_prompt(processed, tokenizer):
    from llm_trainer.data.tokenization import render_prompt_and_completion

    conversations = processed["train"]["messages"][:300]
    conversations[5] = [*conversations[5][:-1], {"role": "assistant", "content": "  padded answer \n"}]
    assert render_prompt_and_completion(tokenizer, conversations) == _slow_split(tokenizer, conversations)
    assert render_prompt_and_completion(tokenizer, []) == ([], [])


def test_a_template_that_rewrites_the_answer_falls_back_to_rendering_the_prompt(processed, tokenizer):
    """Here the template upper-cases assistant turns that contain a digit 7: those rows do not end with their
    content, so their prompts are rendered separately; the split still matches the reference."""
    from llm_trainer.data.tokenization import render_prompt_and_completion

    original = tokenizer.chat_template
    tokenizer.chat_template = original.replace("message['content']", "(message['content'] | upper if "
                                               "message['role'] == 'assistant' and '7' in message['content'] "
                                               "else message['content'])")
    assert tokenizer.chat_template != original
    try:
        conversations = processed["train"]["messages"][:200]
        rewritten = [c for c in conversations if "7" in c[-1]["content"]]
        assert 0 < len(rewritten) < len(conversations)
        prompts, completions = render_prompt_and_completion(tokenizer, conversations)
        assert (prompts, completions) == _slow_split(tokenizer, conversations)
        assert any(c.startswith(r[-1]["content"].upper()) for c, r in zip(completions, conversations) if r in rewritten)
    finally:
        tokenizer.chat_template = original


def test_encode_gives_the_tokenizers_own_ids(processed, tokenizer):
    from llm_trainer.data.tokenization import encode

    texts = tokenizer.apply_chat_template(processed["train"]["messages"][:300], tokenize=False)
    texts += ["", "  spaces  ", "<|eot_id|> special in text", "ünïcödé ✓ 12,345.6%"]
    assert encode(tokenizer, texts) == tokenizer(texts, add_special_tokens=False)["input_ids"]


# --- over-length ------------------------------------------------------------------------------------------------


def test_overlength_drop_removes_exactly_the_long_rows(processed, tokenizer, unpacked):
    full, _ = unpacked
    limit = 115  # about the median length: roughly half the rows are longer
    tokenized, report = _tokenize(processed, tokenizer, max_seq_length=limit, overlength="drop")
    for name in full:
        lengths = np.array(full[name]["length"])
        n_long = int((lengths > limit).sum())
        assert 0 < n_long < len(lengths)
        split_report = report["splits"][name]
        assert split_report["dropped"] == {"too_long": n_long}
        assert split_report["samples"] == len(tokenized[name]) == len(lengths) - n_long
        expected = [ids for ids, n in zip(full[name]["input_ids"], lengths) if n <= limit]
        assert tokenized[name]["input_ids"] == expected


def test_overlength_truncate_keeps_rows_at_max_length(processed, tokenizer, unpacked):
    full, _ = unpacked
    limit = 115  # longer than every prompt (the longest is ~101 tokens)
    tokenized, report = _tokenize(processed, tokenizer, max_seq_length=limit, overlength="truncate")
    for name in full:
        lengths = np.array(full[name]["length"])
        assert report["splits"][name]["dropped"] == {}
        assert len(tokenized[name]) == len(lengths)
        new_lengths = np.array(tokenized[name]["length"])
        assert (new_lengths == np.minimum(lengths, limit)).all()
        assert int((new_lengths == limit).sum()) >= int((lengths > limit).sum()) > 0
        for short, long in zip(tokenized[name], full[name]):
            assert len(short["input_ids"]) == len(short["labels"]) == short["length"]
            assert short["input_ids"] == long["input_ids"][:limit]
            assert short["labels"] == long["labels"][:limit]
        label_tokens = sum(sum(label != IGNORE_INDEX for label in labels) for labels in tokenized[name]["labels"])
        assert report["splits"][name]["label_tokens"] == label_tokens


def test_overlength_truncate_drops_rows_whose_prompt_does_not_fit(processed, tokenizer, unpacked):
    full, _ = unpacked
    limit = 91  # about the median prompt length
    tokenized, report = _tokenize(processed, tokenizer, max_seq_length=limit, overlength="truncate")
    prompts = np.array(full["train"]["prompt_length"])
    n_bad = int((prompts >= limit).sum())
    assert 0 < n_bad < len(prompts)
    assert report["splits"]["train"]["dropped"] == {"prompt_too_long": n_bad}
    assert len(tokenized["train"]) == len(prompts) - n_bad
    # Rows longer than the limit are cut to it; the few shorter ones (one-word answers) keep their length.
    lengths = np.array(full["train"]["length"])[prompts < limit]
    assert tokenized["train"]["length"] == np.minimum(lengths, limit).tolist() and (lengths > limit).any()
    assert all(sum(label != IGNORE_INDEX for label in labels) >= 1 for labels in tokenized["train"]["labels"])


# --- packing ------------------------------------------------------------------------------------------------------


def _segments(block: dict) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Split a packed block back into its samples at position 0."""
    positions = np.asarray(block["position_ids"])
    starts = np.flatnonzero(positions == 0).tolist() + [len(positions)]
    return [(tuple(block["input_ids"][a:b]), tuple(block["labels"][a:b])) for a, b in zip(starts, starts[1:])]


@pytest.fixture(scope="module")
def packed(processed, tokenizer):
    return _tokenize(processed, tokenizer, packing=True)


def test_packing_preserves_every_sample(packed, unpacked):
    tokenized, report = packed
    full, full_report = unpacked
    for name in full:
        blocks = tokenized[name]
        assert max(blocks["length"]) <= 512
        samples = []
        for block in blocks:
            positions = np.asarray(block["position_ids"])
            assert len(block["input_ids"]) == len(block["labels"]) == len(positions) == block["length"]
            assert int((positions == 0).sum()) == block["num_samples"]
            assert positions[0] == 0
            steps = np.diff(positions)
            assert ((steps == 1) | (positions[1:] == 0)).all()  # positions count up within a sample
            samples.extend(_segments(block))
        assert sum(blocks["num_samples"]) == len(full[name]) == report["splits"][name]["samples"]
        assert sum(blocks["length"]) == sum(full[name]["length"]) == report["splits"][name]["tokens"]
        packed_labels = sum(sum(label != IGNORE_INDEX for label in b["labels"]) for b in blocks)
        assert packed_labels == full_report["splits"][name]["label_tokens"] == report["splits"][name]["label_tokens"]
        assert sorted(samples) == sorted(zip(map(tuple, full[name]["input_ids"]), map(tuple, full[name]["labels"])))
        assert report["splits"][name]["blocks"] == len(blocks)
        assert report["splits"][name]["packing_efficiency"] == round(sum(blocks["length"]) / (len(blocks) * 512), 4)
    assert report["splits"]["train"]["packing_efficiency"] >= 0.9  # 92-135 tokens: mostly 4 to a block


def test_packing_after_dropping_long_rows_keeps_the_right_rows(processed, tokenizer, unpacked):
    """Packing reads rows through the index mapping left by dropping over-long rows."""
    full, _ = unpacked
    limit = 115
    tokenized, report = _tokenize(processed, tokenizer, max_seq_length=limit, overlength="drop", packing=True)
    for name in full:
        lengths = np.array(full[name]["length"])
        kept = [(tuple(ids), tuple(labels)) for ids, labels, n in zip(full[name]["input_ids"], full[name]["labels"],
                                                                        lengths) if n <= limit]
        samples = [segment for block in tokenized[name] for segment in _segments(block)]
        assert report["splits"][name]["dropped"] == {"too_long": int((lengths > limit).sum())}
        assert max(tokenized[name]["length"]) <= limit
        assert sorted(samples) == sorted(kept)


def test_best_fit_decreasing_hand_example():
    # Best fit puts the 1 into the fuller second bin (2 left), where first fit would use the first (3 left).
    assert best_fit_decreasing(np.array([1, 4, 7, 4]), 10) == [[2], [1, 3, 0]]
    assert best_fit_decreasing(np.array([10, 10]), 10) == [[0], [1]]
    assert best_fit_decreasing(np.array([], dtype=np.int64), 10) == []
    with pytest.raises(ValueError, match="11 tokens"):
        best_fit_decreasing(np.array([3, 11]), 10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_fit_decreasing_random_lengths(seed):
    rng = np.random.default_rng(seed)
    capacity = 256
    lengths = rng.integers(1, capacity + 1, size=700)
    bins = best_fit_decreasing(lengths, capacity)
    placed = [i for b in bins for i in b]
    assert sorted(placed) == list(range(len(lengths)))  # every index exactly once
    loads = [int(lengths[b].sum()) for b in bins]
    assert max(loads) <= capacity
    for j, b in enumerate(bins):
        assert list(lengths[b]) == sorted(lengths[b], reverse=True)  # longest first
        # A new bin is opened only when the item fits none of the earlier bins (which only fill up later).
        assert all(capacity - loads[i] < lengths[b[0]] for i in range(j))
    assert len(bins) >= -(-int(lengths.sum()) // capacity)


def test_best_subset_fills_the_room_exactly_when_it_can():
    assert sorted(best_subset({5: 1, 4: 2, 3: 1}, 11)) == [3, 4, 4]  # greedy largest-first would stop at 9
    assert best_subset({6: 3}, 10) == [6]  # at most one fits
    assert best_subset({7: 1}, 5) == []
    assert sorted(best_subset({2: 10, 3: 1}, 9)) == [2, 2, 2, 3]  # 9 = 3 + 2 + 2 + 2, not 8 = 4 x 2
    assert sorted(best_subset({100: 2, 99: 5, 97: 3}, 400)) == [99, 99, 100, 100]  # four fit, five never do


@pytest.mark.parametrize("low,high,capacity", [(80, 124, 512), (300, 601, 2048), (1, 257, 256), (700, 1101, 2048)])
def test_pack_lengths_is_a_valid_packing_never_worse_than_bfd(low, high, capacity):
    lengths = np.random.default_rng(low).integers(low, high, size=3000)
    bins = pack_lengths(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # every sample exactly once
    assert max(int(lengths[b].sum()) for b in bins) <= capacity
    bfd = best_fit_decreasing(lengths, capacity)
    assert len(bins) <= len(bfd)
    assert len(bins) >= -(-int(lengths.sum()) // capacity)


def test_pack_lengths_fills_blocks_where_bfd_leaves_gaps():
    # ~100-token samples in 512 blocks: BFD closes most blocks at four samples; the refill fits five.
    lengths = np.random.default_rng(0).integers(80, 124, size=2000)
    fill = lambda bins: lengths.sum() / (len(bins) * 512)  # noqa: E731
    assert fill(best_fit_decreasing(lengths, 512)) < 0.94
    assert fill(pack_lengths(lengths, 512)) > 0.97
    assert pack_lengths(lengths, 512, refill_below=0) == best_fit_decreasing(lengths, 512)


# --- packed loss == padded loss ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path(cfg, tokenizer):
    from llm_trainer.tiny_model import build_tiny_model

    return build_tiny_model(tokenizer, cfg.model, seed=0)


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request, model_path):
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32,
                                                  attn_implementation=request.param)
    return loaded.eval()


def _loss(model, batch) -> float:
    with torch.no_grad():
        return float(model(**batch, use_cache=False).loss)


def test_padding_free_loss_equals_padded_loss(model, tokenizer, unpacked):
    tokenized, _ = unpacked
    samples = [tokenized["train"][i] for i in range(6)]
    assert len({len(s["input_ids"]) for s in samples}) > 1  # padding really happens
    padded = PaddedCollator(tokenizer.pad_token_id)(samples)
    flat = PaddingFreeCollator()(samples)
    assert flat["input_ids"].shape == (1, sum(len(s["input_ids"]) for s in samples))
    # Same learned tokens: the packed collator only masks the first label of each sample, already -100.
    assert int((flat["labels"] != IGNORE_INDEX).sum()) == int((padded["labels"] != IGNORE_INDEX).sum())

    loss_padded, loss_packed = _loss(model, padded), _loss(model, flat)
    assert abs(loss_padded - loss_packed) < 1e-4

    # The check would catch attention across samples: one position run over the whole row ...
    no_restart = {**flat, "position_ids": torch.arange(flat["input_ids"].shape[1])[None]}
    assert abs(_loss(model, no_restart) - loss_padded) > 1e-3
    # ... and also correct positions with a plain (non block-diagonal) causal mask.
    full_mask = {**flat, "attention_mask": torch.ones_like(flat["input_ids"])}
    assert abs(_loss(model, full_mask) - loss_padded) > 1e-3


def test_packed_blocks_loss_equals_padded_loss(model, tokenizer, packed):
    """The collator training uses with SDPA/eager (blocks stacked, padded tails) against unpacked samples."""
    train = packed[0]["train"]
    first_of_length = {}
    for i, n in enumerate(train["length"]):
        first_of_length.setdefault(n, i)
    blocks = [train[i] for i in sorted(first_of_length.values())[:3]]
    assert len({b["length"] for b in blocks}) == 3  # the stacked blocks get padded tails
    samples = [{"input_ids": list(ids), "labels": list(labels)} for b in blocks for ids, labels in _segments(b)]
    assert len(samples) == sum(b["num_samples"] for b in blocks)
    loss_padded = _loss(model, PaddedCollator(tokenizer.pad_token_id)(samples))

    collator = collator_for(True, model.config._attn_implementation, tokenizer.pad_token_id)
    assert isinstance(collator, PackedBlockCollator)
    stacked = collator(blocks)
    assert abs(_loss(model, stacked) - loss_padded) < 1e-4
    assert abs(_loss(model, PaddingFreeCollator()(blocks)) - loss_padded) < 1e-4
    no_restart = {**stacked, "position_ids": torch.arange(stacked["input_ids"].shape[1]).repeat(len(blocks), 1)}
    assert abs(_loss(model, no_restart) - loss_padded) > 1e-3
