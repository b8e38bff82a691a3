"""Loading, cleaning, formatting, de-duplication and splitting of llm_trainer.data (no tokenizer, no model)."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from llm_trainer.data import build_processor
from llm_trainer.errors import DataError

GOOD_A = {"question": "What is 2 + 2?", "reference_answer": "4",
          "responses": [{"response_model": "m", "response": "2 + 2 = 4."}]}
GOOD_B = {"question": "What is 3 × 5?", "reference_answer": "15", "responses": []}
GOOD_C = {"question": "Name a prime number.",
          "responses": [{"response_model": "m", "response": "7 is prime."}]}

# (line, expected drop reason or None to keep). Line 15 is blank: not a row, but it still counts for line numbers.
MIXED = [
    (GOOD_A, None),                                                                        # 1
    (b'{"question": "broken", "reference_answer": ', "invalid_json"),                       # 2
    (b'{"question": "caf\xff\xfe?", "reference_answer": "1"}', "invalid_utf8"),             # 3
    ([1, 2, 3], "not_an_object"),                                                          # 4
    (b"42", "not_an_object"),                                                              # 5
    ({"question": None, "reference_answer": "1"}, "missing_question"),                     # 6
    ({"reference_answer": "1"}, "missing_question"),                                       # 7
    ({"question": 17, "reference_answer": "1"}, "question_not_a_string"),                  # 8
    ({"question": "", "reference_answer": "1"}, "empty_question"),                         # 9
    ({"question": "   \t ", "reference_answer": "1"}, "empty_question"),                   # 10
    ({"question": "Object?", "reference_answer": {"a": "1"}}, "reference_answer_not_a_string"),  # 11
    ({"question": "Str responses?", "responses": "not json ["}, "malformed_responses"),   # 12
    ({"question": "No response key?", "responses": [{"response_model": "m"}]}, "malformed_responses"),  # 13
    ({"question": "Nothing to learn?", "reference_answer": "", "responses": []}, "no_target"),  # 14
    (b"", None),                                                                           # 15 (blank)
    (GOOD_B, None),                                                                        # 16
    ({**GOOD_A, "question": "  what IS 2 +   2?\n"}, "duplicate"),                         # 17
    (GOOD_C, None),                                                                        # 18
]
MIXED_DROPPED = {
    "invalid_json": 1, "invalid_utf8": 1, "not_an_object": 2, "missing_question": 2, "question_not_a_string": 1,
    "empty_question": 2, "reference_answer_not_a_string": 1, "malformed_responses": 2, "no_target": 1,
    "duplicate": 1,
}


def _process(make_config, source: Path | str, **data):
    cfg = make_config(data={"source": str(source), **data})
    processor = build_processor(cfg.data)
    raw = processor.load()
    processed, report = processor.preprocess(raw)
    return cfg, raw, processed, report


def _all_rows(processed) -> list[dict]:
    rows = [row for split in processed.values() for row in split]
    return sorted(rows, key=lambda r: r["row_id"])


def _question_splits(processed) -> dict[str, str]:
    return {q: name for name, split in processed.items() for q in split["question"]}


# --- malformed rows -----------------------------------------------------------------------------------------


def test_mixed_file_counts_every_drop_reason(make_config, write_jsonl):
    path = write_jsonl([line for line, _ in MIXED])
    _, raw, processed, report = _process(make_config, path)

    assert report["rows_read"] == 17  # every non-blank line
    assert report["rows_kept"] == 3
    assert report["dropped"] == MIXED_DROPPED
    assert sum(report["dropped"].values()) + report["rows_kept"] == report["rows_read"]
    assert sum(report["splits"].values()) == 3
    # row_id is the line number, the blank line 15 included
    assert raw["row_id"] == [n for n, (line, _) in enumerate(MIXED, start=1) if line != b""]
    rows = _all_rows(processed)
    assert [r["row_id"] for r in rows] == [1, 16, 18]
    assert [r["question"] for r in rows] == [GOOD_A["question"], GOOD_B["question"], GOOD_C["question"]]
    assert [r["reference_answer"] for r in rows] == ["4", "15", ""]
    assert set(processed["train"].column_names) == {"row_id", "question", "reference_answer", "messages"}


def test_arrow_fast_path_counts_the_same_reasons(make_config, write_jsonl):
    """A file Arrow can parse (no broken lines, no mixed types) is cleaned by the same rules."""
    lines = [
        GOOD_A,
        {"question": None, "reference_answer": "1", "responses": []},
        {"question": "", "reference_answer": "1", "responses": []},
        {"question": "  ", "reference_answer": "1", "responses": []},
        {"question": "Missing response?", "reference_answer": "1", "responses": [{"response_model": "m"}]},
        {"question": "No target?", "reference_answer": "", "responses": []},
        {"question": "WHAT is 2 + 2?", "reference_answer": "5", "responses": []},
        GOOD_B,
    ]
    _, raw, processed, report = _process(make_config, write_jsonl(lines))
    assert "load_error" not in raw.column_names  # really the Arrow path
    assert report["rows_read"] == 8
    assert report["rows_kept"] == 2
    assert report["dropped"] == {"missing_question": 1, "empty_question": 2, "malformed_responses": 1,
                                 "no_target": 1, "duplicate": 1}
    rows = _all_rows(processed)
    assert [(r["row_id"], r["reference_answer"]) for r in rows] == [(1, "4"), (8, "15")]  # first duplicate wins


def test_strict_mode_names_first_bad_line_and_reason(make_config, write_jsonl):
    path = write_jsonl([line for line, _ in MIXED])
    cfg = make_config(data={"source": str(path), "strict": True})
    processor = build_processor(cfg.data)
    with pytest.raises(DataError) as info:
        processor.preprocess(processor.load())
    message = str(info.value)
    assert "row 2 of" in message
    assert message.endswith("malformed: invalid_json")


def test_strict_mode_line_number_counts_blank_lines(make_config, write_jsonl):
    path = write_jsonl([GOOD_A, b"", GOOD_B, b"   ", {"question": 7, "reference_answer": "1"}, GOOD_C])
    cfg = make_config(data={"source": str(path), "strict": True})
    processor = build_processor(cfg.data)
    with pytest.raises(DataError, match=r"row 5 of .* is malformed: question_not_a_string$"):
        processor.preprocess(processor.load())


def test_strict_mode_line_number_on_arrow_fast_path(make_config, write_jsonl):
    # Every line is valid JSON with consistent types, so Arrow reads it; line 2 is blank.
    path = write_jsonl([GOOD_A, b"", {"question": "", "reference_answer": "1", "responses": []}, GOOD_B])
    cfg = make_config(data={"source": str(path), "strict": True})
    processor = build_processor(cfg.data)
    raw = processor.load()
    assert "load_error" not in raw.column_names
    with pytest.raises(DataError, match=r"row 3 of .* is malformed: empty_question$"):
        processor.preprocess(raw)


def test_strict_mode_lets_duplicates_pass(make_config, write_jsonl):
    path = write_jsonl([GOOD_A, GOOD_B, {**GOOD_A, "question": "WHAT  is 2 + 2?  "}])
    _, _, processed, report = _process(make_config, path, strict=True)
    assert report["rows_kept"] == 2
    assert report["dropped"] == {"duplicate": 1}
    assert [r["row_id"] for r in _all_rows(processed)] == [1, 2]


def test_only_bad_rows_is_an_error(make_config, write_jsonl):
    path = write_jsonl([{"question": "", "reference_answer": "1"}, {"question": "q?"}, b"{oops"])
    cfg = make_config(data={"source": str(path)})
    processor = build_processor(cfg.data)
    with pytest.raises(DataError, match="no usable row") as info:
        processor.preprocess(processor.load())
    assert "empty_question: 1, invalid_json: 1, no_target: 1" in str(info.value)


def test_empty_file_is_an_error(make_config, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    cfg = make_config(data={"source": str(path)})
    with pytest.raises(DataError, match="is empty"):
        build_processor(cfg.data).load()


def test_missing_path_is_an_error(make_config, tmp_path):
    cfg = make_config(data={"source": str(tmp_path / "nope.jsonl")})
    with pytest.raises(DataError, match="not found"):
        build_processor(cfg.data).load()


# --- text normalisation and formatting ------------------------------------------------------------------------


def test_nfc_normalisation_and_trimming(make_config, write_jsonl):
    decomposed = "  \tCafe\u0301 costs how much?\n "
    precomposed_shouted = "CAF\u00c9   costs how MUCH?"  # same question once NFC + case + spacing are folded
    path = write_jsonl([
        {"question": decomposed, "reference_answer": " 3 e\u0301 ", "responses": []},
        {"question": precomposed_shouted, "reference_answer": "4", "responses": []},
    ])
    _, _, processed, report = _process(make_config, path)
    assert report["dropped"] == {"duplicate": 1}
    (row,) = _all_rows(processed)
    expected = "Caf\u00e9 costs how much?"
    assert row["question"] == expected
    assert unicodedata.is_normalized("NFC", row["question"])
    assert row["reference_answer"] == "3 \u00e9"
    assert row["messages"][1] == {"role": "user", "content": expected}
    assert row["messages"][2]["content"] == "Final answer: 3 \u00e9"


ONE_ROW = {"question": "What is 6 × 7?", "reference_answer": "42",
           "responses": [{"response_model": "a", "response": "  Six sevens are 42.  "},
                         {"response_model": "b", "response": "7 + 7 + 7 + 7 + 7 + 7 = 42."}]}


@pytest.mark.parametrize(("target", "expected"), [
    ("reference_answer", "42"),
    ("response", "Six sevens are 42."),
    ("response_with_answer", "Six sevens are 42.\n\nFinal answer: 42"),
])
def test_target_selects_assistant_content(make_config, write_jsonl, target, expected):
    cfg, _, processed, _ = _process(make_config, write_jsonl([ONE_ROW]), target=target)
    (row,) = _all_rows(processed)
    assert row["messages"] == [
        {"role": "system", "content": cfg.data.system_prompt},
        {"role": "user", "content": "What is 6 × 7?"},
        {"role": "assistant", "content": expected},
    ]


def test_response_model_and_template_and_fallbacks(make_config, write_jsonl):
    lines = [ONE_ROW,
             {"question": "Only a reference?", "reference_answer": "9", "responses": []},
             {"question": "Only a response?", "reference_answer": "",
              "responses": [{"response_model": "b", "response": "Just this."}]}]
    _, _, processed, _ = _process(make_config, write_jsonl(lines), response_model="b",
                                  final_answer_template="ANSWER={answer}")
    targets = [r["messages"][-1]["content"] for r in _all_rows(processed)]
    assert targets == ["7 + 7 + 7 + 7 + 7 + 7 = 42.\n\nANSWER=42", "ANSWER=9", "Just this."]


def test_empty_system_prompt_gives_no_system_message(make_config, write_jsonl):
    _, _, processed, _ = _process(make_config, write_jsonl([ONE_ROW]), system_prompt="")
    (row,) = _all_rows(processed)
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][0]["content"] == "What is 6 × 7?"


# --- splits and sampling ----------------------------------------------------------------------------------------


def test_split_assignment_is_stable_and_follows_fractions(make_config):
    _, _, subset, sub_report = _process(make_config, make_config().data.source, max_samples=1000)
    _, _, full, full_report = _process(make_config, make_config().data.source)
    assert sub_report["rows_read"] == 1000
    assert full_report["rows_read"] == full_report["rows_kept"] == 2400
    sub_splits, full_splits = _question_splits(subset), _question_splits(full)
    assert len(sub_splits) == sub_report["rows_kept"]
    moved = {q: (s, full_splits.get(q)) for q, s in sub_splits.items() if full_splits.get(q) != s}
    assert moved == {}
    sizes = full_report["splits"]
    assert sum(sizes.values()) == 2400
    assert abs(sizes["train"] / 2400 - 0.9) <= 0.04
    assert abs(sizes["validation"] / 2400 - 0.05) <= 0.02
    assert abs(sizes["test"] / 2400 - 0.05) <= 0.02
    assert sizes == {name: len(split) for name, split in full.items()}


def test_max_samples_reads_exactly_that_many(make_config, sample_rows):
    _, raw, _, report = _process(make_config, make_config().data.source, max_samples=50)
    assert len(raw) == 50
    assert report["rows_read"] == 50
    assert raw["row_id"] == list(range(1, 51))
    assert raw["question"] == [json.loads(line)["question"] for line in sample_rows[:50]]


def test_max_samples_on_tolerant_path(make_config, write_jsonl):
    path = write_jsonl([line for line, _ in MIXED])
    _, raw, _, report = _process(make_config, path, max_samples=5)
    assert report["rows_read"] == 5
    assert raw["row_id"] == [1, 2, 3, 4, 5]
    assert report["dropped"] == {"invalid_json": 1, "invalid_utf8": 1, "not_an_object": 2}


# --- other file formats -----------------------------------------------------------------------------------------


@pytest.fixture
def first_rows(sample_rows) -> list[dict]:
    return [json.loads(line) for line in sample_rows[:300]]


def _kept(processed) -> list[tuple]:
    return [(r["row_id"], r["question"], r["reference_answer"], json.dumps(r["messages"]))
            for r in _all_rows(processed)]


def test_parquet_source_matches_jsonl(make_config, write_jsonl, first_rows, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(first_rows), tmp_path / "rows.parquet")
    _, _, from_jsonl, jsonl_report = _process(make_config, write_jsonl(first_rows))
    _, _, from_parquet, parquet_report = _process(make_config, tmp_path / "rows.parquet")
    assert jsonl_report["rows_kept"] == 300
    assert parquet_report == jsonl_report
    assert _kept(from_parquet) == _kept(from_jsonl)


def test_csv_source_matches_jsonl(make_config, write_jsonl, first_rows, tmp_path):
    import pandas as pd

    csv_rows = [{**row, "responses": json.dumps(row["responses"])} for row in first_rows]
    pd.DataFrame(csv_rows).to_csv(tmp_path / "rows.csv", index=False)
    _, _, from_jsonl, jsonl_report = _process(make_config, write_jsonl(first_rows))
    _, _, from_csv, csv_report = _process(make_config, tmp_path / "rows.csv")
    assert csv_report == jsonl_report
    assert _kept(from_csv) == _kept(from_jsonl)


def test_max_chars_drops_too_long_rows_even_in_strict_mode(make_config, write_jsonl):
    # GOOD_A: 14 + 27 characters (question + target) = 41; GOOD_B: 14 + 16 = 30, exactly the limit.
    path = write_jsonl([GOOD_A, GOOD_B])
    _, _, processed, report = _process(make_config, path, max_chars=30, strict=True)
    assert report["dropped"] == {"too_long": 1}
    assert [r["row_id"] for r in _all_rows(processed)] == [2]


def test_json_array_file_matches_jsonl(make_config, write_jsonl, first_rows, tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps(first_rows))
    _, _, from_jsonl, jsonl_report = _process(make_config, write_jsonl(first_rows))
    _, _, from_json, json_report = _process(make_config, tmp_path / "rows.json")
    assert json_report == jsonl_report and json_report["rows_kept"] == 300
    assert _kept(from_json) == _kept(from_jsonl)


def test_folder_of_files_reads_every_file_and_refuses_mixed_formats(make_config, first_rows, tmp_path):
    folder = tmp_path / "shards"
    (folder / "part").mkdir(parents=True)
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first_rows[:120]))
    (folder / "part" / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first_rows[120:]))
    (folder / "README.md").write_text("not data")  # other files are ignored
    _, raw, processed, report = _process(make_config, folder)
    assert len(raw) == 300 and report["rows_kept"] == 300
    assert sorted(r["question"] for r in _all_rows(processed)) == sorted(r["question"] for r in first_rows)

    (folder / "c.csv").write_text("question\nWhat?\n")
    with pytest.raises(DataError, match=r"^data.source: mixed file types in .*; use one format per folder$"):
        _process(make_config, folder)


# --- Hub sources (no network: datasets.load_dataset is replaced) --------------------------------------------------


def test_hub_source_passes_split_revision_and_max_samples(make_config, monkeypatch, first_rows):
    import datasets

    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_list(first_rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    _, raw, _, report = _process(make_config, "facebook/natural_reasoning", split="train", revision="abc123",
                                 max_samples=50)
    assert calls == [("facebook/natural_reasoning", {"split": "train", "revision": "abc123"})]
    assert len(raw) == 50 and raw["row_id"] == list(range(1, 51)) and report["rows_kept"] == 50


def test_hub_failure_is_one_line(make_config, monkeypatch):
    import datasets

    def offline(path, **kwargs):
        raise ConnectionError("Couldn't reach 'facebook/natural_reasoning' on the Hub\n(LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as error:
        _process(make_config, "facebook/natural_reasoning")
    assert str(error.value) == ("data.source: cannot load Hub data set 'facebook/natural_reasoning': Couldn't reach "
                                "'facebook/natural_reasoning' on the Hub (LocalEntryNotFoundError)")


# --- reliability, round two: encodings, compressed shards, empty splits -----------------------------------------

LATIN1_CAFE = '{"question": "Is this a café?", "reference_answer": "yes", "responses": []}'.encode("latin-1")


def _numbered(n: int) -> list[dict]:
    return [{"question": f"What is {i} + {i}?", "reference_answer": str(2 * i), "responses": []} for i in range(n)]


def test_one_latin1_row_among_valid_json_is_dropped_as_invalid_utf8(make_config, write_jsonl):
    """Every line is valid JSON, so Arrow reads the file; it does not check UTF-8, the loader does."""
    path = write_jsonl([*_numbered(3), LATIN1_CAFE, *_numbered(9)[3:]])
    _, _, processed, report = _process(make_config, path)
    assert report["rows_read"] == 10 and report["rows_kept"] == 9
    assert report["dropped"] == {"invalid_utf8": 1}
    assert [r["row_id"] for r in _all_rows(processed)] == [1, 2, 3, 5, 6, 7, 8, 9, 10]

    with pytest.raises(DataError, match=r"^data.strict: row 4 of .* is malformed: invalid_utf8$"):
        _process(make_config, path, strict=True)


def test_one_latin1_row_in_a_csv_is_dropped_as_invalid_utf8(make_config, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(b"question,reference_answer\nWhat is 1 + 1?,2\nIs this a caf\xe9?,yes\nWhat is 2 + 2?,4\n")
    _, _, processed, report = _process(make_config, path)
    assert report["dropped"] == {"invalid_utf8": 1} and report["rows_kept"] == 2
    assert [r["row_id"] for r in _all_rows(processed)] == [1, 3]
    with pytest.raises(DataError, match=r"row 2 of .* is malformed: invalid_utf8$"):
        _process(make_config, path, strict=True)


def test_compressed_and_upper_case_shards_are_all_read(make_config, first_rows, tmp_path):
    import gzip

    import zstandard

    def lines(rows) -> bytes:
        return "".join(json.dumps(r) + "\n" for r in rows).encode()

    folder = tmp_path / "shards"
    (folder / "part").mkdir(parents=True)
    (folder / "a.jsonl").write_bytes(lines(first_rows[:100]))
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(lines(first_rows[100:200])))
    (folder / "part" / "c.JSONL").write_bytes(lines(first_rows[200:250]))
    (folder / "part" / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines(first_rows[250:])))
    _, raw, processed, report = _process(make_config, folder)
    assert len(raw) == 300 and report["rows_kept"] == 300
    assert sorted(r["question"] for r in _all_rows(processed)) == sorted(r["question"] for r in first_rows)

    single = tmp_path / "rows.jsonl.gz"
    single.write_bytes(gzip.compress(b"\n" + lines(first_rows[:20])))  # line 1 blank: row_id = line number
    _, raw, _, report = _process(make_config, single)
    assert report["rows_read"] == 20 and raw["row_id"][:3] == [2, 3, 4]
    array = tmp_path / "rows.json.gz"
    array.write_bytes(gzip.compress(json.dumps(first_rows[:20]).encode()))
    assert _process(make_config, array)[3]["rows_read"] == 20


def test_a_file_in_a_folder_that_cannot_be_read_is_one_line_naming_it(make_config, first_rows, tmp_path, caplog):
    import bz2

    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first_rows[:100]))
    (folder / "README.md").write_text("# card")  # documentation: skipped, but said
    with caplog.at_level("WARNING", logger="llm_trainer"):
        assert _process(make_config, folder)[3]["rows_read"] == 100
    assert any("skipping README.md" in r.getMessage() for r in caplog.records)
    (folder / "b.jsonl.bz2").write_bytes(bz2.compress(b"{}\n"))
    with pytest.raises(DataError, match=r"^data.source: cannot read b.jsonl.bz2 in .*: unsupported file type") as info:
        _process(make_config, folder)
    assert "\n" not in str(info.value)


def _tokenizer(cfg, processed):
    from llm_trainer.base_model import prepare_tokenizer

    return prepare_tokenizer(cfg.model, processed["train"])  # the tiny BPE, trained on these rows


def test_an_empty_train_split_is_an_error_at_the_end_of_processing(make_config, write_jsonl):
    cfg, _, processed, _ = _process(make_config, write_jsonl(_numbered(6)),
                                    splits={"train": 0.01, "validation": 0.01, "test": 0.98})
    assert not len(processed["train"])
    with pytest.raises(DataError, match=r"^data.splits: the train split is empty: no kept row hashed into it "
                                        r"\(train: 0 rows at 0.01, validation: 0 rows at 0.01, test: 6 rows at "
                                        r"0.98\); add rows or raise data.splits.train$"):
        build_processor(cfg.data).tokenize(processed, _tokenizer(cfg, processed))


def test_no_training_sample_left_after_tokenization_is_an_error(make_config, write_jsonl):
    cfg, _, processed, _ = _process(make_config, write_jsonl(_numbered(20)), max_seq_length=16)
    with pytest.raises(DataError, match=r"^data.max_seq_length: no training sample left: \d+ train rows, all "
                                        r"dropped in tokenization \(too_long: \d+\) at data.max_seq_length = 16"):
        build_processor(cfg.data).tokenize(processed, _tokenizer(cfg, processed))


def test_a_needed_split_that_is_empty_is_named_with_why(make_config, write_jsonl):
    from llm_trainer.data.base import check_needed_splits

    cfg, _, processed, _ = _process(make_config, write_jsonl(_numbered(6)))
    tokenized, _ = build_processor(cfg.data).tokenize(processed, _tokenizer(cfg, processed))
    check_needed_splits(processed, tokenized, cfg.data, ["train"], "train")
    with pytest.raises(DataError, match=r"^data.splits: the test split is empty: no kept row hashed into it "
                                        r"\(train: \d rows at 0.9, validation: \d rows at 0.05, test: 0 rows at "
                                        r"0.05\); full needs test rows$"):
        check_needed_splits(processed, tokenized, cfg.data, ["train", "test"], "full")
