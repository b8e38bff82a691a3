"""The process pipeline end to end through the CLI, on a temporary ZenML store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_pipeline.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def dirty_source(tmp_path_factory):
    """300 sample rows plus one row of each kind of damage."""
    lines = (ROOT / "data/sample/natural_reasoning_sample.jsonl").read_bytes().splitlines()[:300]
    first = json.loads(lines[0])
    bad = [
        b"{not json",
        b'{"question": "caf\xff", "reference_answer": "1"}',
        b"[1, 2, 3]",
        json.dumps({"question": None, "reference_answer": "1"}).encode(),
        json.dumps({"question": 42, "reference_answer": "1"}).encode(),
        json.dumps({"question": "   ", "reference_answer": "1"}).encode(),
        json.dumps({"question": "Is it?", "reference_answer": "", "responses": []}).encode(),
        json.dumps({"question": "Why?", "responses": "not a list"}).encode(),
        json.dumps({**first, "question": "  " + first["question"].upper() + "  "}).encode(),
    ]
    path = tmp_path_factory.mktemp("data") / "dirty.jsonl"
    path.write_bytes(b"\n".join(lines + bad) + b"\n")
    return path


def test_process_counts_every_drop_and_reruns_cached(dirty_source, tmp_path):
    summary_path = tmp_path / "summary.json"
    first = run_cli("process", "--config", "configs/quickstart.yaml", "--set", f"data.source={dirty_source}",
                    "--summary", str(summary_path))
    assert first.returncode == 0, first.stderr[-3000:]
    output = first.stdout + first.stderr
    assert "pickle" not in output.lower()

    summary = json.loads(summary_path.read_text())
    assert summary["pipeline"] == "process_pipeline" and summary["status"] == "completed"
    pre = summary["steps"]["preprocess"]
    assert pre["rows_read"] == 309
    assert pre["dropped"] == {"invalid_json": 1, "invalid_utf8": 1, "not_an_object": 1, "missing_question": 1,
                              "question_not_a_string": 1, "empty_question": 1, "no_target": 1,
                              "malformed_responses": 1, "duplicate": 1}
    assert pre["rows_kept"] == 300 == sum(pre["splits"].values())
    train = summary["steps"]["tokenize"]["splits"]["train"]
    assert train["samples"] == pre["splits"]["train"]
    assert train["packing_efficiency"] >= 0.9

    from zenml.client import Client

    run = Client().get_pipeline_run(summary["run_id"])
    assert run.steps["preprocess"].run_metadata["dropped"]["duplicate"] == 1
    tokenized = run.steps["tokenize"].outputs["tokenized_dataset"][0]
    assert tokenized.materializer.import_path.endswith("HFDatasetMaterializer")
    assert run.steps["tokenize"].outputs["tokenizer"][0].materializer.import_path.endswith("HFTokenizerMaterializer")
    loaded = tokenized.load()
    assert len(loaded["train"]) == train["blocks"]

    # What the dashboard shows for the process steps: drop counts and the token-length histogram.
    histograms = summary["steps"]["tokenize"]["length_histograms"]
    assert sum(histograms["train"]["counts"]) == train["samples"] + sum(train["dropped"].values())
    assert len(histograms["train"]["edges"]) == len(histograms["train"]["counts"]) + 1
    for step_name, output in (("preprocess", "drop_counts"), ("tokenize", "token_lengths")):
        version = run.steps[step_name].outputs[output][0]
        assert "data:image/png;base64," in version.load()
        assert [v.type.value for v in version.visualizations] == ["html"]

    again = run_cli("process", "--config", "configs/quickstart.yaml", "--set", f"data.source={dirty_source}",
                    "--summary", str(summary_path))
    assert again.returncode == 0, again.stderr[-3000:]
    steps = json.loads(summary_path.read_text())["steps"]
    assert {name: figures["status"] for name, figures in steps.items()} == {
        "fingerprint_source": "completed", "load_data": "cached", "preprocess": "cached", "tokenize": "cached",
        "prepare_base_model": "cached"}
    assert steps["preprocess"]["dropped"] == pre["dropped"]


def test_changed_file_content_is_not_served_from_cache(dirty_source, tmp_path):
    source = tmp_path / "grow.jsonl"
    source.write_bytes(dirty_source.read_bytes())
    summary_path = tmp_path / "summary.json"
    assert run_cli("process", "--config", "configs/quickstart.yaml", "--set", f"data.source={source}",
                   "--summary", str(summary_path)).returncode == 0
    with source.open("a") as handle:
        handle.write(json.dumps({"question": "What is 1000 + 1?", "reference_answer": "1001"}) + "\n")
    result = run_cli("process", "--config", "configs/quickstart.yaml", "--set", f"data.source={source}",
                     "--summary", str(summary_path))
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads(summary_path.read_text())["steps"]
    assert steps["load_data"]["status"] == "completed"
    assert steps["preprocess"]["rows_kept"] == 301


def test_strict_mode_fails_with_the_row_number(dirty_source):
    result = run_cli("process", "--config", "configs/quickstart.yaml", "--set", f"data.source={dirty_source}",
                     "--set", "data.strict=true")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: data.strict: row 301 of {dirty_source} is malformed: invalid_json")
    assert "Traceback" not in result.stderr
