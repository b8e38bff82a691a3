"""Reliability and security: huge rows, foreign schemas, safe loading defaults, concurrent runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def test_a_one_megabyte_question_is_dropped_and_counted(make_config, write_jsonl, sample_rows):
    from llm_trainer.data import build_processor

    huge = {"question": "x" * 1_000_000, "reference_answer": "1", "responses": []}
    path = write_jsonl([*sample_rows[:20], huge])
    processor = build_processor(make_config(data={"source": str(path)}).data)
    _, report = processor.preprocess(processor.load())
    assert report["dropped"] == {"too_long": 1} and report["rows_kept"] == 20


def test_parquet_with_a_different_schema_fails_with_one_line(make_config, tmp_path):
    import pandas as pd

    from llm_trainer.data import build_processor
    from llm_trainer.errors import DataError

    path = tmp_path / "other.parquet"
    pd.DataFrame({"prompt": ["What is 1 + 1?"] * 3, "completion": ["2"] * 3}).to_parquet(path)
    processor = build_processor(make_config(data={"source": str(path)}).data)
    with pytest.raises(DataError) as error:
        processor.preprocess(processor.load())
    assert "no usable row" in str(error.value) and "missing_question: 3" in str(error.value)


def test_trust_remote_code_is_off_unless_configured():
    from llm_trainer.config import load_config

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert load_config(path).model.trust_remote_code is False
    assert load_config(ROOT / "configs" / "quickstart.yaml", ["model.trust_remote_code=true"]).model.trust_remote_code


@pytest.mark.parametrize("trust", [False, True])
def test_trust_remote_code_reaches_every_from_pretrained_call(monkeypatch, make_config, trust):
    """The config's value, and only it, is what transformers is given for the tokenizer and the model."""
    import transformers

    from llm_trainer.errors import ConfigError
    from llm_trainer.modeling import load_model, load_tokenizer

    seen: list[tuple[str, object]] = []

    def fake_from_pretrained(kind):
        def load(name, **kwargs):
            seen.append((kind, kwargs.get("trust_remote_code", "missing")))
            raise OSError("stop here")
        return load

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_from_pretrained("tokenizer"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained("model"))
    cfg = make_config(model={"base_model": "some/model", "trust_remote_code": trust, "allow_cpu": True})
    for load in (load_tokenizer, load_model):
        with pytest.raises(ConfigError, match="stop here"):
            load("some/model", cfg.model)
    assert seen == [("tokenizer", trust), ("model", trust)]


def test_every_from_pretrained_call_in_the_source_passes_trust_remote_code():
    """Found by scanning, so a new call site cannot be forgotten (peft's adapter loader runs no remote code)."""
    import ast

    calls = []
    for folder in ("llm_trainer", "materializers", "steps", "publishing", "runner", "pipelines"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                    owner = ast.unparse(node.func.value)
                    calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", owner,
                                  any(k.arg == "trust_remote_code" for k in node.keywords)))
    assert len(calls) >= 5  # modeling (tokenizer, model, adapter), the tokenizer materializer, DDP workers
    missing = [(where, owner) for where, owner, passed in calls if not passed and owner != "PeftModel"]
    assert missing == []


@pytest.mark.parametrize("trust", [False, True])
def test_a_stored_tokenizer_reloads_with_the_configs_trust_remote_code(tiny_fp32, tmp_path, monkeypatch, trust):
    import transformers

    from materializers.hf_tokenizer import HFTokenizerMaterializer

    tokenizer = tiny_fp32.tokenizer
    monkeypatch.setattr(tokenizer, "llm_trainer_trust_remote_code", trust, raising=False)
    materializer = HFTokenizerMaterializer(str(tmp_path / "artifact"))
    (tmp_path / "artifact").mkdir()
    materializer.save(tokenizer)
    seen = []
    original = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda name, **kwargs: seen.append(kwargs.get("trust_remote_code")) or original(name))
    monkeypatch.setattr("materializers.hf_tokenizer.AutoTokenizer", transformers.AutoTokenizer)
    loaded = materializer.load(type(tokenizer))
    assert seen == [trust] and loaded.llm_trainer_trust_remote_code is trust
    assert loaded.get_vocab() == tokenizer.get_vocab()


def test_adapters_load_from_safetensors_only(tmp_path):
    """A pickle-based adapter_model.bin (which peft would load) is refused before anything is read."""
    import torch

    from llm_trainer.errors import UserError
    from llm_trainer.modeling import attach_adapter

    folder = tmp_path / "bin-adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    torch.save({}, folder / "adapter_model.bin")
    for path, found in ((folder, "adapter_config.json, adapter_model.bin"), (tmp_path / "nowhere", "no such folder")):
        with pytest.raises(UserError) as error:
            attach_adapter(torch.nn.Linear(2, 2), path)
        assert str(error.value) == (f"adapter: '{path}' holds no adapter_model.safetensors (found: {found}); "
                                    "adapters load from safetensors only")


def test_weights_load_from_safetensors_only(tmp_path, make_config):
    """A model folder with only a pickle-based pytorch_model.bin is refused, with one clear line."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm_trainer.errors import ConfigError
    from llm_trainer.modeling import load_model

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    folder = tmp_path / "bin-only"
    folder.mkdir()
    config.save_pretrained(folder)
    torch.save(LlamaForCausalLM(config).state_dict(), folder / "pytorch_model.bin")
    cfg = make_config(model={"base_model": str(folder), "load_in_4bit": False, "allow_cpu": True})
    with pytest.raises(ConfigError) as error:
        load_model(str(folder), cfg.model)
    assert str(error.value).startswith(f"model.base_model: cannot load '{folder}'")
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_two_runs_started_at_once_both_finish_and_are_recorded(tmp_path):
    home = tmp_path / "home"  # a fresh store, so both runs also race to set up the stack and MLflow
    env = {**os.environ, "LLM_TRAINER_HOME": str(home), "ZENML_CONFIG_PATH": str(home / "zenml")}
    runs = []
    for lr in ("1e-3", "2e-3"):
        summary = tmp_path / f"{lr}.json"
        command = [sys.executable, "run_pipeline.py", "train", "--config", "configs/quickstart.yaml",
                   "--set", f"output_dir={tmp_path / 'outputs'}", "--set", "training.max_steps=3", "--set", "training.logging_steps=1",
                   "--set", f"training.learning_rate={lr}",
                   "--set", "model.tiny.pretrain_epochs=1",  # each builds the base model in the fresh store
                   "--summary", str(summary)]
        runs.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True), summary))
    run_ids = []
    for process, summary in runs:
        _, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr[-3000:]
        data = json.loads(summary.read_text())
        assert data["status"] == "completed"
        run_ids.append(data["run_id"])

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    recorded = {r.data.tags.get("zenml_run_id"): r for r in client.search_runs([experiment.experiment_id])}
    for run_id in run_ids:
        assert run_id in recorded
        assert len(client.get_metric_history(recorded[run_id].info.run_id, "loss")) == 3
    listing = subprocess.run([sys.executable, "-c", "from zenml.client import Client; "
                              "print(sorted(str(r.id) for r in Client().list_pipeline_runs(size=50)))"],
                             cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert all(run_id in listing.stdout for run_id in run_ids)
