"""Running a pipeline: stage by stage, skipping what is already done, resuming what was cut off.

Each stage gets a content hash when it is planned: its command, its resolved keys, a fingerprint of
every local file or directory it reads from outside the pipeline (content for files; names, sizes
and modification times for directories), and the hashes of the stages it refers to (`${stage.x}`).
The stages form a graph of references, not a chain: a change re-runs its stage and the stages that
use it, directly or through others, and nothing else (changing `dpo.beta` leaves an `orpo` stage
that never refers to `dpo` done). A stage that reads another's output must refer to it with
`${...}`, not by a literal path into the pipeline's folder.

`pipeline_state.json` (next to the resolved `pipeline.yaml`) records, per stage, its hash, what the
hash was made of (its keys, its inputs' fingerprints, the hashes of the stages it uses: so a plan can
say which key or file changed) and whether it is running or done. A stage is then

- skipped when it is done with the same hash and its output is still there;
- resumed when it was cut off with the same hash (a training stage continues from its newest
  checkpoint; other commands write their outputs atomically, so they simply run again);
- run afresh otherwise (a training stage's old checkpoints are replaced).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import yaml

from vietnamese_ai.errors import ConfigError, UserCodeError, UserError
from vietnamese_ai.files import LOCK_FILE, atomic_file, hold_directory
from vietnamese_ai.pipeline.spec import OUTPUTS, TRAINING, Pipeline, Stage, load_function, validate
from vietnamese_ai.recipes.commands import METHODS

STATE = "pipeline_state.json"


@dataclass
class Step:
    stage: Stage
    action: str        # run | resume | skip
    reason: str
    hash: str          # covers this stage and every stage it uses, directly or not
    own: str           # this stage alone
    made_of: dict[str, Any] | None = None   # what the hash covers, kept in the state
    missing: list[str] | None = None         # local inputs that do not exist and no earlier stage makes


def _fingerprint(path: str) -> str:
    digest = hashlib.sha256()
    if os.path.isfile(path):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return "file:" + digest.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(set(files) - {LOCK_FILE}):   # a run's lock is no part of its content
            full = os.path.join(root, name)
            info = os.stat(full)
            digest.update(f"{os.path.relpath(full, path)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return "dir:" + digest.hexdigest()


def _inputs(value: Any, inside: str) -> dict[str, str]:
    """Fingerprints of the existing local paths a stage's keys name, outside the pipeline directory
    (what lies inside is an earlier stage's output, covered by the hash chain)."""
    found: dict[str, str] = {}
    if isinstance(value, str):
        if value and os.path.exists(value):
            real = os.path.realpath(value)
            if not (real + os.sep).startswith(os.path.realpath(inside) + os.sep):
                found[value] = _fingerprint(value)
    elif isinstance(value, list):
        for v in value:
            found.update(_inputs(v, inside))
    elif isinstance(value, dict):
        for v in value.values():
            found.update(_inputs(v, inside))
    return found


def _code(stage: Stage) -> dict[str, str]:
    """A python stage's result depends on its function's code as much as on its args: the fingerprint
    of the module file that defines it (not of the modules that one imports), so that an edited
    function runs again instead of being skipped."""
    if stage.command != "python":
        return {}
    function = load_function("", stage.values["function"])   # imported already, when the pipeline was validated
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    return {path: _fingerprint(path)} if path and os.path.isfile(path) else {}


def stage_hash(stage: Stage, used: dict[str, str], pipeline_dir: str) -> tuple[str, str, dict[str, Any]]:
    """(the stage's own hash, the hash that also covers the stages it uses, and what they were made of).
    `used` maps each stage it refers to onto that stage's hash."""
    key = {"command": stage.command, "values": stage.values, "inputs": _inputs(stage.values, pipeline_dir)}
    code = _code(stage)
    if code:   # only python stages carry it
        key["code"] = code
    own = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    uses = {name: used[name] for name in sorted(stage.needs)}
    whole = hashlib.sha256(json.dumps({"own": own, "uses": uses}, sort_keys=True).encode()).hexdigest()
    made_of = json.loads(json.dumps({**key, "uses": uses}, default=str))
    return own, whole, made_of


def what_changed(before: dict[str, Any] | None, now: dict[str, Any]) -> str:
    """In words, the first difference between what a stage's recorded hash and its new one are made of."""
    if not before:
        return "its keys or inputs changed"
    for name in sorted(set(now.get("uses", {})) | set(before.get("uses", {}))):
        if now.get("uses", {}).get(name) != before.get("uses", {}).get(name):
            return f"stage '{name}', which it uses, changed"
    old, new = before.get("values", {}), now.get("values", {})
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            shown = lambda v: "(unset)" if v is None else json.dumps(v, ensure_ascii=False)[:60]  # noqa: E731
            return f"key '{key}' changed: {shown(old.get(key))} -> {shown(new.get(key))}"
    for path in sorted(set(now.get("inputs", {})) | set(before.get("inputs", {}))):
        if now.get("inputs", {}).get(path) != before.get("inputs", {}).get(path):
            return f"input '{path}' changed"
    if now.get("code") != before.get("code"):
        return "its function's code changed"
    return "its command changed" if now.get("command") != before.get("command") else "its keys or inputs changed"


def read_state(pipeline: Pipeline) -> dict[str, Any]:
    path = os.path.join(pipeline.output_dir, STATE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path}: not valid JSON; delete it to run every stage again") from None
    return state.get("stages", {}) if isinstance(state, dict) else {}


def write_state(pipeline: Pipeline, stages: dict[str, Any]) -> None:
    os.makedirs(pipeline.output_dir, exist_ok=True)
    with atomic_file(os.path.join(pipeline.output_dir, STATE)) as f:
        json.dump({"pipeline": pipeline.path, "stages": stages}, f, ensure_ascii=False, indent=2)


def plan(pipeline: Pipeline, start: str | None = None, only: str | None = None) -> list[Step]:
    """What each stage will do, and why."""
    for name in (start, only):
        if name is not None:
            pipeline.stage(name)   # an unknown name is an error listing the stages
    state = read_state(pipeline)
    steps, hashes, forced, done_names = [], {}, False, set()
    for stage in pipeline.stages:
        own, chained, made_of = stage_hash(stage, hashes, pipeline.output_dir)
        hashes[stage.name] = chained
        record = state.get(stage.name, {})
        forced = forced or stage.name == start
        done = record.get("status") == "done" and record.get("hash") == chained and _output_exists(stage)
        interrupted = record.get("status") == "running" and record.get("hash") == chained
        if done:
            done_names.add(stage.name)
        if only is not None and stage.name != only:
            steps.append(Step(stage, "skip", "done" if done else "not asked for (--only)", chained, own))
        elif forced or stage.name == only:
            flag = "--from" if start else "--only"
            steps.append(Step(stage, "resume", f"asked for ({flag}); it was interrupted", chained, own) if interrupted
                         else Step(stage, "run", f"asked for ({flag})", chained, own))
        elif done:
            steps.append(Step(stage, "skip", f"unchanged since {record.get('finished_at', '?')}", chained, own))
        elif interrupted:
            steps.append(Step(stage, "resume", "it was interrupted", chained, own))
        elif not record:
            steps.append(Step(stage, "run", "never run", chained, own))
        elif record.get("hash") != chained:
            steps.append(Step(stage, "run", what_changed(record.get("made_of"), made_of), chained, own))
        else:
            steps.append(Step(stage, "run", "its output is missing", chained, own))
        steps[-1].made_of = made_of
        steps[-1].missing = missing_inputs(stage.values, [s.directory for s in pipeline.stages[:len(steps) - 1]])
    if only is not None:   # the one stage's inputs must exist
        missing = [n for n in pipeline.stage(only).needs if n not in done_names]
        if missing:
            raise ConfigError(f"--only {only}: it needs stage '{missing[0]}', which has not completed with its current "
                              f"keys; run the pipeline up to it first")
    return steps


DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".yaml", ".yml", ".txt", ".py", ".safetensors")


