"""Generic chat data: three shapes read by one processor, malformed conversations dropped by reason, every
assistant turn trained on (and nothing else), held-out turns scored, and the quickstart end to end by config only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SAMPLE = ROOT / "data" / "chat_sample"
THREE_TURNS = [{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello friend"},
               {"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "It is 4."},
               {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "You are welcome."}]


def chat_config(make_config, source, **data):
    return make_config(data={"processor": "chat", "source": str(source), "system_prompt": "", **data},
                       evaluation={"evaluator": "chat"}, registry={"promotion_metric": "eval_loss"})


def process(cfg):
    from llm_trainer.data import build_processor

    processor = build_processor(cfg.data)
    return processor.preprocess(processor.load())


@pytest.mark.parametrize("shape", ["messages", "alpaca", "sharegpt"])
def test_auto_detects_each_shape_and_names_it(make_config, shape):
    processed, report = process(chat_config(make_config, SAMPLE / f"{shape}.jsonl"))
    assert report["format"] == shape and report["format_detected"] is True
    rows = [r for split in processed.values() for r in split]
    assert len(rows) == report["rows_kept"] > 50
    for row in rows:
        roles = [m["role"] for m in row["messages"] if m["role"] != "system"]
        assert roles[0] == "user" and roles[-1] == "assistant" and roles[::2] == ["user"] * len(roles[::2])
        assert row["reference_answer"] == row["messages"][-1]["content"]


def test_each_shape_becomes_the_same_messages(make_config, write_jsonl):
    rows = {
        "messages": {"messages": [{"role": "user", "content": "Q?\n\nctx"}, {"role": "assistant", "content": "A."}]},
        "alpaca": {"instruction": "Q?", "input": "ctx", "output": "A."},
        "sharegpt": {"conversations": [{"from": "human", "value": "Q?\n\nctx"}, {"from": "gpt", "value": "A."}]},
    }
    for shape, row in rows.items():
        cfg = chat_config(make_config, write_jsonl([row], f"{shape}.jsonl"), format=shape,
                          splits={"train": 1.0, "validation": 0.0, "test": 0.0})
        processed, report = process(cfg)
        assert report["format"] == shape and report["format_detected"] is False
        assert processed["train"][0]["messages"] == [{"role": "user", "content": "Q?\n\nctx"},
                                                     {"role": "assistant", "content": "A."}], shape


def test_malformed_conversations_are_dropped_and_counted_by_reason(make_config, write_jsonl):
    turn = lambda role, content: {"role": role, "content": content}  # noqa: E731
    rows = [
        {"messages": [turn("user", "ok?"), turn("assistant", "ok.")]},
        {"messages": [turn("user", "a"), turn("robot", "b")]},
        {"messages": [turn("user", "a"), turn("assistant", " ")]},
        {"messages": [turn("user", "only a question")]},
        {"messages": [turn("user", "a"), turn("user", "b"), turn("assistant", "c")]},
        {"messages": [turn("user", "a"), turn("assistant", "b"), turn("assistant", "c")]},
        {"messages": [turn("user", "a"), turn("system", "late"), turn("assistant", "c")]},
        {"messages": [turn("user", "x"), turn("assistant", "y"), turn("user", "trailing, no answer")]},
        {"messages": "not a list"},
    ]
    processed, report = process(chat_config(make_config, write_jsonl(rows), format="messages",
                                            splits={"train": 1.0, "validation": 0.0, "test": 0.0}))
    assert report["dropped"] == {"unknown_role": 1, "empty_content": 1, "no_assistant_turn": 1,
                                 "consecutive_user_turns": 1, "consecutive_assistant_turns": 1,
                                 "misplaced_system_turn": 1, "malformed_conversation": 1}
    assert [len(m) for m in processed["train"]["messages"]] == [2, 2]  # the trailing user turn is cut
    # A template that accepts consecutive turns: data.alternating_turns=false keeps them.
    _, relaxed = process(chat_config(make_config, write_jsonl(rows), format="messages", alternating_turns=False,
                                     splits={"train": 1.0, "validation": 0.0, "test": 0.0}))
    assert "consecutive_user_turns" not in relaxed["dropped"] and relaxed["rows_kept"] == 4
    # The shipped sample's malformed conversations: three of each kind.
    _, shipped = process(chat_config(make_config, SAMPLE / "messages.jsonl"))
    for reason in ("unknown_role", "empty_content", "no_assistant_turn", "consecutive_user_turns"):
        assert shipped["dropped"][reason] == 3, reason


def test_undetectable_shape_is_one_line(make_config, write_jsonl):
    from llm_trainer.errors import DataError

    with pytest.raises(DataError, match="cannot detect the data's shape: no chat columns among prompt, row_id"):
        process(chat_config(make_config, write_jsonl([{"prompt": "x"}])))
    both = write_jsonl([{"messages": [], "conversations": []}])
    with pytest.raises(DataError, match=r"several shapes \(messages, sharegpt\)"):
        process(chat_config(make_config, both))
    with pytest.raises(DataError, match="alpaca data needs the column"):
        process(chat_config(make_config, write_jsonl([{"messages": []}]), format="alpaca"))


def test_three_turn_conversation_trains_on_every_assistant_turn_only(tiny_fp32):
    from llm_trainer.data.conversations import tokenize_multiturn_batch

    tokenizer = tiny_fp32.tokenizer
    out = tokenize_multiturn_batch({"messages": [THREE_TURNS]}, tokenizer, 512, truncate=False)
    ids, labels = out["input_ids"][0], out["labels"][0]
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(THREE_TURNS, tokenize=False)
    # The label spans, in order: exactly each assistant reply and its end-of-turn token.
    spans, current = [], []
    for token, label in zip(ids, labels):
        if label == -100:
            if current:
                spans.append(tokenizer.decode(current))
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        spans.append(tokenizer.decode(current))
    assert spans == ["Hello friend<|eot_id|>", "It is 4.<|eot_id|>", "You are welcome.<|eot_id|>"]
    assert out["label_tokens"][0] == sum(label != -100 for label in labels)
    assert out["prompt_length"][0] == labels.index(next(label for label in labels if label != -100))
    # Truncated: the cut tokens are counted, the labels stay aligned.
    cut = tokenize_multiturn_batch({"messages": [THREE_TURNS]}, tokenizer, out["prompt_length"][0] + 3, True)
    assert cut["length"][0] == out["prompt_length"][0] + 3 and cut["cut_tokens"][0] == len(ids) - cut["length"][0]
    assert cut["labels"][0] == labels[: cut["length"][0]]


def test_single_turn_masking_matches_the_shared_tokenizer(tiny_fp32):
    from llm_trainer.data.conversations import tokenize_multiturn_batch
    from llm_trainer.data.tokenization import tokenize_batch

    conversations = [m for m in tiny_fp32.processed["train"]["messages"][:16]]
    batch = {"messages": conversations}
    assert tokenize_multiturn_batch(batch, tiny_fp32.tokenizer, 512, False) == tokenize_batch(
        batch, tiny_fp32.tokenizer, 512, False)


def test_evaluator_scores_the_held_out_last_turn(make_config, tiny_fp32):
    from llm_trainer.data import build_processor
    from llm_trainer.evaluation import build_evaluator

    cfg = chat_config(make_config, SAMPLE / "messages.jsonl")
    cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"max_samples": 6,
                                                                                "max_new_tokens": 8})})
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenized, _ = processor.tokenize(processed, tiny_fp32.tokenizer)
    result = build_evaluator(cfg).evaluate(tiny_fp32.model, tiny_fp32.tokenizer, processed["test"], tokenized["test"])
    metrics, examples = result.metrics, result.examples
    assert metrics["examples"] == len(examples) == 6
    assert metrics["token_f1"] == pytest.approx(sum(e["token_f1"] for e in examples) / 6)
    assert metrics["eval_loss"] > 0 and metrics["perplexity"] > 1
    test_labels = sum(sum(label != -100 for label in row["labels"]) for row in tokenized["test"])
    # Every assistant turn of the test split counts (less a block's first token, which nothing predicts).
    assert test_labels - len(tokenized["test"]) <= metrics["loss_tokens"] <= test_labels
    for example, messages in zip(examples, processed["test"]["messages"][:6]):
        assert example["reference"] == messages[-1]["content"] and example["turns_in_context"] == len(messages) - 1
    assert set(cfg.evaluation.metric_names()) >= set(metrics)


@pytest.mark.slow
def test_chat_quickstart_full_pipeline(tmp_path):
    summary = tmp_path / "summary.json"
    small = ["training.max_steps=3", "training.eval_steps=3", "evaluation.max_samples=4",
             "evaluation.max_new_tokens=16", "model.tiny.pretrain_max_tokens=20000",
             "registry.model_name=chat-quickstart-test", f"output_dir={os.environ['LLM_TRAINER_HOME']}/outputs"]
    command = [sys.executable, "run_pipeline.py", "full", "--config", "configs/chat_quickstart.yaml",
               "--summary", str(summary)] + [arg for item in small for arg in ("--set", item)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    steps = json.loads(summary.read_text())["steps"]
    report = steps["preprocess"]
    assert report["format"] == "messages" and report["dropped"]["unknown_role"] == 3
    for name in ("evaluate_base", "evaluate_finetuned"):
        assert steps[name]["examples"] == 4 and 0 <= steps[name]["token_f1"] <= 1
    base, tuned = steps["evaluate_base"], steps["evaluate_finetuned"]
    decision = steps["register_model"]
    assert decision["metric"] == "eval_loss" and decision["candidate"] == pytest.approx(tuned["eval_loss"])
    assert decision["promote"] == (tuned["eval_loss"] < base["eval_loss"])


def test_readme_add_your_own_domain_walkthrough_runs(tmp_path, monkeypatch, write_jsonl, tiny_fp32):
    """The README's walk-through code, as written there: a processor and an evaluator named by import path."""
    import re

    import yaml

    from llm_trainer.config import RunConfig
    from llm_trainer.data import build_processor
    from llm_trainer.evaluation import build_evaluator

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Add your own domain"):]
    code, config = re.findall(r"```(?:python|yaml)\n(.*?)```", section, re.DOTALL)[:2]
    (tmp_path / "my_domain.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = [{"prompt": f"What is {i} + 1?", "answer": f"{i + 1}"} for i in range(40)] + [{"prompt": "", "answer": "x"}]
    raw = yaml.safe_load(config)
    raw["data"].update(source=str(write_jsonl(rows)), splits={"train": 0.5, "validation": 0.0, "test": 0.5})
    raw["evaluation"].update(max_samples=3, max_new_tokens=4)
    cfg = RunConfig.model_validate({"name": "walkthrough", "model": {"base_model": "tiny-llama"}, **raw})
    assert "answer_f1" in cfg.evaluation.metric_names()
    processor = build_processor(cfg.data)
    processed, report = processor.preprocess(processor.load())
    assert report["dropped"] == {"empty_prompt_or_answer": 1} and report["rows_kept"] == 40
    tokenized, _ = processor.tokenize(processed, tiny_fp32.tokenizer)
    result = build_evaluator(cfg).evaluate(tiny_fp32.model, tiny_fp32.tokenizer, processed["test"], tokenized["test"])
    assert set(result.metrics) == set(cfg.evaluation.metric_names()) and len(result.examples) == 3
    with pytest.raises(ValueError, match="not a metric of the my_domain:QaEvaluator evaluator"):
        RunConfig.model_validate({**cfg.model_dump(), "registry": {"promotion_metric": "accuracy"}})


def test_a_file_that_mixes_shapes_counts_the_other_shapes_and_says_so(make_config, write_jsonl, caplog):
    """30 rows of each shape in one file: with data.format set, the other shapes' 60 rows are other_format (not
    malformed), and one warning names how many rows each other shape has."""
    rows = []
    for i in range(30):
        rows += [{"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"A{i}."}]},
                 {"instruction": f"I{i}?", "output": f"O{i}."},
                 {"conversations": [{"from": "human", "value": f"S{i}?"}, {"from": "gpt", "value": f"T{i}."}]}]
    rows.append({"messages": "not a list"})
    source = write_jsonl(rows, "mixed.jsonl")
    with pytest.raises(Exception, match="several shapes"):
        process(chat_config(make_config, source))
    processed, report = process(chat_config(make_config, source, format="messages"))
    assert report["rows_kept"] == 30
    assert report["dropped"] == {"other_format": 60, "malformed_conversation": 1}
    assert len(report["warnings"]) == 1
    assert "60 rows are in another chat shape than messages (alpaca: 30, sharegpt: 30)" in report["warnings"][0]
    assert report["warnings"][0] in caplog.text
    _, alpaca = process(chat_config(make_config, source, format="alpaca"))
    assert alpaca["rows_kept"] == 30 and alpaca["dropped"] == {"other_format": 61}


def test_a_single_shape_file_has_no_other_format_warning(make_config):
    _, report = process(chat_config(make_config, SAMPLE / "messages.jsonl", format="messages"))
    assert "other_format" not in report["dropped"] and "warnings" not in report
