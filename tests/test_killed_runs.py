"""Kills: registration survives a kill at any point (one MLflow version, the alias right), a run whose process died
is marked failed by the next run, and the process marker tells a live process from a killed one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from helpers.cli import QUICK, run_cli


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, and no ``except Exception`` catches it."""


MLFLOW_POINTS = [("mlflow", "log_artifacts"), ("client", "create_registered_model"),
                 ("client", "create_model_version"), ("client", "set_registered_model_alias")]


@pytest.mark.parametrize(("where", "call"), MLFLOW_POINTS)
def test_registration_killed_at_each_point_leaves_one_mlflow_version(tmp_path, monkeypatch, where, call):
    import mlflow

    from publishing.mlflow_registry import register_in_mlflow
    from llm_trainer.training import LoraAdapter

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("register", artifact_location=(tmp_path / "artifacts").as_uri())
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"weights")
    adapter = LoraAdapter(path=adapter_dir, base_model="tiny-llama")

    def register(zenml_version: str, promote: bool) -> str:
        with mlflow.start_run(experiment_id=experiment):
            return register_in_mlflow("m", zenml_version, adapter, {"eval_loss": 1.0}, promote)

    owner = mlflow if where == "mlflow" else mlflow.MlflowClient
    real = getattr(owner, call)

    def killed_after(*args, **kwargs):
        real(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(owner, call, killed_after)
    with pytest.raises(Killed):
        register("zenml-version-1", promote=True)
    monkeypatch.setattr(owner, call, real)

    version = register("zenml-version-1", promote=True)  # the re-run
    assert [v.version for v in client.search_model_versions("name = 'm'")] == [int(version)] == [1]
    assert client.get_model_version_by_alias("m", "production").version == 1
    assert register("zenml-version-1", promote=False) == "1"  # decided against on a re-run: alias taken back
    assert not client.get_registered_model("m").aliases
    assert register("zenml-version-2", promote=True) == "2"  # another ZenML version gets its own
    mlflow.set_tracking_uri("")


KILL_AFTER_MLFLOW_VERSION = """
import os, signal, mlflow
real = mlflow.MlflowClient.create_model_version
def create_then_die(self, *args, **kwargs):
    real(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
mlflow.MlflowClient.create_model_version = create_then_die
"""


@pytest.mark.slow
def test_a_run_killed_inside_registration_is_failed_and_its_rerun_registers_once(tmp_path):
    import mlflow
    from zenml.client import Client
    from zenml.enums import ModelStages

    args = ["full", *QUICK, "--set", "registry.model_name=killed-in-register", "--set", f"output_dir={tmp_path}"]
    killed = run_cli(*args, prelude=KILL_AFTER_MLFLOW_VERSION)
    assert killed.returncode == -9, killed.stderr[-3000:]
    [stale] = [r for r in Client().list_pipeline_runs(status="running", size=50).items
               if r.name.startswith("quickstart-full-")]
    summary_path = tmp_path / "summary.json"
    rerun = run_cli(*args, "--summary", str(summary_path))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"marked 1 run(s) whose process died as failed: {stale.name}" in rerun.stderr

    assert Client().get_pipeline_run(stale.id).status.value == "failed"
    assert all(s.status.value != "running" for s in Client().get_pipeline_run(stale.id).steps.values())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{Path(os.environ['LLM_TRAINER_HOME']) / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    killed_runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{stale.name}'")
    assert killed_runs and {r.info.status for r in killed_runs} == {"FAILED"}

    versions = client.search_model_versions("name = 'killed-in-register'")
    decision = json.loads(summary_path.read_text())["steps"]["register_model"]
    assert [str(v.version) for v in versions] == [decision["mlflow_version"]] == ["1"]
    zenml_version = Client().get_model_version("killed-in-register", ModelStages.PRODUCTION)
    assert versions[0].tags["zenml_model_version_id"] == str(zenml_version.id)
    assert zenml_version.run_metadata["mlflow_model_version"] == "1"
    assert client.get_model_version_by_alias("killed-in-register", "production").version == 1


def test_a_process_marker_tells_a_live_process_from_a_killed_one():
    from runner.stale import owner_alive

    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom runner.stale import owner_marker\n"
                               "with owner_marker() as owner:\n    print(owner['token'], flush=True)\n"
                               "    time.sleep(600)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        token = holder.stdout.readline().strip()
        assert owner_alive(token)
    finally:
        holder.kill()
        holder.wait()
    assert not owner_alive(token)