def missing_inputs(value: Any, earlier: list[str]) -> list[str]:
    """Local paths a stage's keys name that do not exist and that no earlier stage's folder holds:
    a value that is plainly a local path (absolute, ./ or ../, two folders deep) or names a data file,
    never a hub name ("org/name") or a spec ("python:rewards.py:fn")."""
    if isinstance(value, list):
        return [m for v in value for m in missing_inputs(v, earlier)]
    if isinstance(value, dict):
        return [m for v in value.values() for m in missing_inputs(v, earlier)]
    if not isinstance(value, str) or not value or ":" in value or "\n" in value or os.path.exists(value):
        return []
    from vietnamese_ai.models.loading import plainly_local

    if not (plainly_local(value) or value.lower().endswith(DATA_SUFFIXES)):
        return []
    real = os.path.realpath(value)
    if any((real + os.sep).startswith(os.path.realpath(folder) + os.sep) for folder in earlier):
        return []
    return [value]


def eta(remaining: list[Step], state: dict[str, Any], elapsed: float) -> str:
    """'; 35s so far, about 2 min left': the stages still to run, timed by what each took when it last
    ran (pipeline_state.json); nothing when a stage still to run has never finished."""
    todo = [s for s in remaining if s.action != "skip"]
    known = [state.get(s.stage.name, {}).get("seconds") for s in todo]
    if not todo or any(k is None for k in known):
        return f"; {elapsed:.0f}s so far" if elapsed >= 1 else ""
    left = sum(known)
    return f"; {elapsed:.0f}s so far, about {left / 60:.0f} min left" if left >= 90 else \
        f"; {elapsed:.0f}s so far, about {left:.0f}s left"


