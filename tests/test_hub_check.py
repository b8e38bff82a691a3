"""The Hub is checked before a pipeline starts: an unreachable Hub, a model only in the local cache, a gated model
and a Hub failure inside a step are each one line (or no error where the cache or the steps' token can answer)."""

from __future__ import annotations

import os

import pytest

from helpers.cli import one_error_line, run_cli


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
