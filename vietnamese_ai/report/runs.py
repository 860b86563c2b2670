"""Reading run directories: the only input of the report.

A path given to the report is a run directory (it holds `metrics.jsonl`, `config.yaml`, `run.json`,
`eval.json`/`samples.jsonl` or `summary.json`), one of those files, or a directory whose
sub-directories are run directories (`runs/demo`). Anything else is skipped with a note, so that
`vietnamese-ai report runs/demo/*` works although the glob also matches data folders. Nothing here
imports torch or transformers: a report is built from files alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from vietnamese_ai.errors import DataError, UserError
from vietnamese_ai.files import load_yaml, names_a_secret, yaml_problem

RUN_FILES = ("metrics.jsonl", "config.yaml", "run.json", "eval.json", "summary.json")


@dataclass
class TrainingRun:
    name: str
    path: str
    config: dict[str, Any]                 # config.yaml, secrets redacted
    config_text: str                       # the same, as YAML for display
    metrics: list[dict[str, Any]]          # metrics.jsonl, one record per logged step
    info: dict[str, Any] | None            # run.json: present when the run finished

    @property
    def method(self) -> str:
        return (self.info or {}).get("method") or "training"


@dataclass
class Evaluation:
    name: str
    path: str
    report: dict[str, Any]                 # eval.json
    samples: list[dict[str, Any]]          # samples.jsonl: the rows of the evaluation's own prompts
    suite_rows: list[dict[str, Any]] = field(default_factory=list)   # samples.jsonl: the safety suites' rows


@dataclass
class RunFiles:
    training: list[TrainingRun] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    summaries: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)   # (name, path, summary.json)
    skipped: list[str] = field(default_factory=list)
    read: set[str] = field(default_factory=set)                                        # real paths read


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every record; a torn last line (a run killed while writing it) is dropped, any other bad line
    is an error naming it."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):   # no newline after it: the writer was killed mid-line
                continue
            raise DataError(f"{path}: line {number}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object")
        records.append(record)
    return records


def redact(value: Any) -> Any:
    """Configs as shown: any key that names a secret (files.names_a_secret, as for the model card and the
    trackers) keeps its place but not its value; max_new_tokens and tokenizer_name_or_path are shown."""
    if isinstance(value, dict):
        return {k: ("***" if v and names_a_secret(k) else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _name(path: str, taken: set[str]) -> str:
    parts = [p for p in os.path.abspath(path).split(os.sep) if p]
    name = parts[-1] if parts else path
    if name in taken and len(parts) > 1:
        name = f"{parts[-2]}/{name}"
    while name in taken:
        name += "'"
    taken.add(name)
    return name


def _read_directory(path: str, found: RunFiles, taken: set[str]) -> set[str]:
    """Add what the directory holds; returns the run files it has."""
    has = {f for f in RUN_FILES if os.path.isfile(os.path.join(path, f))}
    if not has or os.path.realpath(path) in found.read:   # nothing, or named twice (a directory and its file)
        return has
    found.read.add(os.path.realpath(path))
    name = _name(path, taken)
    if has & {"metrics.jsonl", "config.yaml", "run.json"}:
        config: dict[str, Any] = {}
        if "config.yaml" in has:
            try:
                with open(os.path.join(path, "config.yaml"), encoding="utf-8") as f:
                    config = load_yaml(f) or {}
            except yaml.YAMLError as e:
                raise DataError(yaml_problem(e, os.path.join(path, "config.yaml"))) from None
            if not isinstance(config, dict):
                raise DataError(f"{os.path.join(path, 'config.yaml')}: expected a mapping of keys to values")
            config = redact(config)
        metrics = read_jsonl(os.path.join(path, "metrics.jsonl")) if "metrics.jsonl" in has else []
        info = read_json(os.path.join(path, "run.json")) if "run.json" in has else None
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True) if config else ""
        found.training.append(TrainingRun(name, path, config, text, metrics, info))
    if "eval.json" in has:
        report = read_json(os.path.join(path, "eval.json"))
        if not isinstance(report, dict) or not isinstance(report.get("models"), dict):
            raise DataError(f"{os.path.join(path, 'eval.json')}: no 'models' (not written by vietnamese-ai evaluate?)")
        samples_path = os.path.join(path, "samples.jsonl")
        rows = read_jsonl(samples_path) if os.path.isfile(samples_path) else []
        found.evaluations.append(Evaluation(name, path, report, [r for r in rows if r.get("suite") is None],
                                            [r for r in rows if r.get("suite") is not None]))
    if "summary.json" in has:
        found.summaries.append((name, path, read_json(os.path.join(path, "summary.json"))))
    return has


def collect(paths: list[str]) -> RunFiles:
    """The run files under `paths`: evaluations in the order given, training runs in the order they
    finished (unfinished ones last)."""
    found, taken = RunFiles(), set()
    for path in paths:
        if not os.path.exists(path):
            raise UserError(f"report: '{path}': no such file or directory")
        if os.path.isfile(path):
            if os.path.basename(path) in RUN_FILES:
                _read_directory(os.path.dirname(path) or ".", found, taken)
            else:
                found.skipped.append(path)
            continue
        has = _read_directory(path, found, taken)
        if has - {"summary.json"}:
            continue
        # A directory of runs (runs/demo, which may also hold the pipeline's summary.json).
        children = sorted(os.path.join(path, c) for c in os.listdir(path) if os.path.isdir(os.path.join(path, c)))
        if not [child for child in children if _read_directory(child, found, taken)] and not has:
            found.skipped.append(path)
    if not (found.training or found.evaluations or found.summaries):
        raise UserError(f"report: no run files ({', '.join(RUN_FILES)}) in {', '.join(paths)}")
    found.training.sort(key=lambda run: (run.info is None, (run.info or {}).get("finished_at", "")))
    return found
