"""`make dashboard` and `make mlflow-ui`: each serves a quickstart run on a free loopback port, checked
through its REST API, then stopped by its process id."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, payload: dict | None = None) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project state folder with one short quickstart train run."""
    home = tmp_path_factory.mktemp("dashboards") / "home"
    env = {**os.environ, "LLM_TRAINER_HOME": str(home), "ZENML_CONFIG_PATH": str(home / "zenml")}
    summary = home.parent / "summary.json"
    result = subprocess.run([sys.executable, "run_pipeline.py", "train", "--config", "configs/quickstart.yaml",
                             "--set", f"output_dir={home / 'outputs'}", "--set", "training.max_steps=4",
                             "--set", "training.logging_steps=1",
                             "--set", "model.tiny.pretrain_max_tokens=20000",  # a fresh store builds its own base model
                             "--summary", str(summary)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return env, json.loads(summary.read_text())


def serve(which: str, env: dict[str, str], health_path: str):
    """Start the make target's command on a free port; yield its base URL; stop it by its process id."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "runner.dashboards", which, "--port", str(port)], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(base + health_path, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            output = process.stdout.read() if process.poll() is not None else "(still starting)"
            os.killpg(process.pid, signal.SIGKILL) if process.poll() is None else None
            pytest.fail(f"{which} did not come up on {base}: {output[-3000:]}")
        time.sleep(1)
    return process, base


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_zenml_dashboard_shows_the_run_and_its_lineage(project):
    env, summary = project
    process, base = serve("zenml", env, "/health")
    try:
        info = http_json(f"{base}/api/v1/info")
        assert info["auth_scheme"] == "NO_AUTH" and info["database_type"] == "sqlite"
        run = http_json(f"{base}/api/v1/runs/{summary['run_id']}?hydrate=true")
        assert run["name"] == summary["run_name"] and run["body"]["status"] == "completed"
        steps = http_json(f"{base}/api/v1/steps?pipeline_run_id={summary['run_id']}&size=50")["items"]
        assert {s["name"] for s in steps} == {"fingerprint_source", "load_data", "preprocess",
                                                "tokenize", "prepare_base_model", "train_model"}
        by_name = {s["name"]: s["id"] for s in steps}
        train = http_json(f"{base}/api/v1/steps/{by_name['train_model']}?hydrate=true")
        # Lineage: train_model consumed tokenize's outputs and the base model (GRPO also reads preprocess's rows),
        # and produced the adapter.
        parents = set(train["metadata"]["parent_step_ids"])
        assert {by_name["tokenize"], by_name["prepare_base_model"]} <= parents
        assert parents <= {by_name[name] for name in ("tokenize", "prepare_base_model", "preprocess")}
        tokenize = http_json(f"{base}/api/v1/steps/{by_name['tokenize']}?hydrate=true")
        first = lambda versions: versions[0] if isinstance(versions, list) else versions  # noqa: E731
        assert (first(train["resources"]["inputs"]["tokenized_dataset"])["id"]
                == first(tokenize["resources"]["outputs"]["tokenized_dataset"])["id"])
        assert set(train["resources"]["outputs"]) == {"adapter", "training_metrics", "loss_curve"}
        curve = first(train["resources"]["outputs"]["loss_curve"])["id"]
        shown = http_json(f"{base}/api/v1/artifact_versions/{curve}/visualize?index=0")
        assert shown["type"] == "html" and "data:image/png;base64," in shown["value"]
        # No account-details form for the local default user: answered through ZenML's API before serving.
        user = http_json(f"{base}/api/v1/current-user?hydrate=true")
        assert user["body"]["email_opted_in"] is False
        assert user["metadata"]["user_metadata"]["finished_onboarding_survey"] is True
        assert process.poll() is None
    finally:
        stop(process)
    assert process.poll() is not None
    printed = process.stdout.read()
    assert f"latest run (its DAG): {base}/projects/default/runs/{summary['run_id']}" in printed
    # The client configuration is untouched: the project keeps using its SQLite store afterwards.
    check = subprocess.run([sys.executable, "-c", "from zenml.client import Client; "
                            "print(Client().zen_store.type.value)"], cwd=ROOT, env=env, capture_output=True,
                           text=True, check=True)
    assert check.stdout.strip().splitlines()[-1] == "sql"


def test_mlflow_ui_shows_the_experiment_and_its_metrics(project):
    env, summary = project
    process, base = serve("mlflow", env, "/health")
    try:
        experiment = http_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=quickstart")
        experiment_id = experiment["experiment"]["experiment_id"]
        runs = http_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})["runs"]
        tagged = [r for r in runs if {"key": "zenml_run_id", "value": summary["run_id"]} in r["data"]["tags"]]
        assert len(tagged) == 1
        run_id = tagged[0]["info"]["run_id"]
        history = http_json(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=loss")
        assert [m["step"] for m in history["metrics"]] == [1, 2, 3, 4]
    finally:
        stop(process)
    assert process.poll() is not None
    printed = process.stdout.read()  # the run list in the model-training view, not MLflow's GenAI start page
    assert f"experiment quickstart: {base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning" in printed


def test_every_mlflow_metric_runs_forward_in_steps(project):
    """The summary figures are logged at the last step: no curve (eval_loss, train_tokens_per_second) ends with
    a jump back to step 0."""
    import mlflow

    env, summary = project
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{env['LLM_TRAINER_HOME']}/mlflow.db")
    experiment = client.get_experiment_by_name("quickstart")
    (run,) = client.search_runs([experiment.experiment_id], f"tags.zenml_run_id = '{summary['run_id']}'")
    final_step = summary["steps"]["train_model"]["global_step"]
    assert final_step == 4 and {"loss", "eval_loss", "train_tokens_per_second", "wall_time_s"} <= set(run.data.metrics)
    for key in run.data.metrics:
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.timestamp, m.step))
        steps = [m.step for m in history]
        assert steps == sorted(steps), (key, steps)
    eval_steps = [m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")]
    assert eval_steps[0] == 0 and max(eval_steps) == final_step and eval_steps.count(0) == 1
    assert [m.step for m in client.get_metric_history(run.info.run_id, "wall_time_s")] == [final_step]
