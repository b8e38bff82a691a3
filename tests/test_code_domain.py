"""The code domain: code is read out of model output, run against its tests in the sandbox (score_code), pass@k is
Chen et al.'s estimator, the processor keeps only problems whose reference passes its tests, the tests_pass reward
scores like the evaluator, and the quickstart runs end to end by config only."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SAMPLE = ROOT / "data" / "code_sample" / "code_sample.jsonl"


def _sandbox_missing() -> bool:
    from llm_trainer.code_sandbox import layers

    return any(layers().values())


# score_code runs in strict mode: on a machine without every sandbox layer it refuses (test_code_sandbox checks that).
needs_sandbox = pytest.mark.skipif(_sandbox_missing(), reason="this machine lacks a code sandbox layer")
TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]
GOOD = "def add(a, b):\n    return a + b"


# --- extraction ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, code", [
    (f"Here you go:\n```python\n{GOOD}\n```\nIt adds.", GOOD),
    (f"```py\n{GOOD}\n```", GOOD),
    (f"```\n{GOOD}\n```", GOOD),
    (f"```text\nnot code\n```\n```python\n{GOOD}\n```", GOOD),
    (f"```Python3\n{GOOD}\n```", GOOD),
    (f"```python\n{GOOD}", GOOD),  # an unclosed fence (the answer was cut)
    (f"Here is the function:\n{GOOD}\nThis returns the sum of a and b.", GOOD),
    (f"{GOOD}\n\nThe function adds two numbers.", GOOD),
    (f"import math\n\n{GOOD}\n\nprint(add(1, 2))\nThat prints 3.", f"import math\n\n{GOOD}\n\nprint(add(1, 2))"),
    (f"from math import sqrt\nclass A:\n    x = 1\nDone: it defines A.", "from math import sqrt\nclass A:\n    x = 1"),
    (f"<think>I could write ```python\nwrong()\n``` or def wrong(): pass</think>\n```python\n{GOOD}\n```", GOOD),
    (f"<think>def add(a, b): return 0</think>\n{GOOD}\nDone.", GOOD),
    (f"<think>```python\ndef add(a, b): return 0\n```", ""),  # an unclosed think block hides everything
    ("The answer is 5.", ""),
    ("", ""),
    (f"{GOOD}\nx = add(1, 2)  # three\nNote that x is 3.", f"{GOOD}\nx = add(1, 2)  # three"),
])
def test_code_is_extracted_from_fences_or_unfenced_text(text, code):
    from llm_trainer.evaluation.code import extract_code

    assert extract_code(text) == code


# --- scoring ------------------------------------------------------------------------------------------------

@needs_sandbox
def test_score_code_verdicts_and_reasons():
    from llm_trainer.evaluation.code import score_code

    cases = [
        (f"```python\n{GOOD}\n```", True, None),
        ("No code here, sorry.", False, "no_code"),
        ("```python\ndef add(a, b)\n    return a + b\n```", False, "syntax_error"),
        ("```python\ndef add(a, b):\n    return a - b\n```", False, "wrong_answer"),
        ("```python\ndef add(a, b):\n    while True:\n        pass\n```", False, "timeout"),
        ("```python\ndef add(a, b):\n    return len(bytearray(6 << 30))\n```", False, "memory"),
        ("```python\ndef add(a, b):\n    return a.nope\n```", False, "crashed"),
        ("```python\nimport os\nos.fork()\n```", False, "denied"),
        ("```python\nimport os\nos._exit(0)\n```", False, "crashed"),
    ]
    for generation, correct, error in cases:
        verdict = score_code(generation, TESTS, timeout_seconds=3)
        assert (verdict["correct"], verdict["error"]) == (correct, error), (generation, verdict)
    assert score_code("```python\ndef add(a, b):\n    return a + b + OFFSET\n```", "\n".join(TESTS),
                      setup="OFFSET = 0")["correct"]
    from llm_trainer.code_sandbox import CodeSandbox, Limits

    with CodeSandbox(Limits(timeout_seconds=3)).session() as session:  # the same verdicts, one server
        for generation, correct, error in cases:
            verdict = score_code(generation, TESTS, session=session)
            assert (verdict["correct"], verdict["error"]) == (correct, error), (generation, verdict)


def test_pass_at_k_is_the_unbiased_estimator():
    from llm_trainer.evaluation.code import pass_at_k

    def exact(n, c, k):
        return 1.0 - math.comb(n - c, k) / math.comb(n, k)

    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(exact(10, 3, 5)) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(10, 0, 10) == 0.0 and pass_at_k(10, 1, 10) == 1.0
    assert pass_at_k(200, 13, 100) == pytest.approx(exact(200, 13, 100), rel=1e-9)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_metrics_per_family_and_failures_by_reason():
    from llm_trainer.evaluation.code import aggregate_code

    right, wrong = {"correct": True, "error": None}, {"correct": False, "error": "wrong_answer"}
    timeout = {"correct": False, "error": "timeout"}
    samples = [[right, wrong, wrong, right], [wrong, wrong, timeout, wrong], [right] * 4]
    metrics = aggregate_code(samples, ["add constant", "add constant", "factorial"], [1, 2, 4])
    assert metrics["examples"] == 3 and metrics["samples_per_problem"] == 4
    assert metrics["pass_at_1"] == pytest.approx((0.5 + 0 + 1) / 3) == metrics["accuracy"]
    assert metrics["pass_at_2"] == pytest.approx((1 - 1 / 6 + 0 + 1) / 3)
    assert metrics["pass_at_4"] == pytest.approx(2 / 3)
    assert metrics["pass_at_1_task_add_constant"] == 0.25 == metrics["accuracy_task_add_constant"]
    assert metrics["count_task_add_constant"] == 2 and metrics["pass_at_4_task_factorial"] == 1.0
    assert metrics["error_wrong_answer"] == 5 and metrics["error_timeout"] == 1 and metrics["error_no_code"] == 0


def test_promotion_on_pass_at_1_and_pass_at_k_needs_samples():
    from llm_trainer.config import load_config
    from llm_trainer.errors import ConfigError

    for name in ("code.yaml", "code_quickstart.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.registry.promotion_metric == "pass_at_1" and cfg.evaluation.evaluator == "code"
        assert cfg.data.processor == "code" and cfg.evaluation.code_sandbox == "strict"
    cfg = load_config(ROOT / "configs" / "code.yaml")
    assert cfg.evaluation.code_pass_k == [1, 5, 10] and cfg.evaluation.code_samples == 10
    quick = ROOT / "configs" / "code_quickstart.yaml"
    assert load_config(quick, ["registry.promotion_metric=pass_at_1_task_first_item"])
    with pytest.raises(ConfigError, match="not a metric of the code evaluator"):
        load_config(quick, ["registry.promotion_metric=execution_accuracy"])
    with pytest.raises(ConfigError, match="not a metric of the code evaluator"):
        load_config(quick, ["registry.promotion_metric=pass_at_5"])  # code_pass_k is [1]
    assert load_config(quick, ["evaluation.code_samples=5", "evaluation.code_pass_k=[1, 5]",
                               "registry.promotion_metric=pass_at_5"])
    with pytest.raises(ConfigError, match="code_pass_k"):
        load_config(quick, ["evaluation.code_pass_k=[1, 5]"])  # 5 > code_samples (1)
    with pytest.raises(ConfigError, match="code_sandbox"):
        load_config(quick, ["evaluation.code_sandbox=none"])


# --- the processor --------------------------------------------------------------------------------------------

def mbpp(**fields):
    row = {"task_id": 1, "text": "Write a function add(a, b) that adds.", "code": GOOD, "test_list": TESTS,
           "test_setup_code": "", "challenge_test_list": []}
    return {**row, **fields}


def humaneval(**fields):
    row = {"task_id": "HumanEval/0", "prompt": 'def add(a, b):\n    """Add a and b."""\n',
           "canonical_solution": "    return a + b\n", "entry_point": "add",
           "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}
    return {**row, **fields}


@needs_sandbox
def test_processor_reads_both_shapes_and_drops_by_reason(make_config, write_jsonl, monkeypatch):
    from llm_trainer.data import build_processor, code

    monkeypatch.setattr(code, "REFERENCE_TIMEOUT_SECONDS", 2.0)
    from llm_trainer.evaluation.code import score_code, split_reference

    rows = [
        mbpp(),
        mbpp(text="Multiply?", code="def mul(a, b):\n    return a * b", test_list=["assert mul(2, 3) == 6"]),
        mbpp(text="Uses setup", code="def area(s):\n    return SIDE * s", test_list=["assert area(2) == 6"],
             test_setup_code="SIDE = 3"),
        mbpp(text="No tests", test_list=[]),
        mbpp(text="Wrong reference", code="def add(a, b):\n    return a - b"),
        mbpp(text="Reference loops", code="def add(a, b):\n    while True:\n        pass"),
        mbpp(text="Broken reference", code="def add(a, b) return"),
        mbpp(text="No reference", code=""),
        mbpp(text="Too long " + "x" * 3000),
        mbpp(text=""),
        humaneval(),
        humaneval(task_id="HumanEval/1", prompt='def sub(a, b):\n    """Subtract."""\n', entry_point="sub",
                  canonical_solution="    return a + b\n", test="def check(candidate):\n    assert candidate(3, 1) == 2\n"),
    ]
    cfg = make_config(data={"processor": "code", "source": str(write_jsonl(rows)), "max_chars": 2000,
                            "splits": {"train": 0.5, "validation": 0.0, "test": 0.5}})
    processor = build_processor(cfg.data)
    processed, report = processor.preprocess(processor.load())
    assert report["rows_kept"] == 4
    assert report["dropped"] == {"no_tests": 1, "reference_fails_tests": 4, "missing_reference_code": 1,
                                 "too_long": 1, "missing_question": 1}
    kept = {r["question"]: r for split in processed.values() for r in split}
    system, user, assistant = kept["Write a function add(a, b) that adds."]["messages"]
    assert system["role"] == "system" and "Python" in system["content"]
    assert user["content"] == "Write a function add(a, b) that adds.\nYour code should pass these tests:\n" + \
        "\n".join(TESTS)
    assert assistant["content"] == f"```python\n{GOOD}\n```"
    assert split_reference(kept["Uses setup"]["reference_answer"]) == ("assert area(2) == 6", "SIDE = 3")
    he = kept['def add(a, b):\n    """Add a and b."""']
    assert he["reference_code"] == 'def add(a, b):\n    """Add a and b."""\n    return a + b'
    assert he["messages"][1]["content"].startswith("Complete this Python function:\n```python\ndef add(a, b):")
    assert he["reference_answer"].endswith("check(add)")
    for row in kept.values():  # every kept target passes its own tests through score_code
        tests, setup = split_reference(row["reference_answer"])
        assert score_code(row["messages"][-1]["content"], tests, setup)["correct"], row["question"]


def test_shipped_sample_every_reference_passes_and_families_are_named(make_config):
    from llm_trainer.data import build_processor

    cfg = make_config(data={"processor": "code", "source": str(SAMPLE)})
    processor = build_processor(cfg.data)
    processed, report = processor.preprocess(processor.load())
    assert report["rows_read"] == report["rows_kept"] == 2000 and report["dropped"] == {}
    assert len(set(processed["test"]["task"])) == 12


def test_shipped_sample_is_what_the_generator_writes(tmp_path):
    out = tmp_path / "code_sample.jsonl"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_code_sample.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_bytes() == SAMPLE.read_bytes()


# --- the GRPO reward --------------------------------------------------------------------------------------------

@needs_sandbox
def test_tests_pass_reward_scores_like_the_evaluator(make_config):
    from llm_trainer.evaluation.code import join_reference
    from llm_trainer.registry import REWARDS

    cfg = make_config(evaluation={"code_timeout_seconds": 3.0})
    reward = REWARDS.resolve("tests_pass")(cfg)
    reference = "\n".join(TESTS)
    completions = [f"```python\n{GOOD}\n```", "def add(a, b):\n    return 0", "no code", "import os\nos._exit(0)",
                   "```python\ndef area(s):\n    return SIDE * s\n```"]
    references = [reference] * 4 + [join_reference("assert area(2) == 6", "SIDE = 3")]
    assert reward.score(completions, references, [10] * 5) == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert reward.timeout_seconds == 3.0 and reward.sandbox == "strict"


@needs_sandbox
def test_tests_pass_reward_through_grpo_settings(make_config):
    """As GRPO builds it: from the train spec, whose scoring carries the evaluation's sandbox settings."""
    from llm_trainer.training.rewards import build_rewards

    cfg = make_config(training={"trainer": "grpo", "grpo": {"rewards": {"tests_pass": 1.0}}},
                      evaluation={"code_timeout_seconds": 2.5, "code_memory_mb": 512})
    (function,), weights = build_rewards(cfg.train_spec())
    assert function.__name__ == "tests_pass" and weights == [1.0]
    assert (function.reward.timeout_seconds, function.reward.memory_mb) == (2.5, 512)
    values = function(prompts=[[]] * 2, completions=[[{"role": "assistant", "content": f"```python\n{GOOD}\n```"}],
                                                     "def add(a, b):\n    return 0"],
                      completion_ids=[[1], [1]], reference_answer=["\n".join(TESTS)] * 2)
    assert values == [1.0, 0.0] and function.errors == 0


