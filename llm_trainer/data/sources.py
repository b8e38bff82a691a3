"""Read a data source (Hub data set or local files) into an Arrow-backed ``datasets.Dataset``.

Every row gets ``row_id`` (its 1-based position in the source: the line number for JSONL) and
``load_error`` (why the row could not be read, else null); a row read row by row whose reference answer was a
number or a list of strings gets it as text, and ``load_note`` says so (``reference_answer_converted``). Well-formed files take the fast Arrow path;
a file Arrow rejects (invalid JSON, mixed types), reads with invalid UTF-8 in it (Arrow does not check
the encoding) or reads with a question or answer that is not text (one number among strings makes ``datasets``
decode every answer as JSON: "36" becomes 36) is re-read line by line so that only the bad rows are lost, and each one is counted; the good
rows keep every column they had (through a clean temporary copy that Arrow reads as it would the source).
JSON files may be gzip or zstd compressed (``.jsonl.gz``, ``.json.zst``); extensions match in any case.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from llm_trainer.config import DataConfig
from llm_trainer.errors import DataError, exception_chain, one_line

logger = logging.getLogger(__name__)

LOADERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
COMPRESSED = {".gz", ".zst"}  # JSON only: Arrow reads them, and so does the line-by-line path
READABLE = ".jsonl, .json (both also .gz or .zst), .parquet, .csv"
# Shipped beside data sets; skipped with a warning rather than refused.
DOC_SUFFIXES = {".md", ".rst"}
DOC_NAMES = ("readme", "license", "licence", "notice", "copying", "changelog", "citation")
TEXT_FIELDS = ("question", "reference_answer")
CONVERTED = "reference_answer_converted"

RAW_FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "reference_answer": datasets.Value("string"),
        "responses": datasets.List({"response_model": datasets.Value("string"), "response": datasets.Value("string")}),
        "row_id": datasets.Value("int64"),
        "load_error": datasets.Value("string"),
        "load_note": datasets.Value("string"),
    }
)


def file_format(path: Path) -> str | None:
    """'json', 'parquet' or 'csv' from the file name (any case; JSON may end in .gz or .zst), else None."""
    suffixes = [s.lower() for s in Path(path).suffixes[-2:]]
    if suffixes and suffixes[-1] in COMPRESSED:
        return "json" if len(suffixes) == 2 and LOADERS.get(suffixes[0]) == "json" else None
    return LOADERS.get(suffixes[-1]) if suffixes else None


def is_local_source(source: str) -> bool:
    """Whether ``data.source`` names local files (an existing path, a path-like or a data file name)."""
    path = Path(source).expanduser()
    return path.exists() or source.startswith(("/", "./", "../", "~")) or file_format(path) is not None


def local_files(source: str) -> list[Path]:
    """The data files of a local source (one file, or a folder's), refused in one line if not readable."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data.source: file or folder not found: {source}")
    files = _folder_files(path, source) if path.is_dir() else [path]
    if not files:
        raise DataError(f"data.source: no data files in {source} (readable: {READABLE})")
    if file_format(files[0]) is None:
        raise DataError(f"data.source: unsupported file type '{''.join(path.suffixes[-2:])}' (readable: {READABLE})")
    if len({file_format(p) for p in files}) > 1:
        raise DataError(f"data.source: mixed file types in {source}; use one format per folder")
    zst = next((p for p in files if p.suffix.lower() == ".zst"), None)
    if zst is not None and importlib.util.find_spec("zstandard") is None:
        raise DataError(f"data.source: reading {zst.name} needs the zstandard package (pip install zstandard)")
    return files


def _folder_files(folder: Path, source: str) -> list[Path]:
    """Every data file under ``folder``; hidden paths are not data, documentation is skipped with a warning,
    and any other file is an error, so no shard is ever left out silently."""
    files, unsupported = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if file_format(path) is not None:
            files.append(path)
        elif path.suffix.lower() in DOC_SUFFIXES or path.name.lower().startswith(DOC_NAMES):
            logger.warning("data.source: skipping %s in %s (documentation, not data)", relative, source)
        else:
            unsupported.append(str(relative))
    if unsupported:
        more = f" and {len(unsupported) - 1} more" if len(unsupported) > 1 else ""
        raise DataError(f"data.source: cannot read {unsupported[0]}{more} in {source}: unsupported file type "
                        f"(readable: {READABLE}); move other files out of the folder")
    return files


def open_binary(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed when its name ends in .gz or .zst."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if suffix == ".zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True))
    return path.open("rb")


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
    """The configured source as a Dataset with a ``row_id`` column (``data.max_samples`` rows at most)."""
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
    with open_binary(path) as handle:
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
        raise DataError(f"data.source: cannot load Hub data set '{cfg.source}': {one_line(exc, None)}") from exc


