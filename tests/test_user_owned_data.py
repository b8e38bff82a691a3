"""Data the user owns: `use --merge` and `use --output` never delete or overwrite the user's files, answers that are
numbers or lists are read as text and kept, and a `--summary` path or a full disk is one line, exit 2."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.cli import one_error_line, run_cli, use_cli

# --- use --merge DIR ----------------------------------------------------------------------------------------------


def _no_adapter(tmp_path: Path):
    """Where the refusals come before any adapter or model loads, the adapter folder is never read."""
    return SimpleNamespace(path=tmp_path / "adapter-never-read")


def test_merge_refuses_a_file_or_a_folder_with_files_before_any_model_loads(tmp_path):
    from llm_trainer.chat import MERGED_MARKER

    models = tmp_path / "models"
    models.mkdir()
    (models / "mine.safetensors").write_bytes(b"the user's model")
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's notes")
    before = sorted(p.name for p in tmp_path.iterdir())
    not_empty = ("the folder is not empty; give a new or empty one, or add --overwrite to replace a merged model "
                 "written there before")
    for target, extra, why in ((models, [], not_empty), (f"{models}/missing/..", [], not_empty),
                               (notes, [], "a file is there; give a folder that is new or empty"),
                               (notes, ["--overwrite"], "a file is there; give a folder that is new or empty"),
                               (models, ["--overwrite"], "the folder holds no merged model written by `use --merge` "
                                                         f"(no {MERGED_MARKER}); it is left as it is, even with "
                                                         "--overwrite")):
        result = use_cli(_no_adapter(tmp_path), "--merge", str(target), *extra)
        assert one_error_line(result) == f"error: --merge {target}: {why}"
    assert (models / "mine.safetensors").read_bytes() == b"the user's model"
    assert notes.read_text() == "the user's notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no .NAME.old-PID left behind


class _Saves:
    """Stands in for the merged model and its tokenizer: merging and saving, without loading a model."""

    def __init__(self, name: str):
        self.name = name

    def merge_and_unload(self):
        return self

    def save_pretrained(self, folder, **kwargs):
        (Path(folder) / self.name).write_text("new")


def test_merge_overwrite_replaces_only_a_merged_model_of_this_project(tmp_path, monkeypatch, make_config):
    from llm_trainer import modeling
    from llm_trainer.chat import MERGED_MARKER, merge_adapter
    from llm_trainer.errors import UserError

    devices = []
    monkeypatch.setattr(modeling, "load_model", lambda name, cfg, device_map=None: devices.append(device_map))
    monkeypatch.setattr(modeling, "attach_adapter", lambda model, path: _Saves("model.safetensors"))
    monkeypatch.setattr(modeling, "load_tokenizer", lambda path, cfg: _Saves("tokenizer.json"))
    cfg = make_config().model

    def merge(folder, overwrite=False):
        return merge_adapter(cfg, "tiny-llama", tmp_path / "adapter", folder, overwrite)

    merged = tmp_path / "merged"
    merged.mkdir()  # an empty folder is fine
    assert merge(merged) == merged and (merged / MERGED_MARKER).is_file()
    (merged / "model.safetensors").write_text("stale")
    with pytest.raises(UserError, match=r"the folder is not empty; .* add --overwrite"):
        merge(merged)
    assert merge(merged, overwrite=True) == merged
    assert (merged / "model.safetensors").read_text() == "new"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    with pytest.raises(UserError, match=f"no {MERGED_MARKER}"):
        merge(mine, overwrite=True)
    assert (mine / "config.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "mine"]
    assert devices == [{"": "cpu"}] * 2  # merged on the CPU: a GPU that trained in 4-bit may not hold the 16-bit base


# --- use --input F --output F -------------------------------------------------------------------------------------


def test_use_output_that_is_the_input_file_is_refused(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    text = '{"prompt": "What is 2 + 2?"}\nnot json\n{"prompt": 5}\n'
    prompts.write_text(text)
    (tmp_path / "link.jsonl").symlink_to(prompts)
    for output in (prompts, tmp_path / "missing" / ".." / "prompts.jsonl", tmp_path / "link.jsonl"):
        result = use_cli(_no_adapter(tmp_path), "--input", str(prompts), "--output", str(output))
        assert one_error_line(result) == f"error: --output {output} is the --input file; answers go to another file"
    assert prompts.read_text() == text


# --- reference answers that are not strings -----------------------------------------------------------------------

ANSWERS = ["36", "x = 2", "\\frac{1}{2}", "True", "4.5", "-3", "Paris", "[1, 2]", "null", '"quoted"', "1e3", " 7 "]


def _rows(answer_of) -> list[dict]:
    return [{"question": f"What is question number {i}?", "reference_answer": answer_of(i), "responses": []}
            for i in range(60)]


def _answers(make_config, path: Path) -> tuple[dict, dict[int, str]]:
    from llm_trainer.data import build_processor

    processor = build_processor(make_config(data={"source": str(path)}).data)
    processed, report = processor.preprocess(processor.load())
    return report, {row["row_id"]: row["reference_answer"] for split in processed.values() for row in split}


@pytest.mark.parametrize(("name", "answer_of", "expected_of", "converted"), [
    ("one number in 60", lambda i: 42 if i == 10 else ANSWERS[i % 12],
     lambda i: "42" if i == 10 else ANSWERS[i % 12].strip(), 1),
    ("lists in 30 of 60", lambda i: [str(i), "x"] if i % 2 else ANSWERS[i % 12],
     lambda i: f"{i}, x" if i % 2 else ANSWERS[i % 12].strip(), 30),
    ("numbers only", lambda i: i * 1.5 if i % 2 else i, lambda i: str(i * 1.5 if i % 2 else i), 60),
])
def test_answers_that_are_numbers_or_lists_of_strings_are_read_as_text_and_kept(
        make_config, write_jsonl, name, answer_of, expected_of, converted):
    report, answers = _answers(make_config, write_jsonl(_rows(answer_of)))
    assert (report["rows_read"], report["rows_kept"], report["dropped"]) == (60, 60, {})
    assert report["converted"] == {"reference_answer_converted": converted}
    assert answers == {i + 1: expected_of(i) for i in range(60)}  # "36" stays "36", '"quoted"' keeps its quotes


def test_answers_that_are_objects_or_booleans_are_still_dropped(make_config, write_jsonl):
    rows = _rows(lambda i: {"value": 1} if i == 3 else (True if i == 4 else [1, 2] if i == 5 else ANSWERS[i % 12]))
    report, answers = _answers(make_config, write_jsonl(rows))
    assert (report["rows_kept"], report["dropped"]) == (57, {"reference_answer_not_a_string": 3})
    assert report["converted"] == {} and answers[1] == "36"


@pytest.mark.slow
def test_process_summary_counts_converted_answers(write_jsonl, tmp_path):
    source = write_jsonl(_rows(lambda i: 42 if i == 10 else ANSWERS[i % 12]))
    summary_path = tmp_path / "summary.json"
    result = run_cli("process", "--config", "configs/quickstart.yaml", "--set", f"data.source={source}",
                     "--summary", str(summary_path))
    assert result.returncode == 0, result.stderr[-3000:]
    preprocess = json.loads(summary_path.read_text())["steps"]["preprocess"]
    assert (preprocess["rows_kept"], preprocess["converted"]) == (60, {"reference_answer_converted": 1})
    assert '"converted": {"reference_answer_converted": 1}' in result.stdout
    assert "1 reference answer(s) given as a number or a list of strings were read as text" in result.stderr


# --- --summary PATH -----------------------------------------------------------------------------------------------


def test_a_summary_path_that_cannot_take_a_file_is_refused_before_anything_runs(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (tmp_path / "a-file").write_text("")
    for path, why in ((folder, f"a folder is there; give a file path, e.g. {folder / 'summary.json'}"),
                      (tmp_path / "a-file" / "summary.json", f"{tmp_path / 'a-file'} is a file, not a folder")):
        result = run_cli("process", "--config", "configs/quickstart.yaml", "--summary", str(path), timeout=300)
        assert one_error_line(result) == f"error: --summary {path}: {why}"
        assert "load_data" not in result.stdout + result.stderr


# --- a full disk --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, where every write fails with ENOSPC")
def test_a_full_disk_at_the_run_folder_lock_is_one_line(tmp_path, make_config):
    from llm_trainer.errors import UserError
    from llm_trainer.training import run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.lock").symlink_to("/dev/full")
    with pytest.raises(UserError) as error:
        run.run_training(make_config(), None, None, run_dir, base_model="unused")
    assert str(error.value) == f"cannot write the run folder's lock {run_dir / 'run.lock'}: No space left on device"


def test_a_full_disk_anywhere_is_one_line(monkeypatch, capsys):
    from runner import cli

    def write_in_a_step(args):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/outputs/quickstart/loss_curve.png")
        except OSError as exc:
            raise RuntimeError("Failed to run step 'train_model'") from exc

    monkeypatch.setattr(cli, "run_command", write_in_a_step)
    assert cli.main(["train", "--config", "configs/quickstart.yaml"]) == 2
    assert capsys.readouterr().err == ("error: cannot write /outputs/quickstart/loss_curve.png: No space left on "
                                       "device\n")
