"""The train pipeline through the CLI: ZenML artifacts, MLflow run contents, caching, the stack command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT

pytestmark = pytest.mark.slow

TRAIN_ARGS = ["train", "--config", "configs/quickstart.yaml", "--set", "training.max_steps=10",
              "--set", f"output_dir={os.environ['LLM_TRAINER_HOME']}/outputs",
              "--set", "training.eval_steps=5", "--set", "training.save_steps=5", "--set", "training.logging_steps=2"]


SECRET = "hf_testSecretTokenValue0123456789"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_pipeline.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "HF_TOKEN": SECRET})


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    summary_path = tmp_path_factory.mktemp("train") / "summary.json"
    result = run_cli(*TRAIN_ARGS, "--summary", str(summary_path))
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(summary_path.read_text()), result.stdout + result.stderr


def test_train_step_reports_metrics(first_run):
    summary, output = first_run
    assert summary["pipeline"] == "train_pipeline" and summary["status"] == "completed"
    metrics = summary["steps"]["train_model"]
    assert metrics["global_step"] == 10
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    # 10 steps of 8 packed blocks of at most 512 tokens; throughput is those tokens over the wall time.
    assert 0 < metrics["trained_tokens"] <= 10 * 8 * 512
    assert metrics["train_tokens_per_second"] == pytest.approx(metrics["trained_tokens"] / metrics["wall_time_s"],
                                                               rel=0.01)
    assert 50 < metrics["peak_memory_mb"] < 24 * 1024  # the process's resident peak, in MB (not KB or bytes)
    # The tiny base model's build within its budgets (the sample data's 20 passes fit under the quickstart's).
    assert 0 < metrics["tiny_model_pretrain_tokens"] <= 1_500_000 and metrics["tiny_model_build_seconds"] > 0
    assert 0 < metrics["tiny_model_corpus_chars"] <= 1_000_000
    assert "pickle" not in output.lower()
    assert Path(metrics["run_dir"], "adapter", "adapter_model.safetensors").is_file()


def test_mlflow_holds_params_metrics_tags_and_loss_image(first_run):
    import mlflow

    summary, _ = first_run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{Path(os.environ['LLM_TRAINER_HOME']) / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    assert experiment is not None
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("zenml_run_id") == summary["run_id"]]
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["training.learning_rate"] == "0.002"
    assert run.data.params["training.max_steps"] == "10"
    assert run.data.params["model.base_model"] == "tiny-llama"
    assert run.data.tags["zenml_pipeline"] == "train_pipeline"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert len(head) == 40 and run.data.tags["git_commit"] == head  # tests run in a checkout: never "unknown"
    from zenml.client import Client

    tokenized = Client().get_pipeline_run(summary["run_id"]).steps["tokenize"].outputs["tokenized_dataset"][0]
    assert run.data.tags["data_fingerprint"] == tokenized.load()["train"]._fingerprint  # the data it trained on
    losses = client.get_metric_history(run.info.run_id, "loss")
    evals = client.get_metric_history(run.info.run_id, "eval_loss")
    assert len(losses) >= 5 and len(evals) >= 3
    assert [m.step for m in evals][0] == 0
    assert {"train_tokens_per_second", "learning_rate", "grad_norm", "peak_memory_mb"} <= set(run.data.metrics)
    assert "loss_curve.png" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert experiment.artifact_location.startswith(Path(os.environ["LLM_TRAINER_HOME"]).as_uri())
    assert not (ROOT / "mlruns").exists()


def test_mlflow_run_records_system_metrics_and_tokens_per_second_at_each_logging_step(first_run):
    """CPU and host memory at every training logging step (GPU memory and utilisation where there is a GPU), and
    tokens/s; the loss chart then has a memory panel beside the loss."""
    import mlflow

    summary, _ = first_run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{Path(os.environ['LLM_TRAINER_HOME']) / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    (run,) = [r for r in client.search_runs([experiment.experiment_id])
              if r.data.tags.get("zenml_run_id") == summary["run_id"]]
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
    assert len(steps) >= 5
    for name in ("system/cpu_percent", "system/process_cpu_percent", "system/host_memory_used_mb",
                 "system/host_memory_percent", "system/process_rss_mb", "train_tokens_per_second"):
        history = client.get_metric_history(run.info.run_id, name)
        assert set(steps) <= {m.step for m in history}, name  # tokens/s also at the end, with the run's figures
    rss = [m.value for m in client.get_metric_history(run.info.run_id, "system/process_rss_mb")]
    assert all(50 < v < 24 * 1024 for v in rss), rss  # MB, not KB or bytes
    gpu = client.get_metric_history(run.info.run_id, "system/gpu_memory_allocated_mb")
    assert bool(gpu) == torch.cuda.is_available()
    png = Path(summary["steps"]["train_model"]["run_dir"], "loss_curve.png").read_bytes()
    assert int.from_bytes(png[16:20], "big") == 1200  # loss and memory side by side


def test_zenml_artifacts_and_cached_rerun(first_run, tmp_path):
    from zenml.client import Client

    summary, _ = first_run
    run = Client().get_pipeline_run(summary["run_id"])
    adapter_artifact = run.steps["train_model"].outputs["adapter"][0]
    assert adapter_artifact.materializer.import_path.endswith("LoraAdapterMaterializer")
    adapter = adapter_artifact.load()
    assert (Path(adapter.path) / "adapter_config.json").is_file() and adapter.base_model
    assert adapter_artifact.run_metadata["r"] == 16
    curve = run.steps["train_model"].outputs["loss_curve"][0]
    assert "data:image/png;base64," in curve.load()
    assert curve.visualizations

    again_path = tmp_path / "again.json"
    again = run_cli(*TRAIN_ARGS, "--summary", str(again_path))
    assert again.returncode == 0, again.stderr[-3000:]
    statuses = {name: s["status"] for name, s in json.loads(again_path.read_text())["steps"].items()}
    assert statuses == {"fingerprint_source": "completed", "load_data": "cached", "preprocess": "cached",
                        "tokenize": "cached", "prepare_base_model": "cached", "train_model": "cached"}


def test_changing_only_training_settings_reuses_processed_data(first_run, tmp_path):
    path = tmp_path / "lr.json"
    result = run_cli(*TRAIN_ARGS, "--set", "training.learning_rate=1e-3", "--summary", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = {name: s["status"] for name, s in json.loads(path.read_text())["steps"].items()}
    assert statuses == {"fingerprint_source": "completed", "load_data": "cached", "preprocess": "cached",
                        "tokenize": "cached", "prepare_base_model": "cached", "train_model": "completed"}


def test_train_and_evaluate_need_no_local_cache(first_run, tmp_path):
    """Another machine (a step operator) has none of this project's caches: the base model (here the built
    tiny model) comes from its artifact, so train and evaluate run with the cache folder emptied."""
    import shutil

    from zenml.client import Client

    processed = run_cli("process", *TRAIN_ARGS[1:])  # as the issue has it: process here, train elsewhere
    assert processed.returncode == 0, processed.stderr[-3000:]
    cache = Path(os.environ["LLM_TRAINER_HOME"]) / "cache"
    assert (cache / "tiny-llama").is_dir()
    shutil.rmtree(cache)
    path = tmp_path / "nocache.json"
    result = run_cli(*TRAIN_ARGS, "--set", "training.learning_rate=5e-4", "--set", "training.max_steps=2",
                     "--summary", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(path.read_text())
    assert summary["steps"]["prepare_base_model"]["status"] == "cached"
    assert summary["steps"]["train_model"]["status"] == "completed"
    assert not (cache / "tiny-llama").exists()  # nothing was rebuilt into the cache: the artifact was used
    base = Client().get_pipeline_run(summary["run_id"]).steps["prepare_base_model"].outputs["base_model"][0]
    assert summary["steps"]["train_model"]["base_model"].startswith(base.uri)
    evaluated = run_cli("evaluate", *TRAIN_ARGS[1:], "--set", "evaluation.max_samples=2",
                        "--set", "evaluation.max_new_tokens=8")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert not (cache / "tiny-llama").exists()


def test_stack_command_is_idempotent(tmp_path):
    """On a fresh store the first call creates the stack; later calls, also after the user switched to
    another stack, re-activate it without registering anything twice."""
    home = tmp_path / "home"
    env = {**os.environ, "LLM_TRAINER_HOME": str(home), "ZENML_CONFIG_PATH": str(home / "zenml")}

    def stack_cli(*args: str) -> dict:
        result = subprocess.run([sys.executable, "run_pipeline.py", "stack", *args], cwd=ROOT, capture_output=True,
                                text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout[result.stdout.index("{"):])

    def registered() -> tuple[list[str], list[str]]:
        listing = subprocess.run([sys.executable, "-c", (
            "from zenml.client import Client; c = Client(); "
            "print(sorted(s.name for s in c.list_stacks(size=100))); "
            "print(sorted(x.name for x in c.list_stack_components(size=100)))")],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert listing.returncode == 0, listing.stderr[-2000:]
        return listing.stdout.strip().splitlines()[-2:]

    first = stack_cli()
    tracker = first["components"]["experiment_tracker"]
    assert tracker["flavor"] == "mlflow" and tracker["tracking_uri"] == f"sqlite:///{home / 'mlflow.db'}"
    after_first = registered()
    assert "llm_trainer_local" in after_first[0] and "llm_trainer_mlflow" in after_first[1]
    subprocess.run([sys.executable, "-c", "from zenml.client import Client; Client().activate_stack('default')"],
                   cwd=ROOT, env=env, capture_output=True, timeout=300, check=True)
    again = stack_cli()
    assert again["stack"] == first["stack"] == "llm_trainer_local"
    assert registered() == after_first


def test_hub_token_never_leaks_and_nothing_is_pickled(first_run):
    """HF_TOKEN is in the environment of every run above; it must not show up anywhere the run writes."""
    import mlflow
    from zenml.client import Client

    summary, output = first_run
    assert SECRET not in output
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{Path(os.environ['LLM_TRAINER_HOME']) / 'mlflow.db'}")
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        assert SECRET not in json.dumps({**run.data.params, **run.data.tags})
    pipeline_run = Client().get_pipeline_run(summary["run_id"])
    assert SECRET not in pipeline_run.model_dump_json()
    for step_run in pipeline_run.steps.values():
        assert SECRET not in json.dumps(step_run.run_metadata, default=str)
        assert SECRET not in step_run.config.model_dump_json()
        for versions in step_run.outputs.values():
            for version in versions:
                assert "pickle" not in version.materializer.import_path.lower(), version.name
    run_dir = Path(summary["steps"]["train_model"]["run_dir"])
    assert_secret_nowhere_under(run_dir, Path(os.environ["LLM_TRAINER_HOME"]))


def assert_secret_nowhere_under(*folders: Path, minimum: int = 10) -> None:
    """Every file, whatever its kind: ZenML's store and step logs, MLflow's database, artifacts, launcher files."""
    scanned = 0
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert SECRET.encode() not in path.read_bytes(), path
                scanned += 1
    assert scanned >= minimum


def test_a_token_the_hub_client_reads_never_leaks(tmp_path):
    """A run that really reads HF_TOKEN: the model is a Hub id, the Hub a local stand-in that records what it is
    sent and refuses everything. The token must reach the stand-in, and be nowhere in what the run prints or writes."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class RefusingHub(BaseHTTPRequestHandler):
        def _refuse(self):
            seen.append(self.headers.get("Authorization", ""))
            body = json.dumps({"error": "Access to model meta-llama/Meta-Llama-3-8B-Instruct is restricted."}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = _refuse

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    home = tmp_path / "home"
    env = {**os.environ, "HF_TOKEN": SECRET, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
           "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HUB_ETAG_TIMEOUT": "2",
           "HF_HUB_DOWNLOAD_TIMEOUT": "2", "LLM_TRAINER_HOME": str(home), "ZENML_CONFIG_PATH": str(home / "zenml"),
           "HF_HOME": str(tmp_path / "hf")}
    try:
        result = subprocess.run([sys.executable, "run_pipeline.py", "process", "--config", "configs/quickstart.yaml",
                                 "--set", "model.base_model=meta-llama/Meta-Llama-3-8B-Instruct",
                                 "--set", f"output_dir={tmp_path / 'outputs'}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert f"Bearer {SECRET}" in seen  # the Hub client did read and send the token
    assert result.returncode != 0 and SECRET not in result.stdout + result.stderr
    # The Hub check stops the run before any step, so there may be nothing written; whatever there is, is clean.
    assert_secret_nowhere_under(home, tmp_path / "outputs", tmp_path / "hf", minimum=0)


def test_kill_9_through_the_cli_then_the_same_command_resumes(tmp_path):
    """The user's view of a crash: `run_pipeline.py train` killed with SIGKILL after a checkpoint, then the same
    command again. It must reuse the run folder, train fewer tokens, and end with the uninterrupted run's adapter
    (fp32: to 1e-5). A changed training setting gets its own folder and never resumes the other run's checkpoint."""
    import signal
    import time

    from safetensors.torch import load_file

    def command(output_dir: Path, *extra: str) -> list[str]:
        return [sys.executable, "run_pipeline.py", "train", "--config", "configs/quickstart.yaml",
                "--set", "model.load_in_4bit=false", "--set", "model.dtype=float32", "--set", "training.max_steps=12",
                "--set", "training.save_steps=4", "--set", "training.eval_steps=4", "--set", "lora.lora_dropout=0.0",
                "--set", f"output_dir={output_dir}", *extra]

    def finished(args: list[str], summary: Path) -> dict:
        result = subprocess.run([*args, "--summary", str(summary)], cwd=ROOT, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(summary.read_text())["steps"]["train_model"]

    whole = finished(command(tmp_path / "whole"), tmp_path / "whole.json")

    killed_out = tmp_path / "killed"
    process = subprocess.Popen(command(killed_out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 600
    while not list(killed_out.glob("quickstart/*/checkpoints/checkpoint-*/CHECKPOINT_COMPLETE")):
        assert process.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (run_dir,) = list(killed_out.glob("quickstart/*"))
    assert not (run_dir / "adapter").exists()

    resumed = finished(command(killed_out), tmp_path / "resumed.json")
    assert Path(resumed["run_dir"]) == run_dir  # the same folder, found again
    assert resumed["global_step"] == whole["global_step"] == 12
    assert resumed["trained_tokens"] < whole["trained_tokens"]  # it resumed rather than starting over
    a = load_file(Path(whole["run_dir"]) / "adapter" / "adapter_model.safetensors")
    b = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6)

    changed = finished(command(killed_out, "--set", "training.learning_rate=1e-3"), tmp_path / "changed.json")
    assert Path(changed["run_dir"]) != run_dir and Path(changed["run_dir"]).parent == run_dir.parent
    assert changed["trained_tokens"] == whole["trained_tokens"]  # from step 0: nothing of the other run resumed
