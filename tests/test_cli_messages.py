"""The CLI's messages: each command has its own options (one of another command names it), and --set and YAML
mistakes name the key, the file, line and column, or the nearest valid key."""

from __future__ import annotations

import pytest

from conftest import ROOT
from helpers.cli import cli


def test_each_command_has_its_own_options():
    from runner.arguments import build_parsers, parse_args

    _, commands = build_parsers()
    options = {name: set(sub._option_string_actions) for name, sub in commands.items()}
    assert "--prompt" in options["use"] and "--prompt" not in options["process"]
    assert "--temperature" in options["use"] and "--temperature" not in options["serve"]
    assert "--port" in options["serve"] and "--port" not in options["use"]
    assert "--schedule" in options["train"] and "--schedule" not in options["use"]
    assert "--adapter" in options["evaluate"] and "--adapter" not in options["train"]
    assert options["stack"] == {"-h", "--help", "--debug", "--verbose"}
    assert parse_args(["--config", "c.yaml"]).command == "full"  # the default command
    with pytest.raises(SystemExit) as exit_:
        parse_args(["use", "--config", "c.yaml", "--adapter", "a", "--prompt", "x", "--top-p", "0.5"])
    assert exit_.value.code == 2  # --top-p without sampling


def test_an_option_of_another_command_is_an_error_that_names_its_command():
    result = cli("process", "--config", "configs/quickstart.yaml", "--prompt", "hi")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == ("run_pipeline.py process: error: process does not take --prompt hi; "
                                              "it is an option of: use (`run_pipeline.py process --help` lists "
                                              "its options)")
    help_text = cli("use", "--help").stdout
    assert "--temperature" in help_text and "--max-new-tokens" in help_text and "--schedule" not in help_text


@pytest.mark.parametrize(("overrides", "expected"), [
    (["training.learning_rat=1e-4"], "--set training.learning_rat: unknown key; did you mean training.learning_rate?"),
    (["model.learning_rate=1e-4"], "--set model.learning_rate: unknown key; did you mean training.learning_rate?"),
    (["training.max_steps=[1"], "--set training.max_steps: the value '[1' is not valid YAML"),
    (["training.resume=/no/such/checkpoint"], "--set training.resume: '/no/such/checkpoint' is neither auto, never "
                                              "nor a checkpoint folder"),
])
def test_set_errors_name_the_set_and_suggest_the_nearest_key(overrides, expected):
    from llm_trainer.config import load_config
    from llm_trainer.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        load_config(ROOT / "configs" / "quickstart.yaml", overrides)
    assert str(error.value).startswith(expected)


def test_yaml_errors_give_file_line_and_column_and_typos_come_first(tmp_path):
    from llm_trainer.config import load_config
    from llm_trainer.errors import ConfigError

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ndata:\n  source: a.jsonl\n   max_samples: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(broken)
    assert str(error.value) == f"{broken}:4:15: invalid YAML: mapping values are not allowed here"
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\ndata:\n  sorce: a.jsonl\nmodel:\n  base_model: tiny-llama\n")
    with pytest.raises(ConfigError) as error:
        load_config(typo)  # 'source' is then also missing: the typo is what to report
    assert str(error.value) == f"{typo}: data.sorce: unknown key; did you mean data.source? (and 1 more error)"
