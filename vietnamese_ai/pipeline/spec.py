"""A pipeline file: stages in order, each a command of the toolkit with its keys.

    output_dir: runs/my-pipeline          # every stage writes under it, in a folder named after it
    stages:
      sft:                                # the stage's name; its command, unless `command:` says otherwise
        model_name_or_path: Qwen/Qwen2.5-0.5B
        dataset: data/sft.jsonl
      pairs:
        command: feedback label
        candidates: data/candidates.jsonl
      dpo:
        model_name_or_path: ${sft.final}  # an earlier stage's output, by name
        dataset: ${pairs.output}

`${NAME.OUTPUT}` names an output of an earlier stage (`final`, `output_dir`, `output`, ... as listed
in OUTPUTS) or, failing that, one of its resolved keys (`${sft.learning_rate}`). A reference to a
stage that does not exist, to a later one or to itself is an error before anything runs, and so is
an unknown command or a bad key inside a stage: every stage's config is built and validated first.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vietnamese_ai.data.loading import read_yaml
from vietnamese_ai.errors import ConfigError, UserCodeError
from vietnamese_ai.recipes.commands import METHODS
from vietnamese_ai.training.config import closest, config_from_values

REFERENCE = re.compile(r"\$\{([A-Za-z0-9_-]+)\.([A-Za-z0-9_/-]+)\}")
TRAINING = ("sft", "dpo", "orpo", "kto", "reward", "score-sft", "grpo", "rloo", "ppo")
# command -> {output name: path relative to the stage's directory}; the first of each is where the
# command is told to write (its output_dir or output key), which the pipeline sets.
OUTPUTS: dict[str, dict[str, str]] = {
    **{c: {"output_dir": "", "final": "final", "metrics": "metrics.jsonl"} for c in TRAINING},
    "evaluate": {"output_dir": "", "eval": "eval.json", "samples": "samples.jsonl"},
    "score": {"output": "scores.jsonl"},
    "feedback prompts": {"output": "prompts.jsonl"},
    "feedback generate": {"output": "candidates.jsonl"},
    "feedback label": {"output": "pairs.jsonl", "unpaired": "pairs_unpaired.jsonl", "sft": "pairs_sft.jsonl"},
    "feedback critique": {"output": "revisions.jsonl", "pairs": "revisions_pairs.jsonl"},
    "report": {"output": "report.html"},
    "python": {"output_dir": ""},
}
# Stages that are not toolkit commands: report (run directories -> HTML) and python (a function of
# yours, `function: package.module:name`, called as name(output_dir=<its directory>, **args)).
SPECIAL = {"report": ("runs", "title"), "python": ("function", "args")}
PIPELINE_KEYS = ("overwrite_output_dir", "resume_from_checkpoint")   # set by the runner, not by the file


@dataclass
class Stage:
    name: str
    command: str
    values: dict[str, Any]                       # the stage's keys, references resolved
    directory: str                               # <pipeline output_dir>/<name>
    needs: list[str] = field(default_factory=list)   # stages it refers to
    objects: dict[str, Any] = field(default_factory=dict)   # Python objects for the recipe (model=, ...)

    def output(self, name: str) -> str:
        return os.path.join(self.directory, OUTPUTS[self.command][name]).rstrip(os.sep)

    @property
    def target_key(self) -> str:
        """The key that tells the command where to write."""
        return next(iter(OUTPUTS[self.command]))


@dataclass
class Pipeline:
    path: str                 # the file it came from
    output_dir: str
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"{self.path}: no stage '{name}'; stages: {', '.join(s.name for s in self.stages)}")


def _commands() -> list[str]:
    return [*METHODS, *SPECIAL]


def command_config(command: str) -> type | None:
    """The config class of a command (None for the report and python stages)."""
    if command in SPECIAL:
        return None
    module, config_name, _, _ = METHODS[command]
    return getattr(importlib.import_module(module), config_name)


def _substitute(value: Any, resolve: Any) -> Any:
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value.strip())
        if whole:   # the whole value is one reference: keep the referenced value's type
            return resolve(whole.group(1), whole.group(2))
        return REFERENCE.sub(lambda m: str(resolve(m.group(1), m.group(2))), value)
    if isinstance(value, list):
        return [_substitute(v, resolve) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, resolve) for k, v in value.items()}
    return value


def build_stage(where: str, name: str, command: str, values: dict[str, Any], earlier: dict[str, Stage],
                later: set[str], output_dir: str) -> Stage:
    """One stage, its references resolved against `earlier` and its keys validated."""
    if command not in METHODS and command not in SPECIAL:
        suggestion = closest(command, _commands())
        raise ConfigError(f"{where}: unknown command '{command}'" + (f"; did you mean '{suggestion}'?" if suggestion else "")
                          + f"; commands: {', '.join(_commands())}")
    stage = Stage(name, command, {}, os.path.join(output_dir, name))
    for key in (stage.target_key, *PIPELINE_KEYS):
        if key in values:
            raise ConfigError(f"{where}: key '{key}' is set by the pipeline (the stage writes to {stage.directory})")

    def resolve(other: str, output: str) -> Any:
        if other == name:
            raise ConfigError(f"{where}: '${{{other}.{output}}}' refers to the stage itself (a cycle)")
        if other not in earlier:
            what = "comes later" if other in later else "does not exist"
            raise ConfigError(f"{where}: '${{{other}.{output}}}': stage '{other}' {what}; a stage can use only the "
                              f"outputs of stages before it ({', '.join(earlier) or 'none'})")
        source = earlier[other]
        if other not in stage.needs:
            stage.needs.append(other)
        if output in OUTPUTS[source.command]:
            return source.output(output)
        if output in source.values:
            return source.values[output]
        raise ConfigError(f"{where}: '${{{other}.{output}}}': stage '{other}' ({source.command}) has no output or key "
                          f"'{output}'; its outputs: {', '.join(OUTPUTS[source.command])}")

    stage.values = _substitute(values, resolve)
    if command in SPECIAL:
        unknown = set(stage.values) - set(SPECIAL[command])
        if unknown:
            raise ConfigError(f"{where}: key '{sorted(unknown)[0]}': unknown key; {command} takes: "
                              f"{', '.join(SPECIAL[command])}")
    if command == "report":
        runs = stage.values.get("runs")
        if runs is None:   # by default, every stage before it
            stage.values["runs"] = [s.directory for s in earlier.values()]
            stage.needs = list(earlier)
        if isinstance(stage.values["runs"], str):
            stage.values["runs"] = [stage.values["runs"]]
    elif command == "python":
        function = stage.values.get("function")
        if not isinstance(function, str) or not re.fullmatch(r"[\w.]+:\w+", function):
            raise ConfigError(f"{where}: key 'function': expected package.module:function, got {function!r}")
        args = stage.values.get("args", {})
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise ConfigError(f"{where}: key 'args': expected a mapping of argument: value")
        check_arguments(where, function, load_function(where, function), args)
    else:
        validate(where, command, {**stage.values, stage.target_key: stage.output(stage.target_key)})
    return stage


def _at(where: str, text: str) -> str:
    return f"{where}: {text}" if where else text


def load_function(where: str, function: str) -> Callable[..., Any]:
    """A python stage's `package.module:name`, imported. A module that is not on the path, or a name it
    does not define, is one line; a module that fails to import (a syntax error, an exception at its
    top level, a missing dependency) is a UserCodeError: a header line, then the user's traceback."""
    module_name, _, name = function.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
        if missing is not None and (module_name + ".").startswith(missing + "."):   # the module (or its package)
            raise ConfigError(_at(where, f"key 'function': no module '{module_name}' beside the pipeline file or "
                                         f"on the Python path (set PYTHONPATH to the folder that holds it)")) from None
        # the user's module raised while importing (a syntax error, its own code, a missing dependency)
        raise UserCodeError.of(_at(where, f"importing '{module_name}' for function '{function}' failed; its "
                                          f"traceback:"), e) from None
    found = getattr(module, name, None)
    if not callable(found):
        defined = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        suggestion = closest(name, defined)
        what = "has no" if found is None else "has a non-callable"
        raise ConfigError(_at(where, f"key 'function': module '{module_name}' {what} '{name}'"
                                     + (f"; did you mean '{suggestion}'?" if suggestion else "")))
    return found