def _output_exists(stage: Stage) -> bool:
    """The file or directory a command writes last (so its presence means the command finished)."""
    key = "final" if stage.command in TRAINING else "eval" if stage.command == "evaluate" else stage.target_key
    return os.path.exists(stage.output(key))


def stage_outputs(stage: Stage) -> dict[str, str]:
    return {name: stage.output(name) for name in OUTPUTS[stage.command]}


def execute(stage: Stage, resume: bool = False) -> Any:
    """Run one stage's command (the same recipe functions as the CLI) and return its result."""
    if stage.command == "report":
        from vietnamese_ai.report import build_report

        os.makedirs(stage.directory, exist_ok=True)
        build_report(stage.values["runs"], stage.output("output"), stage.values.get("title", "vietnamese-ai report"))
        return None
    if stage.command == "python":
        return call_function(stage)
    values = {**stage.values, stage.target_key: stage.output(stage.target_key)}
    if stage.command in TRAINING:
        values["overwrite_output_dir"] = True   # a stale run of older keys is replaced; a checkpoint of these keys resumed
        if resume:
            values["resume_from_checkpoint"] = "latest"
    os.makedirs(stage.directory, exist_ok=True)
    config = validate(f"stage '{stage.name}'", stage.command, values)
    module, _, run_name, _ = METHODS[stage.command]
    return getattr(importlib.import_module(module), run_name)(config, **stage.objects)


def call_function(stage: Stage) -> Any:
    """A python stage: its function, called as name(output_dir=<the stage's folder>, **args). Errors
    say what went wrong relative to the stage (run_pipeline puts the file and the stage in front)."""
    spec = stage.values["function"]
    function = load_function("", spec)   # imported and checked already, when the pipeline was validated
    os.makedirs(stage.directory, exist_ok=True)
    try:
        return function(output_dir=stage.directory, **stage.values.get("args", {}))
    except UserError:   # the toolkit, called by the function, explained it in one line
        raise
    except Exception as e:
        if isinstance(e, TypeError) and e.__traceback__ is not None and e.__traceback__.tb_next is None:
            # Raised by the call itself, before any of the function's code ran: the arguments the file
            # gives do not fit (a function whose signature could not be checked beforehand).
            raise ConfigError(f"key 'args': '{spec}' refused its arguments: {e}") from None
        raise UserCodeError.of(f"function '{spec}' failed; its traceback:", e) from None


