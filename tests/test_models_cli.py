"""`run_pipeline.py models`: list a model's versions, promote and roll back by hand, in ZenML and the MLflow alias
together. The versions are made directly in this session's temporary stores (no pipeline run needed)."""

from __future__ import annotations

import pytest

from conftest import ROOT

NAME = "models-cli-test"
VERSIONS = [  # (version name: config hash-seed-data fingerprint, accuracy, eval_loss, stage)
    ("0a1b2c3d4e5f6071-42-1a2b3c4d", 0.25, 1.9, "archived"),
    ("0a1b2c3d4e5f6071-42-5e6f7a8b", 0.5, 1.5, "production"),
    ("9f8e7d6c5b4a3921-7-5e6f7a8b", 0.375, 1.4, "staging"),
]


@pytest.fixture(scope="module")
def registered():
    import mlflow
    from zenml import log_metadata
    from zenml.client import Client

    from runner import stack
    from runner.models_cli import tracking_uri

    stack.init_store()
    stack.ensure_stack()
    client = Client()
    client.create_model(name=NAME)
    mlflow_client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    mlflow_client.create_registered_model(NAME)
    for version_name, accuracy, loss, stage in VERSIONS:
        version = client.create_model_version(model_name_or_id=NAME, name=version_name)
        mlflow_version = mlflow_client.create_model_version(NAME, source="file:///nowhere/adapter")
        log_metadata(metadata={"evaluation_metrics": {"accuracy": accuracy, "eval_loss": loss, "scored": 16},
                               "mlflow_model_version": str(mlflow_version.version)},
                     model_name=NAME, model_version=version_name)
        client.update_model_version(model_name_or_id=NAME, version_name_or_id=version.id, stage=stage, force=True)
        if stage == "production":
            mlflow_client.set_registered_model_alias(NAME, "production", mlflow_version.version)
    return mlflow_client


def models(*action: str) -> str:
    from llm_trainer.config import load_config
    from runner.arguments import parse_args
    from runner.models_cli import run_models

    args = parse_args(["models", "--config", str(ROOT / "configs" / "quickstart.yaml"),
                       "--set", f"registry.model_name={NAME}",
                       "--set", "registry.promotion_metric=eval_loss", *action])  # listed first
    cfg = load_config(args.config, args.overrides)
    return run_models(cfg, args)


def stages() -> dict[int, str]:
    from runner.models_cli import version_rows

    return {row["number"]: row["stage"] for row in version_rows(NAME)}


def production_alias(mlflow_client) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client.get_model_version_by_alias(NAME, "production").version)
    except MlflowException:
        return None


def test_list_shows_number_stage_metrics_data_and_created(registered, capsys):
    assert models() == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"model '{NAME}': 3 versions")
    assert lines[1].split() == ["#", "stage", "eval_loss", "accuracy", "extraction_failed", "data", "created"]
    rows = [line.split() for line in lines[2:]]
    assert [r[:6] for r in rows] == [["1", "archived", "1.9", "0.25", "-", "1a2b3c4d"],
                                     ["2", "production", "1.5", "0.5", "-", "5e6f7a8b"],
                                     ["3", "staging", "1.4", "0.375", "-", "5e6f7a8b"]]
    assert all(len(r) == 8 and len(r[6]) == 10 and len(r[7]) == 5 for r in rows)  # created: date and time


def test_promote_and_roll_back_move_zenml_stage_and_mlflow_alias_together(registered, capsys):
    assert models("promote", "3") == 0
    assert stages() == {1: "archived", 2: "archived", 3: "production"}  # the old production is archived
    assert production_alias(registered) == "3"
    assert "version 3: production; MLflow alias 'production' -> version 3" in capsys.readouterr().out

    assert models("stage", "3", "archived") == 0  # roll back: nothing in production
    assert stages()[3] == "archived" and production_alias(registered) is None

    assert models("promote", "2") == 0
    from llm_trainer.errors import UserError

    with pytest.raises(UserError, match=f"^models promote: model '{NAME}' has no version '9'; it has: 1 "):
        models("promote", "9")
    assert models("stage", "3", "staging") == 0  # not the production one: the alias stays where it is
    assert stages() == {1: "archived", 2: "production", 3: "staging"} and production_alias(registered) == "2"


def test_an_unknown_version_lists_the_versions_there_are(registered):
    from llm_trainer.errors import UserError
    from runner.models import find_version

    with pytest.raises(UserError) as error:
        find_version(NAME, "7")
    assert str(error.value) == (f"--model-version: model '{NAME}' has no version '7'; it has: 1 (archived), "
                                "2 (production), 3 (staging)")
    with pytest.raises(UserError, match="no model named 'never-registered' is registered yet"):
        find_version("never-registered", "production")