def _load_local(files: list[Path], cfg: DataConfig) -> datasets.Dataset:
    loader = file_format(files[0])
    if any(f.stat().st_size == 0 for f in files) and all(f.stat().st_size == 0 for f in files):
        raise DataError(f"data.source: {cfg.source} is empty")
    try:
        # split="train" is the name datasets gives to local files, not the data's own split.
        dataset = datasets.load_dataset(loader, data_files=[str(f) for f in files], split="train",
                                        **(_csv_as_text(files[0]) if loader == "csv" else {}))
        dataset.data.table.validate(full=True)  # Arrow reads JSON without checking UTF-8; this does
        if loader == "json" and (field := _non_text_field(dataset.features)):
            raise ValueError(f"{field} is not text in every row")
        if cfg.max_samples is not None:
            dataset = dataset.select(range(min(cfg.max_samples, len(dataset))))
        if len(files) == 1 and _base_suffix(files[0]) == ".jsonl":
            lines = nonblank_line_numbers(files[0])
            if len(lines) >= len(dataset):  # Arrow skips blank lines: keep row_id = line number
                dataset = dataset.add_column("row_id", lines[: len(dataset)])
        return dataset
    except Exception as exc:
        bad_encoding = any(isinstance(error, UnicodeDecodeError) for error in exception_chain(exc))
        if loader not in ("csv", "json") or (loader == "csv" and not bad_encoding):
            raise DataError(f"data.source: cannot read {cfg.source} as {loader}: {one_line(exc, None)}") from exc
        logger.warning("Arrow could not read %s (%s); re-reading row by row", cfg.source, one_line(exc, 200))
    if loader == "csv":
        generator, features = _tolerant_csv_rows, _csv_features(files[0])
    else:
        dataset = _reread_json(files, cfg.max_samples)
        if dataset is not None:
            return dataset
        generator, features = _tolerant_json_rows, RAW_FEATURES
        logger.warning("%s: the readable rows have columns of mixed types; only the reasoning fields (question, "
                       "reference_answer, responses) are kept", cfg.source)
    return datasets.Dataset.from_generator(
        generator,
        features=features,
        gen_kwargs={"files": [str(f) for f in files], "max_samples": cfg.max_samples,
                    "fingerprint": source_fingerprint(cfg)},
    )


def _reread_json(files: list[Path], max_samples: int | None) -> datasets.Dataset | None:
    """Every column of the readable records, as Arrow reads a clean file, and one row (``row_id`` and
    ``load_error`` only) for each record that is not: the readable records are written, with their line numbers,
    to a temporary JSONL that Arrow reads as it would have read the source. ``None`` where Arrow still cannot
    (a column with mixed types), for the caller's last resort."""
    import tempfile

    from llm_trainer.paths import cache_dir

    failed: list[tuple[int, str]] = []
    handle, name = tempfile.mkstemp(suffix=".jsonl", dir=cache_dir("reread-json"))
    clean = Path(name)
    try:
        with open(handle, "w", encoding="utf-8") as out:
            for row_id, record in _json_records_of(files, max_samples):
                row = _coerce_record(record, row_id)
                if row["load_error"] is not None:
                    failed.append((row_id, row["load_error"]))
                else:  # ASCII escapes: a lone surrogate from a \ud800 escape must not break the write
                    converted = {key: row[key] for key in ("reference_answer", "load_note")} if row["load_note"] else {}
                    out.write(json.dumps({**record, **converted, "row_id": row_id}) + "\n")
        try:
            if clean.stat().st_size:
                readable = datasets.load_dataset("json", data_files=[name], split="train")
                readable.data.table.validate(full=True)
            else:
                readable = datasets.Dataset.from_dict({"row_id": []}, features=datasets.Features(
                    {"row_id": datasets.Value("int64")}))
        except Exception as exc:  # mixed types across rows
            logger.debug("the readable rows did not load together: %s", one_line(exc, None))
            return None
    finally:
        clean.unlink(missing_ok=True)
    readable = readable.add_column("load_error", [None] * len(readable), feature=datasets.Value("string"))
    if not failed:
        return readable
    unreadable = datasets.Dataset.from_dict(
        {**{column: [None] * len(failed) for column in readable.column_names},
         "row_id": [row_id for row_id, _ in failed], "load_error": [reason for _, reason in failed]},
        features=readable.features)
    return datasets.concatenate_datasets([readable, unreadable]).sort("row_id").flatten_indices()


