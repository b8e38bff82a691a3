"""Read a data source (Hub data set or local files) into an Arrow-backed ``datasets.Dataset``.

Every row gets ``row_id`` (its 1-based position in the source: the line number for JSONL) and
``load_error`` (why the row could not be read, else null). Well-formed files take the fast Arrow path;
a file Arrow rejects (invalid JSON, invalid UTF-8, mixed types) is re-read line by line so that only
the bad rows are lost, and each one is counted.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from llm_trainer.config import DataConfig
from llm_trainer.errors import DataError

logger = logging.getLogger(__name__)

LOADERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_FIELDS = ("question", "reference_answer")

RAW_FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "reference_answer": datasets.Value("string"),
        "responses": datasets.List({"response_model": datasets.Value("string"), "response": datasets.Value("string")}),
        "row_id": datasets.Value("int64"),
        "load_error": datasets.Value("string"),
    }
)


def is_local_source(source: str) -> bool:
    path = Path(source).expanduser()
    return path.exists() or source.startswith(("/", "./", "../", "~")) or path.suffix in LOADERS


def local_files(source: str) -> list[Path]:
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data.source: file or folder not found: {source}")
    files = sorted(p for p in path.rglob("*") if p.suffix in LOADERS) if path.is_dir() else [path]
    if not files:
        raise DataError(f"data.source: no {'/'.join(LOADERS)} files in {source}")
    suffixes = {LOADERS.get(p.suffix) for p in files}
    if None in suffixes:
        raise DataError(f"data.source: unsupported file type '{path.suffix}' (use {', '.join(LOADERS)})")
    if len(suffixes) > 1:
        raise DataError(f"data.source: mixed file types in {source}; use one format per folder")
    return files


def source_fingerprint(cfg: DataConfig) -> str:
    """Content hash of local files, or the Hub id + revision: the cache key of the load step."""
    digest = hashlib.sha256(f"{cfg.source}|{cfg.split}|{cfg.revision}|{cfg.max_samples}".encode())
    if is_local_source(cfg.source):
        for file in local_files(cfg.source):
            digest.update(file.name.encode())
            with file.open("rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def load_source(cfg: DataConfig) -> datasets.Dataset:
    if is_local_source(cfg.source):
        files = local_files(cfg.source)
        dataset = _load_local(files, cfg)
    else:
        dataset = _load_hub(cfg)
        if cfg.max_samples is not None:
            dataset = dataset.select(range(min(cfg.max_samples, len(dataset))))
    if len(dataset) == 0:
        raise DataError(f"data.source: {cfg.source} holds no rows")
    if "row_id" not in dataset.column_names:
        dataset = dataset.add_column("row_id", np.arange(1, len(dataset) + 1, dtype=np.int64))
    return dataset


def _csv_as_text(path: Path) -> dict[str, Any]:
    """Answers like "8" must stay text: every CSV column is read as a string, empty cells as ""."""
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), [])
    return {"features": datasets.Features({name: datasets.Value("string") for name in header}),
            "keep_default_na": False}


def nonblank_line_numbers(path: Path, chunk_bytes: int = 1 << 26) -> np.ndarray:
    """1-based numbers of the lines that hold something, found with numpy over the raw bytes in chunks."""
    numbers, line, carry_blank = [], 1, True
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            data = np.frombuffer(chunk, dtype=np.uint8)
            ends = np.flatnonzero(data == 10)
            starts = np.concatenate([[0], ends + 1])
            stops = np.concatenate([ends, [len(data)]])
            has_text = np.array([bool(chunk[a:b].strip()) if b - a < 8 else True for a, b in zip(starts, stops)])
            if not carry_blank:  # the first piece continues a line that already had text
                has_text[0] = True
            numbers.append(np.flatnonzero(has_text[:-1]) + line)
            line += len(ends)
            carry_blank = not has_text[-1]
    if not carry_blank:
        numbers.append(np.array([line]))
    return np.concatenate(numbers).astype(np.int64) if numbers else np.zeros(0, dtype=np.int64)


def _load_hub(cfg: DataConfig) -> datasets.Dataset:
    try:
        return datasets.load_dataset(cfg.source, split=cfg.split, revision=cfg.revision)
    except Exception as exc:  # the Hub raises many types; the user needs the one line
        raise DataError(f"data.source: cannot load Hub data set '{cfg.source}': {_one_line(exc)}") from exc


def _load_local(files: list[Path], cfg: DataConfig) -> datasets.Dataset:
    loader = LOADERS[files[0].suffix]
    if any(f.stat().st_size == 0 for f in files) and all(f.stat().st_size == 0 for f in files):
        raise DataError(f"data.source: {cfg.source} is empty")
    try:
        # split="train" is the name datasets gives to local files, not the data's own split.
        dataset = datasets.load_dataset(loader, data_files=[str(f) for f in files], split="train",
                                        **(_csv_as_text(files[0]) if loader == "csv" else {}))
        if cfg.max_samples is not None:
            dataset = dataset.select(range(min(cfg.max_samples, len(dataset))))
        if len(files) == 1 and files[0].suffix == ".jsonl":
            lines = nonblank_line_numbers(files[0])
            if len(lines) >= len(dataset):  # Arrow skips blank lines: keep row_id = line number
                dataset = dataset.add_column("row_id", lines[: len(dataset)])
        return dataset
    except Exception as exc:
        if loader != "json":
            raise DataError(f"data.source: cannot read {cfg.source} as {loader}: {_one_line(exc)}") from exc
        logger.warning("Arrow could not read %s (%s); re-reading line by line", cfg.source, _one_line(exc)[:200])
    return datasets.Dataset.from_generator(
        _tolerant_json_rows,
        features=RAW_FEATURES,
        gen_kwargs={"files": [str(f) for f in files], "max_samples": cfg.max_samples,
                    "fingerprint": source_fingerprint(cfg)},
    )


def _tolerant_json_rows(files: list[str], max_samples: int | None, fingerprint: str) -> Iterator[dict[str, Any]]:
    del fingerprint  # only part of the cache key of datasets' generator cache
    emitted = 0
    for file in files:
        for row_id, record in _json_records(Path(file)):
            if max_samples is not None and emitted >= max_samples:
                return
            emitted += 1
            yield _coerce_record(record, row_id)


def _json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, parsed object or an error string) per record; a JSON array file is also accepted."""
    if path.suffix == ".json":
        try:
            document = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            document = None
        if isinstance(document, list):
            yield from enumerate(document, start=1)
            return
    with path.open("rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                yield line_number, "invalid_utf8"
            except json.JSONDecodeError:
                yield line_number, "invalid_json"


def _coerce_record(record: Any, row_id: int) -> dict[str, Any]:
    row: dict[str, Any] = {"question": None, "reference_answer": None, "responses": [], "row_id": row_id,
                           "load_error": None}
    if isinstance(record, str):
        row["load_error"] = record
        return row
    if not isinstance(record, dict):
        row["load_error"] = "not_an_object"
        return row
    for field in TEXT_FIELDS:
        value = record.get(field)
        if value is not None and not isinstance(value, str):
            row["load_error"] = row["load_error"] or f"{field}_not_a_string"
        else:
            row[field] = value
    responses = record.get("responses")
    if responses is None:
        responses = []
    if not isinstance(responses, list) or not all(_valid_response(r) for r in responses):
        row["load_error"] = row["load_error"] or "malformed_responses"
    else:
        row["responses"] = [{"response_model": r.get("response_model"), "response": r["response"]} for r in responses]
    return row


def _valid_response(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("response"), str)
            and isinstance(entry.get("response_model"), str | None))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
