"""lm-eval benchmarks, offline: a local task on the tiny model (plain and with a LoRA adapter) scores what a
hand check of the same prompts gives; Hub tasks without the Hub and unknown names fail in one line."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT

TASK_DIR = ROOT / "tests" / "fixtures" / "lm_eval_task"
ROWS = [json.loads(line) for line in (TASK_DIR / "tiny_arith.jsonl").read_text().splitlines()]
KEYS = {"benchmark.tiny_arith.exact_match_strict-match", "benchmark.tiny_arith.exact_match_first-number"}
SAMPLES = "benchmark.tiny_arith.samples"


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_fp32):
    return tiny_fp32.model, tiny_fp32.tokenizer


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The fixture task with the absolute path of its data: lm-eval resolves data_files against the cwd."""
    target = tmp_path_factory.mktemp("lm_eval_task")
    shutil.copy(TASK_DIR / "tiny_arith.jsonl", target)
    yaml_text = (TASK_DIR / "tiny_arith.yaml").read_text()
    (target / "tiny_arith.yaml").write_text(
        yaml_text.replace("tests/fixtures/lm_eval_task/tiny_arith.jsonl", str(target / "tiny_arith.jsonl")))
    return target


def prompt(row: dict) -> str:
    return f"Question: What is {row['question']}?\nAnswer:"


@contextlib.contextmanager
def always_says(model, tokenizer, text: str):
    """Greedy decoding picks the single token ``text`` after any prompt."""
    token = tokenizer.convert_tokens_to_ids(text)
    assert tokenizer.decode([token]) == text

    def boost(module, inputs, logits):
        logits[..., token] += 1e4
        return logits

    handle = model.get_output_embeddings().register_forward_hook(boost)
    try:
        yield
    finally:
        handle.remove()


def hand_scores(model, tokenizer, rows: list[dict]) -> dict[str, float]:
    """The task's two scores by hand: one greedy token per prompt, cut at the task's `until`, compared as it
    is (strict-match) and as its first number (first-number), ignoring case."""
    strict = number = 0
    with torch.no_grad():
        for row in rows:
            ids = tokenizer(prompt(row), return_tensors="pt").input_ids
            token = model(input_ids=ids).logits[0, -1].argmax().item()
            answer = tokenizer.decode([token], skip_special_tokens=True).split("\n")[0]
            strict += answer.lower() == row["answer"].lower()
            number += (re.findall(r"-?[0-9]+", answer) or ["[invalid]"])[0] == row["answer"]
    return {"benchmark.tiny_arith.exact_match_strict-match": strict / len(rows),
            "benchmark.tiny_arith.exact_match_first-number": number / len(rows)}


def test_local_task_scores_match_a_hand_check(model_and_tokenizer, task_dir):
    from llm_trainer.evaluation.benchmarks import run_benchmarks

    model, tokenizer = model_and_tokenizer
    scores = run_benchmarks(model, tokenizer, ["tiny_arith"], include_path=task_dir, max_new_tokens=1)
    assert scores.pop(SAMPLES) == len(ROWS)
    assert set(scores) == KEYS
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert scores == pytest.approx(hand_scores(model, tokenizer, ROWS))

    with always_says(model, tokenizer, "7"):
        assert hand_scores(model, tokenizer, ROWS) == {key: 3 / 8 for key in KEYS}
        full = run_benchmarks(model, tokenizer, ["tiny_arith"], include_path=task_dir, max_new_tokens=1)
        first_two = run_benchmarks(model, tokenizer, ["tiny_arith"], include_path=task_dir, limit=2,
                                   max_new_tokens=1)
        first_five = run_benchmarks(model, tokenizer, ["tiny_arith"], include_path=task_dir, limit=5,
                                    batch_size=2, max_new_tokens=1)
    assert full == {SAMPLES: 8} | {key: 3 / 8 for key in KEYS}
    assert first_two == {SAMPLES: 2} | {key: 0.0 for key in KEYS}
    assert first_five == {SAMPLES: 5} | {key: 2 / 5 for key in KEYS}
    assert not model.training


