"""`run_pipeline.py models compare`: registered versions side by side (issue 35 §3), as a table, a PNG and the
register step's HTML page. The versions are made directly in this session's temporary ZenML store, with the
metadata the register step records (no pipeline run needed)."""

from __future__ import annotations

import pytest

from conftest import ROOT

NAME = "models-compare-test"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BASE = {"accuracy": 0.25, "extraction_failed": 0.5, "eval_loss": 2.0, "accuracy_short": 0.2,
        "accuracy_task_arithmetic": 0.3, "count_short": 10}
VERSIONS = [  # name, trainer, fingerprint, metrics, stage, the production version it replaced
    ("0a1b2c3d4e5f6071-42-1a2b3c4d", "qlora", "1a2b3c4d9f", {"accuracy": 0.375, "extraction_failed": 0.25,
     "eval_loss": 1.5, "accuracy_short": 0.3, "accuracy_task_arithmetic": 0.5, "count_short": 10}, "archived", None),
    ("0a1b2c3d4e5f6071-42-5e6f7a8b", "qlora", "5e6f7a8b00", {"accuracy": 0.5, "extraction_failed": 0.125,
     "eval_loss": 1.25, "accuracy_short": 0.4, "accuracy_task_arithmetic": 0.625, "count_short": 10}, "production", 1),
    ("9f8e7d6c5b4a3921-7-5e6f7a8b", "grpo", "5e6f7a8b00", {"accuracy": 0.625, "extraction_failed": 0.375,
     "eval_loss": 1.75, "accuracy_short": 0.5, "count_short": 10}, "staging", None),
]


@pytest.fixture(scope="module")
def registered():
    from zenml import log_metadata
    from zenml.client import Client

    from runner import stack

    stack.init_store()
    stack.ensure_stack()
    client = Client()
    client.create_model(name=NAME)
    for name, trainer, fingerprint, metrics, stage, replaced in VERSIONS:
        version = client.create_model_version(model_name_or_id=NAME, name=name)
        metadata = {"evaluation_metrics": metrics, "base_model_metrics": BASE, "trainer": trainer,
                    "base_model": "meta-llama/Meta-Llama-3-8B-Instruct", "source_fingerprint": fingerprint}
        if replaced is not None:
            metadata["production_before"] = replaced
        log_metadata(metadata=metadata, model_version_id=version.id)
        client.update_model_version(model_name_or_id=NAME, version_name_or_id=version.id, stage=stage, force=True)
    return NAME


def models(*action: str) -> int:
    from llm_trainer.config import load_config
    from runner.arguments import parse_args
    from runner.models_cli import run_models

    args = parse_args(["models", "--config", str(ROOT / "configs" / "quickstart.yaml"),
                       "--set", f"registry.model_name={NAME}",
                       "--set", "registry.guard_metrics={extraction_failed: 0.02}", *action])
    return run_models(load_config(args.config, args.overrides), args)


def columns(line: str) -> list[str]:
    """A table line's cells (cells are separated by two spaces or more)."""
    import re

    return re.split(r"\s{2,}", line.strip())


def test_compare_table_shows_each_version_against_the_base_model(registered, capsys, tmp_path):
    png = tmp_path / "charts" / "versions.png"
    assert models("compare", "--output", str(png)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"model '{NAME}': 3 versions")
    assert columns(lines[1]) == ["#", "stage", "data", "base model", "trainer", "accuracy", "extraction_failed",
                                 "replaced"]
    assert columns(lines[2]) == ["1", "archived", "1a2b3c4d", "meta-llama/Meta-Llama-3-8B-Instruct", "qlora",
                                 "0.375 (base 0.25)", "0.25 (base 0.5)", "-"]
    assert columns(lines[3]) == ["2", "production", "5e6f7a8b", "meta-llama/Meta-Llama-3-8B-Instruct", "qlora",
                                 "0.5 (base 0.25)", "0.125 (base 0.5)", "1"]
    assert columns(lines[4]) == ["3", "staging", "5e6f7a8b", "meta-llama/Meta-Llama-3-8B-Instruct", "grpo",
                                 "0.625 (base 0.25)", "0.375 (base 0.5)", "-"]
    breakdown = lines[lines.index("accuracy per answer type, task family or complexity:") + 1:]
    assert columns(breakdown[0]) == ["metric", "v1", "v2", "v3"]
    assert columns(breakdown[1]) == ["accuracy_short", "0.3 (base 0.2)", "0.4 (base 0.2)", "0.5 (base 0.2)"]
    assert columns(breakdown[2]) == ["accuracy_task_arithmetic", "0.5 (base 0.3)", "0.625 (base 0.3)", "-"]
    assert ("production: version 2; before it: version 1 (roll back: `run_pipeline.py models promote 1`)"
            in lines)
    assert lines[-1] == f"chart: {png}"
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000


