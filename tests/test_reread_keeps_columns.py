"""A JSONL file that Arrow rejects (one bad line) is re-read row by row: the bad row is dropped and counted, and the
good rows keep every column they had, not only the reasoning fields (the SQL and chat columns, the task family)."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import ROOT

BAD_LINES = [b'{"question": "caf\xff?", "reference_answer": "1"}', b'{"unterminated": ', b"[1, 2]"]


def _with_bad_lines(source, target, keep: int = 60):
    lines = source.read_bytes().splitlines()[:keep]
    target.write_bytes(b"\n".join(lines[:10] + BAD_LINES[:1] + lines[10:30] + BAD_LINES[1:] + lines[30:]) + b"\n")
    return len(lines)


@pytest.mark.parametrize("config, source, columns", [
    ("quickstart", "data/sample/natural_reasoning_sample.jsonl", {"task"}),
    ("sql_quickstart", "data/sql_sample/sql_sample.jsonl", {"sql_context", "sql_complexity"}),
    ("chat_quickstart", "data/chat_sample/messages.jsonl", set()),
])
def test_bad_lines_are_counted_and_the_good_rows_keep_their_columns(config, source, columns, tmp_path, caplog):
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor

    path = tmp_path / "data.jsonl"
    good = _with_bad_lines(ROOT / source, path)
    cfg = load_config(ROOT / "configs" / f"{config}.yaml", [f"data.source={path}", "data.deduplicate=false"])
    processor = build_processor(cfg.data)
    with caplog.at_level(logging.WARNING):
        raw = processor.load()
    assert "re-reading row by row" in caplog.text and "mixed types" not in caplog.text
    original = [json.loads(line) for line in (ROOT / source).read_text().splitlines()[:good]]
    assert set(original[0]) <= set(raw.column_names)  # every source column survives the re-read
    assert len(raw) == good + 3 and raw["row_id"] == list(range(1, good + 4))  # line numbers, in order
    assert [e for e in raw["load_error"] if e] == ["invalid_utf8", "invalid_json", "not_an_object"]
    first = raw[0]
    assert {k: first[k] for k in original[0]} == original[0]  # values as the source had them

    processed, report = processor.preprocess(raw)
    clean = tmp_path / "clean.jsonl"  # the same good lines, read by Arrow directly: the reference
    clean.write_bytes(b"\n".join((ROOT / source).read_bytes().splitlines()[:good]) + b"\n")
    reference = build_processor(load_config(ROOT / "configs" / f"{config}.yaml", [
        f"data.source={clean}", "data.deduplicate=false"]).data)
    expected, expected_report = reference.preprocess(reference.load())
    assert report["dropped"] == {**expected_report["dropped"], "invalid_utf8": 1, "invalid_json": 1,
                                 "not_an_object": 1}
    assert report["rows_kept"] == expected_report["rows_kept"] > good // 2
    assert columns <= set(processed["train"].column_names)
    assert processed["train"].column_names == expected["train"].column_names

    def kept(splits) -> list:
        return sorted(json.dumps([row[c] for c in splits["train"].column_names if c != "row_id"])
                      for split in splits.values() for row in split)

    assert kept(processed) == kept(expected)  # the same rows, with the same values in every column


def test_a_column_of_mixed_types_survives_the_re_read(make_config, write_jsonl):
    from llm_trainer.data import build_processor

    rows = [{"question": f"What is {i} + 1?", "reference_answer": str(i + 1), "responses": [],
             "meta": {"source": i} if i % 2 else f"text {i}"} for i in range(12)]
    path = write_jsonl([*rows[:5], b'{"question": "caf\xff?"}', *rows[5:]])
    raw = build_processor(make_config(data={"source": str(path)}).data).load()
    assert [m for m, e in zip(raw["meta"], raw["load_error"]) if e is None] == [r["meta"] for r in rows]


def test_where_the_readable_rows_cannot_load_together_the_reasoning_fields_are_kept(make_config, write_jsonl,
                                                                                     monkeypatch, caplog):
    from llm_trainer.data import build_processor, sources

    monkeypatch.setattr(sources, "_reread_json", lambda files, max_samples: None)  # as if Arrow refused them
    rows = [{"question": f"What is {i} + 1?", "reference_answer": str(i + 1), "responses": [], "task": "sums"}
            for i in range(12)]
    path = write_jsonl([*rows[:5], b'{"question": "caf\xff?"}', *rows[5:]])
    processor = build_processor(make_config(data={"source": str(path)}).data)
    with caplog.at_level(logging.WARNING):
        raw = processor.load()
    assert "columns of mixed types; only the reasoning fields" in caplog.text  # what is lost is said
    assert "task" not in raw.column_names and len(raw) == 13
    _, report = processor.preprocess(raw)
    assert report["rows_kept"] == 12 and report["dropped"] == {"invalid_utf8": 1}


def test_a_file_with_no_readable_record_is_all_counted(make_config, write_jsonl):
    from llm_trainer.data import build_processor
    from llm_trainer.errors import DataError

    path = write_jsonl([b"not json", b'{"question": "caf\xff?"}'])
    processor = build_processor(make_config(data={"source": str(path)}).data)
    raw = processor.load()
    assert raw["load_error"] == ["invalid_json", "invalid_utf8"] and raw["row_id"] == [1, 2]
    with pytest.raises(DataError, match="no usable row"):
        processor.preprocess(raw)
