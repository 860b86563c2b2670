"""Read raw records from local files (JSONL, JSON, CSV, Parquet), a Hugging Face hub dataset, or a
Python list. Each record keeps `where` it came from ("train.jsonl: line 3") so that every later
validation error can name the file and the record.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vietnamese_ai.errors import ConfigError, DataError
from vietnamese_ai.files import load_yaml, yaml_problem

LOCAL_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Record:
    where: str  # "train.jsonl: line 3", "record 2", "org/name[train]: record 7"
    data: dict[str, Any]


def load_records(dataset: str | Iterable[Mapping[str, Any]], split: str = "train",
                 name: str | None = None, subset: str | None = None) -> list[Record]:
    """Load records from a path, a hub dataset name, or an in-memory list of dicts.

    `name` labels in-memory data in error messages; `subset` is the hub dataset's config name.
    """
    if not isinstance(dataset, (str, os.PathLike)):
        label = name or "data"
        if isinstance(dataset, Mapping):
            raise DataError(f"{label}: expected a list of records (dicts) or a file path, got one dict; "
                            f"wrap it in a list")
        if isinstance(dataset, (bytes, int, float, bool)) or dataset is None or not isinstance(dataset, Iterable):
            raise DataError(f"{label}: expected a list of records (dicts) or a file path, got {type(dataset).__name__}")
        records = []
        for i, item in enumerate(dataset, start=1):
            where = f"{label}: record {i}"
            if not isinstance(item, Mapping):
                raise DataError(f"{where}: expected a dict, got {type(item).__name__}")
            records.append(Record(where, dict(item)))
        if not records:
            raise DataError(f"{label}: no records")
        return records

    path = os.fspath(dataset)
    ext = os.path.splitext(path)[1].lower()
    if os.path.isfile(path):
        if ext not in LOCAL_FORMATS:
            raise DataError(f"{path}: unsupported file type '{ext}' (use .jsonl, .json, .csv or .parquet)")
        reader = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}
        records = reader[LOCAL_FORMATS[ext]](path)
        if not records:
            raise DataError(f"{path}: file is empty (no records)")
        return records
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory; give a .jsonl, .json, .csv or .parquet file")
    if ext in LOCAL_FORMATS or os.sep in path and not _looks_like_hub_name(path):
        raise DataError(f"{path}: file not found")
    return _read_hub(path, split, subset)


def _looks_like_hub_name(path: str) -> bool:
    # Hub names are "name" or "org/name"; anything deeper or absolute is a missing local path.
    return not os.path.isabs(path) and path.count("/") <= 1 and not path.startswith(".")


def _decode_lines(path: str) -> list[tuple[int, str]]:
    """Split a file into (line number, text) pairs, naming the line of any invalid UTF-8."""
    with open(path, "rb") as f:
        raw = f.read()
    lines = []
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            lines.append((number, chunk.decode("utf-8")))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: line {number}: not valid UTF-8 (byte 0x{chunk[e.start]:02x} at column {e.start + 1})") from None
    if lines and lines[0][1].startswith("\ufeff"):
        lines[0] = (1, lines[0][1][1:])  # tolerate a UTF-8 byte-order mark
    return lines


def _as_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_jsonl(path: str) -> list[Record]:
    records = []
    for number, line in _decode_lines(path):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from None
        records.append(Record(where, _as_object(value, where)))
    return records


def _read_json(path: str) -> list[Record]:
    lines = _decode_lines(path)
    text = "\n".join(line for _, line in lines)
    if not text.strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several objects, one per line: JSON Lines in a .json file
            return _read_jsonl(path)
        raise DataError(f"{path}: line {e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), list):
        value = next(iter(value.values()))  # {"data": [...]} and similar wrappers
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a list of JSON objects, got {type(value).__name__}")
    return [Record(f"{path}: record {i}", _as_object(v, f"{path}: record {i}")) for i, v in enumerate(value, start=1)]


def _read_csv(path: str) -> list[Record]:
    text = "\n".join(line for _, line in _decode_lines(path))
    reader = csv.DictReader(io.StringIO(text))
    records = []
    for row in reader:
        where = f"{path}: line {reader.line_num}"
        data: dict[str, Any] = {}
        for key, cell in row.items():
            if key is None:
                raise DataError(f"{where}: more cells than header columns")
            if cell is None or cell == "":
                continue
            # List-valued fields (messages, input_ids) are stored as JSON inside a cell.
            if cell.lstrip().startswith(("[", "{")):
                try:
                    cell = json.loads(cell)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: field '{key}': invalid JSON in cell: {e.msg}") from None
            data[key] = cell
        records.append(Record(where, data))
    return records


def _read_parquet(path: str) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    return [Record(f"{path}: row {i}", _as_object(v, f"{path}: row {i}")) for i, v in enumerate(rows, start=1)]


def _read_hub(name: str, split: str, subset: str | None) -> list[Record]:
    # Real hub loading; it needs network access (or a populated HF cache).
    import datasets

    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as e:
        raise DataError(f"{name}: not a local file, and loading it from the Hugging Face hub failed "
                        f"(split '{split}'): {type(e).__name__}: {e}") from None
    return [Record(f"{name}[{split}]: record {i}", dict(row)) for i, row in enumerate(ds, start=1)]


def read_yaml(path: str, what: str = "config") -> dict[str, Any]:
    """A YAML mapping read with files.load_yaml (safe, a key given twice refused); every problem is a
    one-line ConfigError naming the file and the line."""
    import yaml

    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a directory, not a {what} file")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: {what} file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = load_yaml(f)
    except yaml.YAMLError as e:
        raise ConfigError(yaml_problem(e, path)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data
