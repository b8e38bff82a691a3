"""Empty splits: stored and read back by the dataset materializer, and a pipeline that needs the empty split stops
before training or loading a model, in one line. Data-level cases are in test_data_processing.py."""

from __future__ import annotations

import re

import pytest

from helpers.cli import QUICK, one_error_line, run_cli


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
