"""Reliability, round two: empty splits, a full disk, kills inside registration, stale runs, an unreachable Hub,
one run per run folder, checkpoints from outside the run folder. Data-level cases are in test_data_processing.py,
file modes and the run-folder lock itself in test_fsutil.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

QUICK = ["--config", "configs/quickstart.yaml", "--set", "training.max_steps=2", "--set", "training.save_steps=2",
         "--set", "evaluation.max_samples=4", "--set", "evaluation.max_new_tokens=8",
         "--set", "registry.promotion_metric=eval_loss"]  # 2 steps learn the loss, not the answers


def run_cli(*args: str, env: dict | None = None, prelude: str = "", timeout: int = 600) -> subprocess.CompletedProcess:
    """The CLI in a fresh process; ``prelude`` runs first (to inject a kill)."""
    command = [sys.executable, "run_pipeline.py"]
    if prelude:  # ZenML finds its source root from the main module's file, which `-c` has not
        command = [sys.executable, "-c", "import sys\nfrom zenml.utils import source_utils\n"
                   f"source_utils.set_custom_source_root({str(ROOT)!r})\n{prelude}\n"
                   "import run_pipeline\nsys.exit(run_pipeline.main(sys.argv[1:]))"]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


# --- empty splits -------------------------------------------------------------------------------------------------


def test_empty_splits_round_trip_through_the_dataset_materializer(tmp_path):
    import datasets

    from llm_trainer.data.tokenization import _empty_tokenized
    from materializers import HFDatasetMaterializer

    rows = datasets.Dataset.from_dict({"question": ["a?", "b?"], "row_id": [1, 2]})
    splits = datasets.DatasetDict({"train": rows, "validation": rows.select([]), "test": rows.select([])})
    for name, data in (("dict", splits), ("tokenized", datasets.DatasetDict({"test": _empty_tokenized()})),
                       ("one", rows.select([]))):
        materializer = HFDatasetMaterializer(str(tmp_path / name))
        materializer.save(data)
        loaded = materializer.load(type(data))
        if isinstance(data, datasets.DatasetDict):
            assert {k: len(v) for k, v in loaded.items()} == {k: len(v) for k, v in data.items()}
            assert all(loaded[k].features == data[k].features for k in data)
        else:
            assert len(loaded) == 0 and loaded.features == data.features


@pytest.mark.slow
def test_empty_splits_process_and_stop_the_pipelines_that_need_them(tmp_path):
    outputs = tmp_path / "outputs"
    no_test = ["--set", "data.max_samples=300", "--set", "data.splits.validation=0.1", "--set", "data.splits.test=0",
               "--set", f"output_dir={outputs}"]
    processed = run_cli("process", *QUICK, *no_test)
    assert processed.returncode == 0, processed.stderr[-3000:]  # the empty test split is stored and read back

    for command in ("full", "evaluate"):  # processing is cached; each stops before training or loading a model
        line = one_error_line(run_cli(command, *QUICK, *no_test))
        assert re.fullmatch(r"error: data.splits: the test split is empty: no kept row hashed into it \(train: \d+ "
                            r"rows at 0.9, validation: \d+ rows at 0.1, test: 0 rows at 0.0\); "
                            f"{command} needs test rows", line), line
    assert not outputs.exists()


# --- a full disk at checkpoint and adapter save ----------------------------------------------------------------------

ENOSPC_SAFETENSORS = "Error while serializing: I/O error: No space left on device (os error 28)"


def _half_written(path: str, payload: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(payload[: len(payload) // 2])


def test_a_full_disk_at_checkpoint_or_adapter_save_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    import stat

    import peft.peft_model
    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    from llm_trainer import fsutil
    from llm_trainer.errors import UserError
    from llm_trainer.training.qlora import COMPLETE_MARKER, QLoraTrainer

    cfg, tokenized, tokenizer = _prepared(["training.max_steps=4", "training.save_steps=2"])
    checkpoints = tmp_path / "checkpoints"
    real_save_file, real_torch_save = peft.peft_model.safe_save_file, torch.save

    def disk_fills_at(marker: str):
        def save_file(tensors, path, metadata=None):
            if marker not in str(path):
                return real_save_file(tensors, path, metadata=metadata)
            _half_written(path, safetensors.torch.save(tensors, metadata=metadata))
            raise SafetensorError(ENOSPC_SAFETENSORS)
        return save_file

    # 1. safetensors fails half-way through the adapter weights of checkpoint-4.
    monkeypatch.setattr(peft.peft_model, "safe_save_file", disk_fills_at("checkpoint-4"))
    with pytest.raises(UserError) as error:
        QLoraTrainer(cfg).train(tokenized, tokenizer, tmp_path)
    assert str(error.value) == (f"cannot save the checkpoint {checkpoints / 'checkpoint-4'}: No space left on "
                                "device; a re-run resumes from the last complete checkpoint")
    assert (checkpoints / "checkpoint-2" / COMPLETE_MARKER).exists() and not (checkpoints / "checkpoint-4").exists()
    monkeypatch.setattr(peft.peft_model, "safe_save_file", real_save_file)

    # 2. torch's writer fails half-way through the optimizer state (it names no cause: the free space does).
    def torch_save(obj, path, *args, **kwargs):
        if "checkpoint-4" not in str(path):
            return real_torch_save(obj, path, *args, **kwargs)
        _half_written(path, b"\0" * 4096)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", torch_save)
    monkeypatch.setattr(fsutil, "free_bytes", lambda path: 0)
    assert QLoraTrainer(cfg)._resume_checkpoint(checkpoints) == str(checkpoints / "checkpoint-2")
    with pytest.raises(UserError, match=r"^cannot save the checkpoint .*checkpoint-4: No space left on device;"):
        QLoraTrainer(cfg).train(tokenized, tokenizer, tmp_path)
    monkeypatch.setattr(torch, "save", real_torch_save)

    # Room again: the re-run resumes from checkpoint-2 and saves the adapter, with the umask's modes.
    assert QLoraTrainer(cfg)._resume_checkpoint(checkpoints) == str(checkpoints / "checkpoint-2")
    first = QLoraTrainer(cfg).train(tokenized, tokenizer, tmp_path)
    assert first.metrics["global_step"] == 4 and (checkpoints / "checkpoint-4" / COMPLETE_MARKER).exists()
    weights = first.adapter.path / "adapter_model.safetensors"
    assert stat.S_IMODE(first.adapter.path.stat().st_mode) == 0o777 & ~fsutil.current_umask()
    assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~fsutil.current_umask()
    saved = weights.read_bytes()

    # 3. The adapter's weights fail half-way: one line, the previous adapter and nothing else left.
    monkeypatch.setattr(peft.peft_model, "safe_save_file", disk_fills_at(".adapter.tmp-"))
    with pytest.raises(UserError) as error:
        QLoraTrainer(cfg).train(tokenized, tokenizer, tmp_path)
    assert str(error.value) == (f"cannot save the adapter to {tmp_path / 'adapter'}: No space left on device; "
                                "the previous adapter there (if any) is untouched")
    assert weights.read_bytes() == saved
    assert sorted(p.name for p in tmp_path.iterdir() if "adapter" in p.name) == ["adapter"]


def _prepared(overrides: list[str]):
    """The quickstart data and tiny tokenizer (the ones other test modules use, so the tiny base is shared)."""
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor
    from llm_trainer.base_model import prepare_tokenizer

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", ["data.max_seq_length=256", "model.load_in_4bit=false",
                                                               "training.logging_steps=2", *overrides])
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(cfg.model, processed["train"])
    tokenized, _ = processor.tokenize(processed, tokenizer)
    return cfg, tokenized, tokenizer


# --- checkpoints hold pickles: resume reads them from the run folder only -----------------------------------------


def test_resume_never_reads_a_checkpoint_from_outside_the_run_folder(tmp_path, make_config):
    from llm_trainer.training.qlora import COMPLETE_MARKER, QLoraTrainer

    elsewhere, run_dir = tmp_path / "elsewhere", tmp_path / "run"
    for folder in (elsewhere / "checkpoint-8", run_dir / "checkpoints" / "checkpoint-2"):
        folder.mkdir(parents=True)
        (folder / COMPLETE_MARKER).write_text("done")
    (run_dir / "checkpoints" / "checkpoint-9").symlink_to(elsewhere / "checkpoint-8")
    trainer = QLoraTrainer(make_config())
    assert trainer._resume_checkpoint(run_dir / "checkpoints") == str(run_dir / "checkpoints" / "checkpoint-2")
    linked_run = tmp_path / "linked"
    linked_run.mkdir()
    (linked_run / "checkpoints").symlink_to(elsewhere)
    assert trainer._resume_checkpoint(linked_run / "checkpoints") is None
    assert (elsewhere / "checkpoint-8" / COMPLETE_MARKER).exists()  # and nothing outside was removed


def test_readme_says_what_no_pickle_covers():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## What happens when..."):text.index("## Extending")]
    assert "checkpoints hold torch pickles" in section and "from the run folder only" in section


# --- one run per run folder ---------------------------------------------------------------------------------------


def test_training_holds_the_run_folder(tmp_path, make_config, monkeypatch):
    import fcntl

    from llm_trainer.training import run

    seen = []

    class Probe:
        def train(self, tokenized, tokenizer, run_dir, on_metrics=None):
            with open(Path(run_dir) / "run.lock") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    seen.append("free")
                except BlockingIOError:
                    seen.append(f"held: {(Path(run_dir) / 'run.lock').read_text().strip()}")
            raise RuntimeError("stop")

    monkeypatch.setattr(run, "build_trainer", lambda cfg, base_model: Probe())
    with pytest.raises(RuntimeError, match="stop"):
        run.run_training(make_config(), None, None, tmp_path / "run", base_model="unused")
    assert len(seen) == 1 and seen[0].startswith(f"held: process {os.getpid()} on ")


# --- the Hub is checked before the pipeline starts ---------------------------------------------------------------


def test_an_unreachable_hub_is_one_line_before_anything_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))  # nothing listens on port 9
    result = run_cli("process", "--config", "configs/quickstart.yaml", "--set",
                     "model.base_model=meta-llama/Meta-Llama-3-8B-Instruct", env=env, timeout=120)
    assert one_error_line(result).startswith(
        "error: model.base_model: cannot load 'meta-llama/Meta-Llama-3-8B-Instruct': cannot reach the Hugging Face "
        "Hub at http://127.0.0.1:9 (")
    assert "Retry" not in result.stderr and "load_data" not in result.stdout + result.stderr


def test_a_model_in_the_local_cache_needs_no_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from llm_trainer.errors import ConfigError
    from llm_trainer.hub_check import check_model

    snapshot = tmp_path / "hub" / "models--org--cached" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "tokenizer_config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--cached" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--cached" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert constants.HF_HUB_OFFLINE  # the tests' environment: only the cache can answer
    check_model("model.base_model", "org/cached", None)
    with pytest.raises(ConfigError, match=r"^model.base_model: cannot load 'org/missing': it is not in the Hugging "
                                          r"Face cache \(.*\) and the Hub is off \(HF_HUB_OFFLINE=1\)"):
        check_model("model.base_model", "org/missing", None)


def test_a_hub_failure_inside_a_step_is_one_line(monkeypatch, capsys):
    import httpx2

    from runner import cli

    def tokenize_step(args):
        try:
            raise httpx2.ConnectError("[Errno 111] Connection refused")
        except httpx2.ConnectError as exc:
            raise RuntimeError("Failed to run step 'tokenize'") from exc

    monkeypatch.setattr(cli, "run_command", tokenize_step)
    assert cli.main(["process", "--config", "configs/quickstart.yaml"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot reach the Hugging Face Hub at ")


# --- registration survives a kill at any point; runs whose process died are marked failed -----------------------


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, and no ``except Exception`` catches it."""