def test_peft_model_runs_through_its_adapter(model_and_tokenizer, task_dir):
    from peft import LoraConfig, get_peft_model

    from llm_trainer.evaluation.benchmarks import run_benchmarks

    base, tokenizer = model_and_tokenizer
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    peft_model.train()
    calls = []
    lora_module = next(m for name, m in peft_model.named_modules() if name.endswith("q_proj.lora_A.default"))
    lora_module.register_forward_hook(lambda *_: calls.append(1))
    with always_says(peft_model, tokenizer, "7"):
        scores = run_benchmarks(peft_model, tokenizer, ["tiny_arith"], include_path=task_dir, max_new_tokens=1)
    assert scores == {SAMPLES: 8} | {key: 3 / 8 for key in KEYS}
    assert calls
    assert peft_model.training


def test_hub_task_offline_fails_in_one_line(model_and_tokenizer):
    from llm_trainer.errors import UserError
    from llm_trainer.evaluation.benchmarks import BenchmarkError, run_benchmarks

    model, tokenizer = model_and_tokenizer
    with pytest.raises(BenchmarkError) as caught:
        run_benchmarks(model, tokenizer, ["gsm8k"], limit=2)
    message = str(caught.value)
    assert "\n" not in message and "'gsm8k'" in message and "data set" in message
    assert isinstance(caught.value, UserError)

    with pytest.raises(BenchmarkError) as caught:
        run_benchmarks(model, tokenizer, ["no_such_benchmark"])
    message = str(caught.value)
    assert "\n" not in message and "'no_such_benchmark'" in message and "not a known lm-eval task" in message


def test_unreachable_hub_fails_fast_without_offline_mode(model_and_tokenizer, monkeypatch):
    """Offline mode off, Hub unreachable: offline mode is switched on for the load, then restored."""
    import datasets.config
    from huggingface_hub import constants

    from llm_trainer.evaluation.benchmarks import BenchmarkError, run_benchmarks

    model, tokenizer = model_and_tokenizer
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    for module, flag in [(constants, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"),
                         (datasets.config, "HF_DATASETS_OFFLINE")]:
        monkeypatch.setattr(module, flag, False)
    start = time.monotonic()
    with pytest.raises(BenchmarkError, match="'gsm8k' could not load its data set"):
        run_benchmarks(model, tokenizer, ["gsm8k"])
    assert time.monotonic() - start < 10
    assert not constants.HF_HUB_OFFLINE and not datasets.config.HF_HUB_OFFLINE


def test_evaluate_step_runs_the_configured_benchmarks_on_the_same_model(tiny_fp32, task_dir, monkeypatch):
    """``evaluation.benchmarks`` adds lm-eval's metrics to the evaluator's own, for the model it was given."""
    from llm_trainer.evaluation import build_evaluator
    from llm_trainer.evaluation.reasoning import ReasoningEvaluator

    evaluation = tiny_fp32.cfg.evaluation.model_copy(update={
        "benchmarks": ["tiny_arith"], "benchmark_include_path": str(task_dir), "benchmark_limit": 3,
        "max_samples": 2, "max_new_tokens": 1})
    cfg = tiny_fp32.cfg.model_copy(update={"evaluation": evaluation})
    monkeypatch.setattr(ReasoningEvaluator, "loss_metrics", lambda *args: {})
    with always_says(tiny_fp32.model, tiny_fp32.tokenizer, "7"):
        metrics = build_evaluator(cfg).evaluate(tiny_fp32.model, tiny_fp32.tokenizer,
                                                tiny_fp32.processed["test"], None).metrics
    sevens = sum(row["answer"] == "7" for row in ROWS[:3])
    assert metrics[SAMPLES] == 3 and metrics["examples"] == 2
    assert metrics["benchmark.tiny_arith.exact_match_strict-match"] == pytest.approx(sevens / 3)
