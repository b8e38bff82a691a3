"""Config validation: every shipped YAML is valid; every bad config is one line naming the key path."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from llm_trainer.config import load_config
from llm_trainer.errors import ConfigError
from llm_trainer.registry import PROCESSORS, Registry

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


# Overlays (stacks/, cards/) are validated merged onto reasoning.yaml (test_operations, test_gpu_readiness).
@pytest.mark.parametrize("path", [p for p in CONFIGS if not {"stacks", "cards"} & set(p.parts)], ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.data.splits.train + cfg.data.splits.validation + cfg.data.splits.test == pytest.approx(1.0)


def test_reasoning_config_is_llama3_8b_qlora_on_natural_reasoning():
    cfg = load_config(ROOT / "configs" / "reasoning.yaml")
    assert cfg.model.base_model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert cfg.data.source == "facebook/natural_reasoning"
    assert (cfg.model.load_in_4bit, cfg.model.bnb_4bit_quant_type, cfg.model.bnb_4bit_use_double_quant) == (
        True, "nf4", True)
    assert cfg.data.max_seq_length == 2048
    assert cfg.model.trust_remote_code is False


def test_quickstart_config_is_offline():
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    assert cfg.model.is_tiny
    assert (ROOT / cfg.data.source).is_file()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.max_samples=-5", "data.max_samples: Input should be greater than 0"),
        ("data.max_samples=0", "data.max_samples: Input should be greater than 0"),
        ("data.bogus=1", "data.bogus: unknown key"),
        ("bogus_section.x=1", "bogus_section: unknown key"),
        ("training.learning_rate=fast", "training.learning_rate: Input should be a valid number"),
        ("data.splits.train=0.5", "data.splits: train + validation + test must sum to 1 (got 0.6)"),
        ("data.processor=nope", "data.processor: unknown name 'nope'; known: chat, code, preference, reasoning, sql"),
        ("training.trainer=nope", "training.trainer: unknown name 'nope'; known: dpo, grpo, qlora"),
        ("evaluation.evaluator=nope", "evaluation.evaluator: unknown name 'nope'; known: chat, code, reasoning, sql"),
        ("model.base_model=./no/such/model", "model.base_model: local path './no/such/model' does not exist"),
        ("data.final_answer_template=Answer", "data.final_answer_template: must contain '{answer}'"),
        ("data.target=everything", "data.target: Input should be"),
        ("model.tiny.hidden_size=65", "model.tiny: hidden_size must be divisible by num_attention_heads"),
        ("data.max_seq_length=8", "data.max_seq_length: Input should be greater than or equal to 16"),
    ],
)
def test_bad_values_name_the_key_path(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(ROOT / "configs" / "quickstart.yaml", [override])
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_overrides_are_typed_and_nested():
    cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                      ["training.learning_rate=1e-4", "data.max_samples=100", "data.packing=false",
                       "lora.target_modules=[q_proj, v_proj]", "data.splits.train=0.8", "data.splits.test=0.15"])
    assert cfg.training.learning_rate == pytest.approx(1e-4)
    assert cfg.data.max_samples == 100 and cfg.data.packing is False
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.splits.train == 0.8


def test_malformed_override_and_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(ROOT / "configs" / "quickstart.yaml", ["data.max_samples"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_registry_accepts_import_paths_and_registered_classes():
    registry = Registry("data.processor", {"reasoning": "llm_trainer.data.reasoning:ReasoningDataProcessor"})
    assert registry.check("my_pkg.module:MyProcessor") == "my_pkg.module:MyProcessor"
    from llm_trainer.data.reasoning import ReasoningDataProcessor

    assert registry.resolve("reasoning") is ReasoningDataProcessor
    registry.register("again", ReasoningDataProcessor)
    assert registry.resolve("again") is ReasoningDataProcessor
    with pytest.raises(ConfigError, match="cannot import"):
        registry.resolve("no_such_module_xyz:Thing")
    assert "reasoning" in PROCESSORS.names()


def test_library_never_imports_zenml_mlflow_or_the_layers_above_it():
    above = {"zenml", "mlflow", "steps", "pipelines", "runner", "publishing", "materializers", "run_pipeline",
             "bench"}
    offenders = []
    for path in (ROOT / "llm_trainer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in above]
    assert offenders == []


def test_training_and_evaluation_read_only_their_sections(make_config):
    """The train step's input is a TrainSpec and the evaluate steps' an EvalSpec: settings they do not read are
    not in them, so that changing those re-runs neither (and the run folder, keyed by the spec, stays put)."""
    from llm_trainer.training import run_folder

    cfg = make_config()
    assert set(cfg.train_spec().model_dump()) == {"name", "seed", "output_dir", "data", "model", "lora", "training", "scoring"}
    assert set(cfg.eval_spec().model_dump()) == {"name", "seed", "data", "model", "evaluation"}
    folder = run_folder(cfg.train_spec(), "fingerprint")
    other_eval = make_config(evaluation={"max_samples": 3}, registry={"promotion_margin": 0.5},
                             zenml={"tags": ["x"]})
    assert run_folder(other_eval.train_spec(), "fingerprint") == folder
    assert other_eval.train_spec() == cfg.train_spec() and other_eval.eval_spec() != cfg.eval_spec()
    assert run_folder(make_config(training={"learning_rate": 1e-3}).train_spec(), "fingerprint") != folder
    assert run_folder(cfg.train_spec(), "other data") != folder
    assert folder.parent == Path(cfg.output_dir) / cfg.name


def test_config_validation_does_not_import_torch():
    code = ("import sys; from llm_trainer.config import load_config; load_config('configs/reasoning.yaml'); "
            "print(sorted(m for m in ('torch', 'transformers', 'zenml', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_bad_config_is_one_line_exit_2(tmp_path):
    for extra in (["--set", "data.bogus=1"], ["--set", f"data.source={tmp_path / 'missing.jsonl'}"]):
        result = subprocess.run([sys.executable, "run_pipeline.py", "process", "--config", "configs/quickstart.yaml",
                                 *extra], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error: ")
    debug = subprocess.run([sys.executable, "run_pipeline.py", "process", "--config", "configs/quickstart.yaml",
                            "--set", "data.bogus=1", "--debug"], cwd=ROOT, capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_promotion_metric_is_checked_before_any_run():
    with pytest.raises(ConfigError, match="registry.promotion_metric: 'bleu' is not a metric of the reasoning"):
        load_config(ROOT / "configs" / "quickstart.yaml", ["registry.promotion_metric=bleu"])


@pytest.mark.parametrize("metric", ["accuracy", "accuracy_short", "accuracy_single_word", "rouge_l_long",
                                    "token_f1_long", "extraction_failed", "eval_loss", "math_match"])
def test_every_metric_the_evaluator_produces_can_gate_promotion(metric):
    assert load_config(ROOT / "configs" / "quickstart.yaml", [f"registry.promotion_metric={metric}"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["registry.promotion_metric=accuracy_long"], "'accuracy_long' is not a metric of the reasoning evaluator"),
     (["registry.promotion_metric=judge_agreement"], "'judge_agreement' is not a metric"),
     (["registry.promotion_metric=benchmark.gsm8k.exact_match_strict-match"],
      "needs 'gsm8k' in evaluation.benchmarks (have: none)")],
)
def test_metrics_that_are_never_produced_fail_before_anything_runs(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ROOT / "configs" / "quickstart.yaml", overrides)


def test_judge_and_benchmark_metrics_exist_once_configured():
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [
        "evaluation.judge={model: tiny-llama}", "registry.promotion_metric=judge_accuracy_long"])
    assert cfg.evaluation.judge.model == "tiny-llama" and cfg.evaluation.judge.load_in_4bit is True
    cfg = load_config(ROOT / "configs" / "reasoning.yaml", ["registry.promotion_metric=benchmark.gsm8k.exact_match"])
    assert cfg.evaluation.benchmarks == ["gsm8k"]


def test_evaluated_prompt_asks_for_the_final_answer_line():
    for name in ("quickstart.yaml", "reasoning.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        prefix = cfg.data.final_answer_template.split("{answer}")[0].strip()
        assert prefix in cfg.data.system_prompt, name