MLFLOW_POINTS = [("mlflow", "log_artifacts"), ("client", "create_registered_model"),
                 ("client", "create_model_version"), ("client", "set_registered_model_alias")]


@pytest.mark.parametrize(("where", "call"), MLFLOW_POINTS)
def test_registration_killed_at_each_point_leaves_one_mlflow_version(tmp_path, monkeypatch, where, call):
    import mlflow

    from llm_trainer.training import LoraAdapter
    from publishing.mlflow_registry import register_in_mlflow

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


def test_a_gated_model_is_one_line_unless_the_token_comes_with_the_steps(monkeypatch):
    import httpx2
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError

    from llm_trainer.errors import ConfigError
    from llm_trainer.hub_check import check_model

    def gated(url, **kwargs):
        response = httpx2.Response(403, request=httpx2.Request("HEAD", url))
        raise GatedRepoError(f"403 Client Error: Cannot access gated repo for url {url}", response=response)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", gated)
    with pytest.raises(ConfigError, match=r"^model.base_model: cannot load 'meta-llama/Meta-Llama-3-8B-Instruct': "
                                          r"it is gated on the Hub: accept its licence"):
        check_model("model.base_model", "meta-llama/Meta-Llama-3-8B-Instruct", None)
    check_model("model.base_model", "meta-llama/Meta-Llama-3-8B-Instruct", None, token_in_steps=True)