def test_make_zenml_runs_zenml_commands_on_the_projects_store(monkeypatch):
    """`make zenml ARGS="model list"` runs `python -m runner.dashboards cli model list`: the venv's zenml CLI with
    the project's store (the one run_pipeline.py uses), not the user's global one."""
    import os

    from llm_trainer.paths import state_dir
    from runner import dashboards

    assert "$(PY) -m runner.dashboards cli $(ARGS)" in (ROOT / "Makefile").read_text()
    ran = {}
    monkeypatch.setattr(os, "execvpe", lambda file, args, env: ran.update(file=file, args=args, env=env))
    monkeypatch.delenv("ZENML_CONFIG_PATH")  # as from a plain shell: the project's store is the default
    dashboards.main(["cli", "model", "list"])
    assert ran["args"][1:] == ["model", "list"] and os.path.isfile(ran["file"]) and ran["file"].endswith("zenml")
    assert ran["env"]["ZENML_CONFIG_PATH"] == str(state_dir() / "zenml")
    assert ran["env"]["ZENML_ANALYTICS_OPT_IN"] == "false"


# --- model card and the Hub ----------------------------------------------------------------------------------------

@pytest.fixture
def fake_adapter(tmp_path, monkeypatch):
    """An adapter folder as training leaves it (peft's placeholder card included), returned for any version."""
    import json

    from llm_trainer.training import LoraAdapter

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/cache/tiny/1b5d"}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "README.md").write_text("[More Information Needed]")
    (folder / "llm_trainer_adapter.json").write_text(json.dumps({"base_model": "/cache/tiny/1b5d"}))
    monkeypatch.setattr("runner.hub_push._adapter_of", lambda version: LoraAdapter(folder, "/cache/tiny/1b5d"))
    return folder


@pytest.fixture
def hub(monkeypatch):
    """HfApi at its upload boundary: records the repository made and the folder uploaded (its files, read while
    the upload runs)."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    calls = {}

    def create_repo(self, repo_id, private=False, exist_ok=False, repo_type=None, **kwargs):
        calls["repo"] = (repo_id, private, self.token)

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None, **kwargs):
        from pathlib import Path

        calls["files"] = {p.name: p.read_text(errors="replace") for p in Path(folder_path).iterdir()}
        calls["message"] = commit_message
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_uploads_adapter_tokenizer_and_a_real_model_card(registered, fake_adapter, hub, monkeypatch):
    from llm_trainer.config import load_config
    from runner.hub_push import push_version

    monkeypatch.setenv("HF_TOKEN", "hf_pushTokenForTheTest0123")
    cfg = load_config(ROOT / "configs" / "reasoning.yaml")
    line = push_version(cfg, NAME, 2, "someone/reasoning-lora", private=True)
    assert line.endswith("pushed to someone/reasoning-lora (private): https://huggingface.co/someone/reasoning-lora"
                         "/commit/abc")
    assert hub["repo"] == ("someone/reasoning-lora", True, "hf_pushTokenForTheTest0123")
    files = hub["files"]
    assert set(files) == {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"}
    card = files["README.md"]
    assert "[More Information Needed]" not in card and "/cache/tiny" not in card
    front = card.split("---")[1]
    assert "base_model: meta-llama/Meta-Llama-3-8B-Instruct" in front and "license: cc-by-nc-4.0" in front
    assert "- facebook/natural_reasoning" in front
    assert "fingerprint `5e6f7a8b`" in card and "Registered version: models-cli-test 2" in card
    assert "| accuracy | - | 0.5 |" in card and "| eval_loss | - | 1.5 |" in card  # no base metrics recorded here
    assert "AutoPeftModelForCausalLM.from_pretrained" in card and "run_pipeline.py use" in card
    assert "learning_rate:" in card  # the training config


def test_push_without_a_token_or_hub_is_one_line(registered, fake_adapter, hub, monkeypatch):
    from llm_trainer.config import load_config
    from llm_trainer.errors import UserError
    from runner.hub_push import push_version

    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(UserError, match=r"^models push: no Hub token; run `hf auth login` or set HF_TOKEN"):
        push_version(cfg, NAME, 2, "someone/x")
    assert "files" not in hub

    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_x")

    def unreachable(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    with pytest.raises(UserError) as error:
        push_version(cfg, NAME, 2, "someone/x")
    assert str(error.value) == ("models push: the Hub refused or could not be reached (ConnectionError: Failed to "
                                "resolve 'huggingface.co')")


def test_the_card_written_at_save_replaces_peft_placeholder(tmp_path, make_config):
    from llm_trainer.model_card import card_from_config, write_model_card

    (tmp_path / "README.md").write_text("[More Information Needed]")
    cfg = make_config(training={"learning_rate": 3e-4})
    card = write_model_card(tmp_path, card_from_config(cfg)).read_text()
    assert "[More Information Needed]" not in card and "# test: a LoRA adapter for tiny-llama" in card
    assert "learning_rate: 0.0003" in card and "Not evaluated yet" in card
    assert "base_model:" not in card.split("---")[1]  # the tiny model is not on the Hub
    assert "datasets:" not in card.split("---")[1]  # nor is the sample data file