def summarize(result: Any) -> dict[str, Any]:
    """What the state file keeps of a stage's result: the last logged metrics of a training run."""
    if isinstance(result, dict):   # a python stage's own numbers
        return {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
    history = getattr(result, "history", None)
    if history:
        last = next((r for r in reversed(history) if "loss" in r), history[-1])
        return {k: v for k, v in last.items() if isinstance(v, (int, float))}
    return {"summary": result.summary()} if hasattr(result, "summary") else {}


def save_resolved(pipeline: Pipeline) -> None:
    os.makedirs(pipeline.output_dir, exist_ok=True)
    resolved = {"source": pipeline.path, "output_dir": pipeline.output_dir,
                "stages": {s.name: {"command": s.command, **s.values} for s in pipeline.stages}}
    with atomic_file(os.path.join(pipeline.output_dir, "pipeline.yaml")) as f:
        f.write(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))


def run_pipeline(pipeline: Pipeline, start: str | None = None, only: str | None = None,
                 log: Any = print) -> list[dict[str, Any]]:
    """Run the plan; returns one row per stage (name, action, reason, seconds, outputs, metrics).
    The pipeline's output_dir is held for the whole run (files.hold_directory), so a second run of the
    same pipeline is refused in one line rather than running its stages into the same directories."""
    with hold_directory(pipeline.output_dir, "output_dir"):
        return _run_planned(pipeline, start, only, log)


def _run_planned(pipeline: Pipeline, start: str | None, only: str | None, log: Any) -> list[dict[str, Any]]:
    steps = plan(pipeline, start, only)
    save_resolved(pipeline)
    state = read_state(pipeline)
    rows = []
    began = time.perf_counter()
    for number, step in enumerate(steps, start=1):
        stage = step.stage
        row = {"stage": stage.name, "command": stage.command, "action": step.action, "reason": step.reason,
               "outputs": stage_outputs(stage)}
        if step.action == "skip":
            row.update(seconds=state.get(stage.name, {}).get("seconds"), metrics=state.get(stage.name, {}).get("metrics", {}))
            rows.append(row)
            log(f"[pipeline] {stage.name}: skipped ({step.reason})")
            continue
        log(f"[pipeline] stage {number}/{len(steps)}: {stage.name} ({stage.command}): {step.action}, {step.reason}"
            f"{eta(steps[number - 1:], state, time.perf_counter() - began)}")
        state[stage.name] = {"status": "running", "hash": step.hash, "own": step.own, "made_of": step.made_of,
                             "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_state(pipeline, state)
        started = time.perf_counter()
        try:
            result = execute(stage, resume=step.action == "resume")
        except UserCodeError as e:   # a python stage's own code failed: the header says where, then its traceback
            raise UserCodeError(f"{pipeline.path}: stage '{stage.name}': {e.header}", e.user_traceback) from None
        except UserError as e:   # say which stage; the state keeps it as running, to resume or re-run
            raise type(e)(f"{pipeline.path}: stage '{stage.name}': {e}") from None
        seconds = round(time.perf_counter() - started, 2)
        metrics = summarize(result)
        state[stage.name].update(status="done", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=seconds,
                                 metrics=metrics)
        write_state(pipeline, state)
        row.update(seconds=seconds, metrics=metrics)
        rows.append(row)
        log(f"[pipeline] {stage.name}: done in {seconds:.0f}s")
        said = result.summary() if hasattr(result, "summary") else ""
        if said and "\n" not in said:   # a table (evaluate's) is printed once, when the run ends
            log(f"[pipeline] {stage.name}: {said}")
    return rows
