"""The Colab notebook runs top to bottom on CPU with the quickstart config (its parameter cell replaced)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

NOTEBOOK = ROOT / "notebooks" / "llama3_reasoning_finetuning.ipynb"


def test_notebook_runs_the_quickstart_top_to_bottom(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    home = tmp_path / "home"
    monkeypatch.setenv("LLM_TRAINER_HOME", str(home))
    monkeypatch.setenv("ZENML_CONFIG_PATH", str(home / "zenml"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    # a fresh store builds its own base model: the short build
    overrides = ["training.max_steps=6", "training.eval_steps=3", "training.save_steps=3",
                 "evaluation.max_samples=8", "evaluation.max_new_tokens=24", f"output_dir={tmp_path / 'outputs'}",
                 "model.tiny.pretrain_epochs=3", "model.tiny.pretrain_max_tokens=20000"]
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(
        f'CONFIG = "configs/quickstart.yaml"\nOVERRIDES = {overrides!r}'))

    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()

    shown = json.dumps([cell.get("outputs", []) for cell in notebook.cells if cell.cell_type == "code"])
    assert "Traceback" not in shown  # ZenML's rich tracebacks show as display data, not as cell errors
    text = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.get("outputs", []) if output.get("output_type") == "stream")
    assert "quickstart: tiny-llama, 4-bit=True" in text
    assert "GPU: none (CPU)" in text
    assert "completed" in text
    assert "loss points logged in MLflow run" in text
    assert re.search(r"^Q: A shop sells pens.*\nA:", text, re.MULTILINE)  # the adapter was asked and replied
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the loss curve
    assert (home / "mlflow.db").exists() and (home / "zenml").exists()
    assert (tmp_path / "outputs" / "quickstart" / "notebook-summary.json").is_file()  # nothing written in the repo
