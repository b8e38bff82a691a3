"""Resuming and the run folder: training.resume takes a checkpoint folder, resume never reads a checkpoint (torch
pickles) from outside the run folder, and a training run holds its run folder. File modes and the run-folder lock
itself are in test_fsutil.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import ROOT


def test_resume_never_reads_a_checkpoint_from_outside_the_run_folder(tmp_path, make_config):
    from llm_trainer.training.kit import COMPLETE_MARKER, resume_checkpoint

    elsewhere, run_dir = tmp_path / "elsewhere", tmp_path / "run"
    for folder in (elsewhere / "checkpoint-8", run_dir / "checkpoints" / "checkpoint-2"):
        folder.mkdir(parents=True)
        (folder / COMPLETE_MARKER).write_text("done")
    (run_dir / "checkpoints" / "checkpoint-9").symlink_to(elsewhere / "checkpoint-8")
    training = make_config().training
    assert resume_checkpoint(training, run_dir / "checkpoints") == str(run_dir / "checkpoints" / "checkpoint-2")
    linked_run = tmp_path / "linked"
    linked_run.mkdir()
    (linked_run / "checkpoints").symlink_to(elsewhere)
    assert resume_checkpoint(training, linked_run / "checkpoints") is None
    assert (elsewhere / "checkpoint-8" / COMPLETE_MARKER).exists()  # and nothing outside was removed


def test_readme_says_what_no_pickle_covers():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## What happens when..."):text.index("## Extending")]
    assert "checkpoints hold torch pickles" in section and "from the run folder only" in section


def test_resume_takes_a_checkpoint_folder(tmp_path, make_config):
    from llm_trainer.training.kit import resume_checkpoint

    checkpoint = tmp_path / "checkpoint-8"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    cfg = make_config(training={"resume": str(checkpoint)})
    assert resume_checkpoint(cfg.training, tmp_path / "elsewhere" / "checkpoints") == str(checkpoint)
    assert resume_checkpoint(make_config(training={"resume": "never"}).training, tmp_path) is None


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
