"""zenml.run_config: a ZenML run-configuration YAML reaches the compiled pipeline as ZenML reads it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conftest import QUICKSTART


def test_a_zenml_run_config_file_reaches_the_compiled_pipeline(tmp_path):
    from llm_trainer.config import load_config
    from runner.run import configure_run

    run_config = tmp_path / "zenml_run.yaml"
    run_config.write_text(
        "settings:\n  docker:\n    apt_packages: [git-lfs]\n"
        "steps:\n  train_model:\n    settings:\n      resources:\n        memory: 48GB\n        gpu_count: 2\n"
        "  evaluate_base:\n    enable_cache: false\n")
    cfg = load_config(QUICKSTART, [f"zenml.run_config={run_config}", "zenml.resources.train.memory=64GB"])
    configured, params = configure_run("full", cfg)
    configured.prepare(**params)
    snapshot = configured.create_snapshot(name="run-config-check")
    steps = snapshot.step_configurations
    resources = steps["train_model"].config.settings["resources"]
    resources = resources.model_dump() if hasattr(resources, "model_dump") else dict(resources)
    assert resources["gpu_count"] == 2  # from the ZenML file
    assert resources["memory"] == "64GB"  # the config's zenml section wins where both set a key
    assert steps["evaluate_base"].config.enable_cache is False
    docker = snapshot.pipeline_configuration.settings["docker"]
    docker = docker.model_dump() if hasattr(docker, "model_dump") else dict(docker)
    assert docker["apt_packages"] == ["git-lfs"]


def test_a_missing_run_config_file_is_a_config_error(tmp_path):
    from llm_trainer.config import load_config
    from llm_trainer.errors import ConfigError

    with pytest.raises((ConfigError, ValidationError), match="zenml.run_config.*no such file"):
        load_config(QUICKSTART, [f"zenml.run_config={tmp_path / 'missing.yaml'}"])