def check_arguments(where: str, function: str, found: Callable[..., Any], args: dict[str, Any]) -> None:
    """The stage's `args` against the function's signature, so that a keyword the function does not take
    is the file's mistake, told before anything runs (not a TypeError once earlier stages have run)."""
    if "output_dir" in args:
        raise ConfigError(f"{where}: key 'args': 'output_dir' is set by the pipeline (the stage's folder)")
    try:
        signature = inspect.signature(found)
    except (TypeError, ValueError):   # no signature to read (some builtins): the call itself will say
        return
    parameters = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        named = None   # takes any keyword
    else:
        named = [n for n, p in parameters.items()
                 if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        if "output_dir" not in named:
            raise ConfigError(f"{where}: key 'function': '{function}' must take an argument output_dir (the stage's "
                              f"folder)")
        for key in args:
            if key not in named:
                others = [n for n in named if n != "output_dir"]
                suggestion = closest(key, others)
                raise ConfigError(f"{where}: key 'args': '{function}' takes no argument '{key}'"
                                  + (f"; did you mean '{suggestion}'?" if suggestion else
                                     f"; it takes: {', '.join(others) or 'only output_dir'}"))
    try:
        signature.bind(output_dir="", **args)
    except TypeError as e:   # a required argument missing from args
        raise ConfigError(f"{where}: key 'args': '{function}' refused its arguments: {e}") from None


def validate(where: str, command: str, values: dict[str, Any]) -> Any:
    """The command's config built from the stage's keys: a bad key fails here, naming the stage."""
    return config_from_values(command_config(command), values, where=where)


def apply_overrides(path: str, data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`STAGE.KEY=VALUE` (or `output_dir=PATH`) from the command line, over the file's values."""
    from vietnamese_ai.training.config import text_only, parse_override

    for item in overrides:
        key, value, raw = parse_override(item)
        if key == "output_dir":
            data["output_dir"] = raw
            continue
        stage, _, name = key.partition(".")
        stages = data.get("stages") if isinstance(data.get("stages"), dict) else {}
        if not name or stage not in stages:
            raise ConfigError(f"command line: '{item}': expected STAGE.KEY=VALUE with a stage of {path} "
                              f"({', '.join(map(str, stages)) or 'none'}), or output_dir=PATH")
        values = stages[stage] or {}
        command = str(values.get("command", stage))
        cls = command_config(command) if command in _commands() else None
        text = cls is not None and text_only(cls, name, value) and value is not None   # output_dir=2024 stays text
        stages[stage] = {**values, name: raw if text else value}
    return data


def load_pipeline(path: str, overrides: list[str] | None = None) -> Pipeline:
    data = apply_overrides(path, read_yaml(path, "pipeline"), overrides or [])
    unknown = set(data) - {"output_dir", "stages", "name"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key '{sorted(unknown)[0]}'; a pipeline has: name, output_dir, stages")
    stages = data.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise ConfigError(f"{path}: 'stages' must be a mapping of stage name to its keys, in order")
    output_dir = data.get("output_dir") or os.path.join("runs", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(output_dir, str):
        raise ConfigError(f"{path}: 'output_dir' must be a path")
    # A python stage's module may sit beside the pipeline file, as a script's modules sit beside it. Searched
    # after everything else, so that it never shadows an installed package.
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.append(folder)
    return build_pipeline(path, output_dir, [(str(n), v) for n, v in stages.items()])


def build_pipeline(path: str, output_dir: str, stages: list[tuple[str, Any]]) -> Pipeline:
    built: dict[str, Stage] = {}
    names = [name for name, _ in stages]
    for i, (name, values) in enumerate(stages):
        where = f"{path}: stage '{name}'"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ConfigError(f"{where}: a stage name may hold letters, digits, '_' and '-' only")
        if name in built:
            raise ConfigError(f"{where}: a second stage with this name")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: expected a mapping of key: value, got {type(values).__name__}")
        values = {str(k): v for k, v in values.items()}
        command = str(values.pop("command", name))
        built[name] = build_stage(where, name, command, values, built, set(names[i + 1:]), output_dir)
    return Pipeline(path, output_dir, list(built.values()))