# --- end to end, by config only ---------------------------------------------------------------------------------

@pytest.mark.slow
@needs_sandbox
def test_code_quickstart_full_pipeline(tmp_path):
    summary = tmp_path / "summary.json"
    small = ["data.max_samples=300", "training.max_steps=3", "training.eval_steps=3", "evaluation.max_samples=6",
             "evaluation.max_new_tokens=32", "model.tiny.pretrain_max_tokens=20000", "evaluation.code_samples=2",
             "evaluation.code_pass_k=[1, 2]",
             "registry.model_name=code-quickstart-test", f"output_dir={os.environ['LLM_TRAINER_HOME']}/outputs"]
    command = [sys.executable, "run_pipeline.py", "full", "--config", "configs/code_quickstart.yaml",
               "--summary", str(summary)] + [arg for item in small for arg in ("--set", item)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    steps = json.loads(summary.read_text())["steps"]
    assert steps["preprocess"]["rows_read"] == 300 and steps["preprocess"]["dropped"] == {}
    for name in ("evaluate_base", "evaluate_finetuned"):
        metrics = steps[name]  # two sampled answers per problem
        assert metrics["examples"] == 6 and metrics["samples_per_problem"] == 2
        assert 0 <= metrics["pass_at_1"] <= metrics["pass_at_2"] <= 1
        failures = sum(v for k, v in metrics.items() if k.startswith("error_"))
        assert failures == round(12 * (1 - metrics["pass_at_1"]))  # every failed answer has a reason
        assert sum(v for k, v in metrics.items() if k.startswith("count_task_")) == 6
    decision = steps["register_model"]
    assert decision["metric"] == "pass_at_1"
    assert decision["candidate"] == pytest.approx(steps["evaluate_finetuned"]["pass_at_1"])
