"""Accuracy per task family: the optional ``task`` column travels from the source rows to the test split, the
evaluator groups by it, the reports and the config validator know the names."""

from __future__ import annotations

import pytest


def _row(question: str, answer: str, task=None) -> dict:
    row = {"question": question, "reference_answer": answer,
           "responses": [{"response_model": "m", "response": f"It is {answer}."}]}
    if task is not None:
        row["task"] = task
    return row


@pytest.mark.parametrize("max_samples", [None, 45])
def test_the_task_column_reaches_every_split_by_row(make_config, write_jsonl, max_samples):
    from llm_trainer.data import build_processor

    rows = [_row(f"What is {i} plus one?", str(i + 1), f"family {i % 3}") for i in range(60)]
    rows[5]["task"] = None
    rows.insert(8, rows[7])  # a duplicate is dropped; the kept rows keep their own family
    cfg = make_config(data={"source": str(write_jsonl(rows)), "max_samples": max_samples,
                            "splits": {"train": 0.5, "validation": 0.2, "test": 0.3}}).data
    processor = build_processor(cfg)
    processed, report = processor.preprocess(processor.load())
    assert report["rows_kept"] == (max_samples or 61) - 1
    seen = 0
    for split in processed.values():
        for row_id, question, task in zip(split["row_id"], split["question"], split["task"]):
            number = int(question.split()[2])
            assert row_id == number + 1 + (number > 7)  # the line number
            assert task == ("" if number == 5 else f"family {number % 3}")
            seen += 1
    assert seen == report["rows_kept"] and len(processed["test"]) > 0


def test_without_a_task_column_there_is_none(make_config, write_jsonl):
    from llm_trainer.data import build_processor

    cfg = make_config(data={"source": str(write_jsonl([_row(f"Q {i}?", str(i)) for i in range(20)]))}).data
    processor = build_processor(cfg)
    processed, _ = processor.preprocess(processor.load())
    assert all("task" not in split.column_names for split in processed.values())


def _example(task: str, answer_type: str, correct) -> dict:
    return {"task": task, "answer_type": answer_type, "correct": correct}


def test_per_task_metrics_count_verifiable_rows_of_named_families():
    from llm_trainer.evaluation.reasoning import per_task_metrics

    examples = [_example("Digit sum", "single_word", True), _example("Digit sum", "single_word", False),
                _example("Digit sum", "none", None), _example("Digit sum", "short", True),
                _example("last-word", "single_word", False), _example("", "single_word", True),
                _example("essay", "long", None)]
    metrics = per_task_metrics(examples)
    assert metrics == {"accuracy_task_digit_sum": pytest.approx(2 / 3), "count_task_digit_sum": 3,
                       "accuracy_task_last_word": 0.0, "count_task_last_word": 1}
    assert per_task_metrics([_example("", "single_word", True)]) == {}


def test_reports_show_accuracy_by_task_only_when_there_are_families():
    from llm_trainer.evaluation.report import evaluation_html, per_task_table, per_task_text, promotion_html

    base = {"accuracy_task_digit_sum": 0.1, "count_task_digit_sum": 20, "accuracy_task_speed": 0.0,
            "count_task_speed": 7}
    tuned = {"accuracy_task_digit_sum": 0.85, "count_task_digit_sum": 20, "accuracy_task_speed": 0.0,
             "count_task_speed": 7}
    lines = per_task_text({"base": base, "fine-tuned": tuned})
    assert lines[0].split() == ["task", "count", "base", "fine-tuned"]
    assert lines[1].split() == ["digit_sum", "20", "10.0%", "85.0%"]
    assert lines[2].split() == ["speed", "7", "0.0%", "0.0%"]
    html = per_task_table({"base": base, "fine-tuned": tuned})
    assert "Accuracy by task family" in html and "<th>digit_sum</th><td>0.1 <small>(n=20)</small></td>" in html
    assert "0.85" in promotion_html({"promote": True, "reason": "r"}, {"base": base, "fine-tuned": tuned})
    assert "Accuracy by task family" in evaluation_html("t", tuned, [])
    assert per_task_text({"base": {"accuracy": 0.5}}) == [] and per_task_table({"base": {}}) == ""
    assert "Accuracy by task family" not in evaluation_html("t", {"accuracy": 0.5}, [])


def test_promotion_may_use_a_task_family_accuracy(make_config):
    from llm_trainer.errors import ConfigError

    assert make_config(registry={"promotion_metric": "accuracy_task_digit_sum"}).registry.promotion_metric
    with pytest.raises((ValueError, ConfigError), match="accuracy_task_<family>"):
        make_config(registry={"promotion_metric": "accuracy_task_Digit Sum"})
