"""Several datasets in one run, mixed with weights.

`dataset` may name one source (a file or hub name) or a list of them; each entry of the list is a
name or a mapping `{path, weight, split, subset, columns}`:

    dataset:
      - {path: HuggingFaceH4/ultrafeedback_binarized, split: train_prefs, weight: 0.5}
      - {path: my_pairs.jsonl, weight: 2, columns: {question: prompt}}

A weight scales how many of the source's records one epoch of the mixture holds: 2 takes every record
twice, 0.5 a seeded half, 1.5 every record once and a seeded half again. The mixture is a pure function of
the sources, the weights and the seed, built before training, so a resumed run rebuilds the same
list and the loop's checkpointed position in its shuffled order stays exact.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from vietnamese_ai.data.loading import Record, load_records
from vietnamese_ai.data.records import check_columns, rename_columns
from vietnamese_ai.errors import DataError

SOURCE_KEYS = ("path", "weight", "split", "subset", "columns")


@dataclass(frozen=True)
class Source:
    path: str
    weight: float = 1.0
    split: str | None = None     # None: the config's dataset_split / eval_split
    subset: str | None = None    # None: the config's dataset_subset
    columns: dict[str, str] | None = None   # None: the config's columns


def parse_sources(value: Any) -> list[Source]:
    """The sources a `dataset` value names, or ValueError naming the entry and field at fault.

    >>> parse_sources("a.jsonl")
    [Source(path='a.jsonl', weight=1.0, split=None, subset=None, columns=None)]
    >>> [s.weight for s in parse_sources(["a.jsonl", {"path": "b.jsonl", "weight": 0.5}])]
    [1.0, 0.5]
    >>> parse_sources([{"path": "b.jsonl", "wieght": 2}])
    Traceback (most recent call last):
    ValueError: entry 1: unknown field 'wieght'; expected path, weight, split, subset, columns
    """
    if isinstance(value, str):
        return [Source(value)]
    if not isinstance(value, list) or not value:
        raise ValueError("expected a file or hub name, or a non-empty list of them (each a name or "
                         "{path, weight, split, subset, columns})")
    sources = []
    for i, entry in enumerate(value, start=1):
        if isinstance(entry, str) and entry:
            sources.append(Source(entry))
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"entry {i}: expected a name or a mapping with 'path', got {type(entry).__name__}")
        unknown = [k for k in entry if k not in SOURCE_KEYS]
        if unknown:
            raise ValueError(f"entry {i}: unknown field '{unknown[0]}'; expected {', '.join(SOURCE_KEYS)}")
        path = entry.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError(f"entry {i}: field 'path': required (a file or a hub dataset name)")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"entry {i} ({path}): field 'weight': expected a number > 0, got {weight!r}")
        for key in ("split", "subset"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise ValueError(f"entry {i} ({path}): field '{key}': expected a string, got {entry[key]!r}")
        columns = entry.get("columns")
        if columns is not None:
            if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in columns.items()):
                raise ValueError(f"entry {i} ({path}): field 'columns': expected a mapping of names to names")
            try:
                check_columns(columns)
            except ValueError as e:
                raise ValueError(f"entry {i} ({path}): field 'columns': {e}") from None
        sources.append(Source(path, float(weight), entry.get("split"), entry.get("subset"), columns))
    return sources


def weighted(records: list[Record], weight: float, rng: random.Random, label: str) -> list[Record]:
    """round(weight x len(records)) records: whole copies, then a seeded sample of the remainder
    (kept in file order, so a record's place in the mixture does not depend on the draw's order).

    >>> [r.data["i"] for r in weighted([Record(str(i), {"i": i}) for i in range(4)], 1.5, random.Random(0), "x")]
    [0, 1, 2, 3, 1, 3]
    """
    count = round(weight * len(records))
    if count == 0:
        raise DataError(f"{label}: weight {weight} takes no record of its {len(records)}; raise the weight")
    copies, rest = divmod(count, len(records))
    return records * copies + [records[k] for k in sorted(rng.sample(range(len(records)), rest))]


def read_sources(value: Any, split: str, subset: str | None, columns: dict[str, str] | None,
                 seed: int) -> list[Record]:
    """The records of every source (renamed by its columns, else `columns`), mixed by weight. One
    source of weight 1 is read as it is."""
    sources = parse_sources(value)
    mixed: list[Record] = []
    for index, source in enumerate(sources):
        records = load_records(source.path, source.split or split, subset=source.subset or subset)
        records = rename_columns(records, source.columns if source.columns is not None else columns)
        if source.weight == 1.0:
            mixed += records
            continue
        # each source draws from its own stream: adding a source leaves the others' draws alone
        mixed += weighted(records, source.weight, random.Random(f"{seed}:{index}"), source.path)
    return mixed