def _json_records_of(files: list[Path], max_samples: int | None) -> Iterator[tuple[int, Any]]:
    """(row number, record or error) over the files, at most ``max_samples`` of them."""
    emitted = 0
    for file in files:
        for row_id, record in _json_records(Path(file)):
            if max_samples is not None and emitted >= max_samples:
                return
            emitted += 1
            yield row_id, record


def _tolerant_json_rows(files: list[str], max_samples: int | None, fingerprint: str) -> Iterator[dict[str, Any]]:
    del fingerprint  # only part of the cache key of datasets' generator cache
    for row_id, record in _json_records_of([Path(f) for f in files], max_samples):
        yield _coerce_record(record, row_id)


def _json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, parsed object or an error string) per record; a JSON array file is also accepted."""
    if _base_suffix(path) == ".json":
        try:
            with open_binary(path) as handle:
                document = json.loads(handle.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            document = None
        if isinstance(document, list):
            yield from enumerate(document, start=1)
            return
    with open_binary(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                yield line_number, "invalid_utf8"
            except json.JSONDecodeError:
                yield line_number, "invalid_json"


def _csv_features(path: Path) -> datasets.Features:
    names = _csv_as_text(path)["features"]
    return datasets.Features({**names, "row_id": datasets.Value("int64"), "load_error": datasets.Value("string")})


def _tolerant_csv_rows(files: list[str], max_samples: int | None, fingerprint: str) -> Iterator[dict[str, Any]]:
    """CSV rows as text; a row with bytes that are not UTF-8 keeps only its row number and the reason."""
    del fingerprint
    emitted = 0
    for file in files:
        with Path(file).open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            for row_number, cells in enumerate(reader, start=emitted + 1):
                if max_samples is not None and emitted >= max_samples:
                    return
                emitted += 1
                row: dict[str, Any] = dict.fromkeys(header)
                if any(_has_surrogates(cell) for cell in cells):
                    row.update(row_id=row_number, load_error="invalid_utf8")
                else:
                    row.update(zip(header, cells), row_id=row_number, load_error=None)
                yield row


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _base_suffix(path: Path) -> str:
    """The data suffix in lower case, under any compression suffix: data.JSONL.gz -> .jsonl."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if len(suffixes) == 2 and suffixes[-1] in COMPRESSED:
        return suffixes[0]
    return suffixes[-1] if suffixes else ""


def _coerce_record(record: Any, row_id: int) -> dict[str, Any]:
    row: dict[str, Any] = {"question": None, "reference_answer": None, "responses": [], "row_id": row_id,
                           "load_error": None, "load_note": None}
    if isinstance(record, str):
        row["load_error"] = record
        return row
    if not isinstance(record, dict):
        row["load_error"] = "not_an_object"
        return row
    for field in TEXT_FIELDS:
        value = record.get(field)
        if field == "reference_answer" and (text := _answer_as_text(value)) is not None:
            row[field], row["load_note"] = text, CONVERTED
        elif value is not None and not isinstance(value, str):
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


def _answer_as_text(value: Any) -> str | None:
    """A number or a list of strings as answer text ("42", "4.5", "x = 1, y = 2"); None for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ", ".join(value)
    return None


def _non_text_field(features: datasets.Features) -> str | None:
    """The first of TEXT_FIELDS that Arrow did not read as text (all-null is text enough)."""
    for field in TEXT_FIELDS:
        feature = features.get(field)
        if feature is not None and not (isinstance(feature, datasets.Value)
                                        and feature.dtype in ("string", "large_string", "null")):
            return field
    return None


def _valid_response(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("response"), str)
            and isinstance(entry.get("response_model"), str | None))
