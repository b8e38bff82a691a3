"""The preference processor: the three pair shapes people's data comes in, drops counted by reason, the same chat
turns and prompt mask as SFT, and pairs over the token limits dropped (counted) before DPO."""

from __future__ import annotations

import json

import pytest

from llm_trainer.config import DataConfig
from llm_trainer.data import build_processor
from llm_trainer.errors import ConfigError, DataError

ALL_TRAIN = {"train": 1.0, "validation": 0.0, "test": 0.0}


def _process(write_jsonl, rows, **settings):
    path = write_jsonl([json.dumps(row) for row in rows])
    cfg = DataConfig(processor="preference", source=str(path), splits=ALL_TRAIN, system_prompt="Be brief.",
                     **settings)
    processor = build_processor(cfg)
    return processor.preprocess(processor.load())


def _turns(prompt, answer):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def test_text_pairs_with_bad_rows_dropped_by_reason(write_jsonl):
    rows = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"},
            {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Paris"},  # same_answers
            {"prompt": "Empty?", "chosen": "", "rejected": "no"},  # empty_answer
            {"prompt": "  ", "chosen": "a", "rejected": "b"},  # missing_prompt
            {"prompt": "Long?", "chosen": "x" * 5000, "rejected": "y"}]  # too_long (data.max_chars)
    processed, report = _process(write_jsonl, rows, max_chars=4000)
    assert report["format"] == "pairs_text" and report["format_detected"]
    assert report["rows_kept"] == 1
    assert report["dropped"] == {"same_answers": 1, "empty_answer": 1, "missing_prompt": 1, "too_long": 1}
    row = processed["train"][0]
    assert row["messages"] == [{"role": "system", "content": "Be brief."}, *_turns("2+2?", "4")]
    assert (row["chosen"], row["rejected"], row["reference_answer"]) == ("4", "5", "4")


def test_chat_pairs_in_the_ultrafeedback_shape(write_jsonl):
    rows = [{"prompt": "Hi?", "chosen": _turns("Hi?", "Hello!"), "rejected": _turns("Hi?", "Go away.")},
            {"prompt": "Hi?", "chosen": _turns("Other question", "a"), "rejected": _turns("Hi?", "b")},
            {"prompt": "Q", "chosen": [{"role": "user", "content": "Q"}], "rejected": _turns("Q", "b")},
            {"prompt": "Q2", "chosen": [{"role": "wizard", "content": "a"}], "rejected": _turns("Q2", "b")}]
    processed, report = _process(write_jsonl, rows)
    assert report["format"] == "pairs_chat"
    assert report["dropped"] == {"prompts_differ": 1, "malformed_pair": 2}  # no assistant answer; unknown role
    row = processed["train"][0]
    assert row["messages"][1:] == _turns("Hi?", "Hello!") and row["rejected"] == "Go away."


def test_conversation_pairs_whose_last_assistant_turn_differs(write_jsonl):
    context = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."},
               {"role": "user", "content": "Another?"}]
    rows = [{"chosen": [*context, {"role": "assistant", "content": "Blue."}],
             "rejected": [*context, {"role": "assistant", "content": "No."}]},
            {"chosen": [*context, {"role": "assistant", "content": "Blue."}],
             "rejected": [context[0], {"role": "assistant", "content": "No."}]},  # prompts_differ
            {"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}]
    processed, report = _process(write_jsonl, rows)
    assert report["format"] == "pairs_conversation"
    assert report["dropped"] == {"prompts_differ": 1, "missing_prompt": 1}
    row = processed["train"][0]
    assert row["messages"][1:] == [*context, {"role": "assistant", "content": "Blue."}]  # multi-turn prompt kept
    assert row["question"] == "Another?" and row["rejected"] == "No."


def test_shapes_and_processors_do_not_mix(write_jsonl):
    with pytest.raises(ConfigError, match="is a chat shape"):
        build_processor(DataConfig(processor="preference", source="x.jsonl", format="messages"))
    with pytest.raises(ConfigError, match="is a preference shape"):
        build_processor(DataConfig(processor="chat", source="x.jsonl", format="pairs_text"))
    with pytest.raises(DataError, match="needs 'chosen' and 'rejected' columns"):
        _process(write_jsonl, [{"prompt": "a", "answer": "b"}])
    with pytest.raises(DataError, match="no usable row"):
        _process(write_jsonl, [{"prompt": "a", "chosen": "b", "rejected": "b"}])


def test_pairs_over_the_token_limits_are_dropped_and_counted(write_jsonl, tiny_fp32):
    from llm_trainer.training.dpo import preference_rows, within_lengths

    tokenizer = tiny_fp32.tokenizer
    rows = [{"prompt": "What is two plus two?", "chosen": "four", "rejected": "five"},
            {"prompt": "word " * 300, "chosen": "a", "rejected": "b"},  # the prompt alone is too long
            {"prompt": "Short?", "chosen": "yes", "rejected": "no " * 300}]  # the longer answer is too long
    processed, _ = _process(write_jsonl, rows, max_chars=100_000)
    pairs = preference_rows(processed["train"])
    assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names) and "messages" not in pairs.column_names
    assert pairs[0]["chosen"][0]["role"] == "assistant" and pairs[0]["prompt"][-1]["role"] == "user"
    kept, dropped = within_lengths(pairs, tokenizer, max_prompt=200, max_length=260)
    assert (len(kept), dropped) == (1, 2)
    assert kept[0]["chosen"][0]["content"] == "four"
