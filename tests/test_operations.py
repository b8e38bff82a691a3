"""Remote-stack settings reach the compiled pipeline; schedules fail clearly where they cannot run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from llm_trainer.config import load_config
from llm_trainer.errors import UserError

REASONING = ROOT / "configs" / "reasoning.yaml"
STACKS = sorted((ROOT / "configs" / "stacks").glob("*.yaml"))


def _settings(value):
    return value.model_dump(exclude_none=True) if hasattr(value, "model_dump") else dict(value)


@pytest.mark.parametrize("overlay", STACKS, ids=lambda p: p.name)
def test_every_stack_overlay_validates_on_the_reasoning_config(overlay):
    cfg = load_config([REASONING, overlay])
    assert cfg.model.base_model == "meta-llama/Meta-Llama-3-8B-Instruct"  # the overlay changes only zenml:
    assert cfg.zenml.stack and cfg.zenml.docker and cfg.zenml.docker.parent_image
    assert cfg.zenml.resources.train.gpu_count == 1 and cfg.zenml.resources.evaluate.gpu_count == 1


def test_overlays_merge_key_by_key_and_overrides_come_last():
    cfg = load_config([REASONING, STACKS[0]], ["zenml.resources.train.gpu_count=4"])
    assert cfg.zenml.resources.train.gpu_count == 4
    assert cfg.zenml.resources.evaluate.gpu_count == 1
    assert cfg.training.learning_rate == load_config(REASONING).training.learning_rate


@pytest.fixture
def hf_secret():
    """The ZenML secret the stack overlays name (in this session's temporary store)."""
    from zenml.client import Client

    client = Client()
    try:
        client.get_secret("hf", allow_partial_name_match=False)
    except KeyError:
        client.create_secret("hf", values={"HF_TOKEN": "hf_storedInTheSecretStoreOnly0123"})
    yield
    client.delete_secret("hf")


def test_resources_and_docker_settings_reach_the_compiled_pipeline(hf_secret):
    from runner.run import configure_run

    cfg = load_config([REASONING, ROOT / "configs" / "stacks" / "kubernetes.yaml"],
                      ["zenml.stack=null", "zenml.resources.evaluate.memory=16GB"])
    configured, params = configure_run("full", cfg)
    configured.prepare(**params)
    snapshot = configured.create_snapshot(name="settings-check")
    steps = snapshot.step_configurations
    train = _settings(steps["train_model"].config.settings["resources"])
    assert (train["gpu_count"], train["cpu_count"], train["memory"]) == (1, 8, "64GB")
    for name in ("evaluate_base", "evaluate_finetuned"):
        assert _settings(steps[name].config.settings["resources"])["memory"] == "16GB"
    assert "resources" not in steps["load_data"].config.settings
    docker = _settings(snapshot.pipeline_configuration.settings["docker"])
    assert docker["parent_image"].startswith("pytorch/pytorch:2.13.0-cuda")  # torch 2.13 with CUDA in the image
    assert docker["requirements"] == "requirements-runtime.txt"  # so the build does not install torch again
    runtime = (ROOT / "requirements-runtime.txt").read_text()
    assert "torch==" not in runtime and "pytest" not in runtime and "transformers==" in runtime
    assert docker["environment"] == {"HF_HUB_ENABLE_HF_TRANSFER": "0"}


def test_a_missing_secret_is_one_line_before_anything_runs():
    from llm_trainer.errors import UserError
    from runner.run import configure_run

    cfg = load_config([REASONING, ROOT / "configs" / "stacks" / "kubernetes.yaml"], ["zenml.stack=null"])
    with pytest.raises(UserError, match=r"zenml.secrets: there is no ZenML secret 'hf' in this store; create it"):
        configure_run("full", cfg)


def test_the_hub_token_reaches_remote_steps_as_a_secret_reference_never_as_its_value(monkeypatch, hf_secret):
    from runner.run import configure_run

    token = "hf_neverInTheSnapshot0123456789"
    monkeypatch.setenv("HF_TOKEN", token)
    cfg = load_config([REASONING, ROOT / "configs" / "stacks" / "kubernetes.yaml"], ["zenml.stack=null"])
    assert cfg.zenml.secrets == ["hf"]
    configured, params = configure_run("full", cfg)
    configured.prepare(**params)
    snapshot = configured.create_snapshot(name="secret-check")
    from zenml.client import Client

    secret_id = Client().get_secret("hf").id  # ZenML stores the reference (the secret's id), not the value
    assert [str(s) for s in snapshot.pipeline_configuration.secrets] == [str(secret_id)]
    assert all(str(secret_id) in map(str, step.config.secrets) for step in snapshot.step_configurations.values())
    assert token not in snapshot.model_dump_json()


def test_step_operator_goes_to_the_gpu_steps_and_must_exist_in_the_stack(hf_secret):
    from runner.options import step_options
    from runner.run import configure_run

    cfg = load_config([REASONING, ROOT / "configs" / "stacks" / "vertex.yaml"], ["zenml.stack=null"])
    options = step_options(cfg, "full")
    assert {name: o["step_operator"] for name, o in options.items()} == {
        "train_model": "vertex_gpu", "evaluate_base": "vertex_gpu", "evaluate_finetuned": "vertex_gpu"}
    assert step_options(cfg, "process") == {}
    with pytest.raises(UserError) as error:
        configure_run("train", cfg)
    assert "zenml.step_operator: 'vertex_gpu' is not in stack" in str(error.value)


def test_unknown_stack_is_one_line(monkeypatch):
    from runner.run import configure_run

    monkeypatch.delenv("ZENML_ACTIVE_STACK_ID", raising=False)  # restored (or removed) even if the test fails
    cfg = load_config([REASONING, ROOT / "configs" / "stacks" / "vertex.yaml"])
    with pytest.raises(UserError, match="zenml.stack: no ZenML stack named 'llm_trainer_vertex'"):
        configure_run("train", cfg)


@pytest.mark.parametrize("cron", ["every monday", "0 3 * *", "0 3 * * 1 extra", "0 3 * * ?"])
def test_bad_cron_is_one_line(cron):
    from runner.options import parse_schedule

    with pytest.raises(UserError, match="expected a cron expression of five fields"):
        parse_schedule(cron, "x")
    assert parse_schedule("0 3 * * 1", "weekly").cron_expression == "0 3 * * 1"


def test_schedule_on_the_local_orchestrator_fails_before_running_anything():
    def runs() -> int:
        listing = subprocess.run([sys.executable, "-c", "from zenml.client import Client; "
                                  "print(Client().list_pipeline_runs(size=1).total)"],
                                 cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, check=True)
        return int(listing.stdout.strip().splitlines()[-1])

    before = runs()
    result = subprocess.run([sys.executable, "run_pipeline.py", "train", "--config", "configs/quickstart.yaml",
                             "--schedule", "0 3 * * 1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cannot run schedules" in lines[0] and "configs/stacks/" in lines[0]
    assert "Traceback" not in result.stderr
    assert runs() == before