def test_promote_records_the_version_it_replaced_and_roll_back_is_one_command(registered, capsys):
    from runner.models_cli import compare_versions
    from llm_trainer.config import load_config

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [f"registry.model_name={NAME}"])
    assert models("promote", "3") == 0
    text = compare_versions(cfg, NAME)
    assert "production: version 3; before it: version 2 (roll back: `run_pipeline.py models promote 2`)" in text
    assert models("promote", "2") == 0  # the roll-back
    text = compare_versions(cfg, NAME)
    assert "production: version 2; before it: version 3" in text
    rows = {columns(line)[0]: columns(line) for line in text.splitlines()[2:5]}
    assert rows["2"][1] == "production" and rows["2"][-1] == "3" and rows["3"][1] == "archived"
    capsys.readouterr()


def test_the_register_steps_comparison_page_holds_the_same_numbers_and_the_chart(registered):
    from llm_trainer.version_compare import compare_html
    from publishing.zenml_versions import version_records

    records = version_records(NAME)
    assert [r["number"] for r in records] == [1, 2, 3]
    assert records[2]["metrics"]["accuracy"] == 0.625 and records[2]["base_metrics"]["accuracy"] == 0.25
    html = compare_html(NAME, records, "accuracy", ["extraction_failed"])
    assert "<td>0.625 (base 0.25)</td>" in html and "<td>accuracy_task_arithmetic</td>" in html
    assert "data:image/png;base64," in html and "before it: version" in html


def test_compare_without_versions_or_model(registered, capsys):
    from llm_trainer.errors import UserError
    from llm_trainer.version_compare import compare_text
    from runner.models_cli import compare_versions
    from llm_trainer.config import load_config

    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    with pytest.raises(UserError, match="no model named 'never-registered' is registered yet"):
        compare_versions(cfg, "never-registered")
    assert compare_text("empty", [], "accuracy") == "model 'empty' has no versions yet"
    with pytest.raises(UserError, match="must end in .png"):
        compare_versions(cfg, NAME, "versions.jpg")


def test_sql_and_chat_metrics_are_compared_by_what_the_gate_uses():
    from llm_trainer.version_compare import compare_png, compare_text, compared_metrics

    sql = [{"number": 1, "stage": "production", "metrics": {"execution_accuracy": 0.5, "valid_sql": 0.9,
            "execution_accuracy.basic_sql": 0.75, "count.basic_sql": 8, "exact_match.basic_sql": 0.5},
            "base_metrics": {"execution_accuracy": 0.125, "execution_accuracy.basic_sql": 0.25}}]
    gate, breakdown = compared_metrics(sql, "execution_accuracy", ["valid_sql"])
    assert gate == ["execution_accuracy", "valid_sql"] and breakdown == ["execution_accuracy.basic_sql"]
    text = compare_text("sql", sql, "execution_accuracy", ["valid_sql"])
    assert "0.5 (base 0.125)" in text and "0.9" in text and "0.75 (base 0.25)" in text
    assert "no earlier production version is recorded" in text
    chat = [{"number": 1, "stage": "staging", "metrics": {"eval_loss": 1.5, "token_f1": 0.25}, "base_metrics": {}}]
    assert compared_metrics(chat, "eval_loss") == (["eval_loss"], [])
    assert "production: no version" in compare_text("chat", chat, "eval_loss")
    assert compare_png("chat", chat, "eval_loss").startswith(PNG_MAGIC)


def test_a_local_base_model_is_named_by_its_last_two_path_parts():
    from llm_trainer.version_compare import _short_model

    built = "/home/u/.llm_trainer/zenml/local_stores/2457/prepare_base_model/base_model/df1c/b9861ae7/model"
    assert _short_model(built) == ".../b9861ae7/model"  # not just "model", which every built tiny model is called
    assert _short_model("meta-llama/Meta-Llama-3-8B-Instruct") == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert _short_model(None) == "-"
