"""Experiment trackers (`report_to`): every metrics.jsonl line, also sent to TensorBoard, W&B, MLflow or trackio.

The trackers are accelerate's own (accelerate.tracking), started on the main process only, with the
resolved config as a flat dict (keys naming a token, secret, password or API key left out). Each
logged line goes to them with the same names, values and step as in metrics.jsonl (its numeric
values; `step` is the step). Two departures from `Accelerator(log_with=...)`: the Accelerator is made
before the loop knows whether it resumes, which a tracker must know when it starts; and
`Accelerator.end_training()` destroys the process group, which a pipeline of several runs in one
process still needs. So the loop holds a `Trackers` and ends each tracker itself, however the run ends.

Resume continues the same tracker run: W&B's run id and MLflow's run id are kept in
output_dir/trackers.json and passed back; trackio reopens the run of the same name; TensorBoard writes
a new event file into the same directory (output_dir/runs/<run_name>) with purge_step = the resumed
step + 1, so that readers drop what the interrupted run logged after its checkpoint (its lost steps,
which the resumed run logs again). A fresh run purges from step 1: a directory started again does
not mix two runs' curves.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from typing import Any

from vietnamese_ai.files import atomic_file, names_a_secret

log = logging.getLogger("vietnamese_ai")

# report_to name -> the package it imports (and the pip extra of the same name: vietnamese-ai[name]).
KNOWN = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}
PROJECT = "vietnamese-ai"   # the W&B project (WANDB_PROJECT wins), MLflow experiment (MLFLOW_EXPERIMENT_NAME wins), trackio project
STATE_FILE = "trackers.json"


def requested(report_to: str | list[str]) -> list[str]:
    """The tracker names of a `report_to` value: one name, a list, or "a,b"; "none" is no tracker.

    >>> requested("none"), requested("tensorboard"), requested(["TensorBoard", "wandb"]), requested("wandb,mlflow")
    ([], ['tensorboard'], ['tensorboard', 'wandb'], ['wandb', 'mlflow'])
    """
    items = [report_to] if isinstance(report_to, str) else list(report_to)
    names = [name.strip().lower() for item in items for name in str(item).split(",") if name.strip()]
    return [] if names == ["none"] else names


def check_report_to(report_to: str | list[str]) -> str | list[str]:
    """`report_to` checked before anything loads (known names, packages installed), as one name or a list."""
    names = requested(report_to)
    for name in names:
        if name not in KNOWN:
            raise ValueError(f"unknown tracker '{name}'; known: none, {', '.join(KNOWN)}")
        if importlib.util.find_spec(KNOWN[name]) is None:
            raise ValueError(f"{name} needs the {KNOWN[name]} package: pip install 'vietnamese-ai[{name}]'")
    if len(set(names)) != len(names):
        raise ValueError("a tracker is named twice")
    return names if len(names) > 1 else names[0] if names else "none"


def flat_config(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config for a tracker: nested keys joined by '.', lists as text (TensorBoard's hparams take
    scalars only), and no key naming a secret.

    >>> flat_config({"lr": 0.1, "hub_token": "x", "judge": {"api_key": "y", "model": "m"}, "modules": ["q", "v"],
    ...              "tokenizer_name_or_path": "t"})
    {'lr': 0.1, 'judge.model': 'm', 'modules': 'q, v', 'tokenizer_name_or_path': 't'}
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if names_a_secret(key):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = ", ".join(str(v) for v in value)
        else:
            out[name] = value
    return out


def scalars(record: dict[str, Any]) -> dict[str, int | float]:
    """A metrics.jsonl record's numeric values, without its step.

    >>> scalars({"step": 3, "epoch": 0.5, "loss": 1.25, "note": "x", "flag": True})
    {'epoch': 0.5, 'loss': 1.25}
    """
    return {k: v for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_name(config: Any) -> str:
    return config.run_name or os.path.basename(os.path.normpath(config.output_dir)) or "run"


def _read_state(output_dir: str) -> dict[str, Any]:
    path = os.path.join(output_dir, STATE_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        log.warning("%s cannot be read; the trackers start new runs", path)
        return {}


def _make(name: str, run: str, output_dir: str, saved: dict[str, Any], resume_step: int | None) -> Any:
    """accelerate's tracker `name`, set to continue the saved run when resuming (imports nothing yet)."""
    from accelerate import tracking

    if name == "tensorboard":
        return tracking.TensorBoardTracker(run, os.path.join(output_dir, "runs"), purge_step=(resume_step or 0) + 1)
    if name == "wandb":
        again = {"id": saved["id"], "resume": "allow"} if saved.get("id") else {}
        return tracking.WandBTracker(os.environ.get("WANDB_PROJECT", PROJECT), name=run, **again)
    if name == "mlflow":
        return tracking.MLflowTracker(PROJECT, run_name=run, run_id=saved.get("run_id"))
    if name == "trackio":
        return tracking.TrackioTracker(PROJECT, name=run, **({"resume": "allow"} if resume_step is not None else {}))
    raise ValueError(f"unknown tracker '{name}'")   # (check_report_to refused it already)


def _identity(tracker: Any) -> dict[str, Any]:
    """What trackers.json keeps of a started tracker, for a resumed run to continue it."""
    if tracker.name == "wandb":
        return {"id": tracker.run.id, "project": tracker.run.project}
    if tracker.name == "mlflow":
        return {"run_id": tracker.active_run.info.run_id}
    if tracker.name == "tensorboard":
        return {"log_dir": tracker.logging_dir}
    return {"name": tracker.init_kwargs.get("name")}


class Trackers:
    """The run's trackers: none until `start` on the main process; as a context manager, it ends
    them however the run ends (a failure is not hidden by a tracker that fails to end)."""

    def __init__(self) -> None:
        self.active: list[Any] = []

    def start(self, config: Any, main: bool, resume_step: int | None) -> None:
        names = requested(config.report_to)
        if not names or not main:
            return
        out, run = config.output_dir, run_name(config)
        saved = _read_state(out) if resume_step is not None else {}
        values = flat_config({**config.model_dump(mode="json"), "run_name": run})
        for name in names:
            tracker = _make(name, run, out, saved.get(name, {}), resume_step)
            tracker.start()
            self.active.append(tracker)
            try:   # MLflow refuses a changed parameter value in a resumed run: the run goes on without it
                tracker.store_init_configuration(values)
            except Exception as e:  # noqa: BLE001
                log.warning("report_to %s: the config was not stored (%s)", name, str(e).splitlines()[0] if str(e) else e)
        with atomic_file(os.path.join(out, STATE_FILE)) as f:
            json.dump({t.name: _identity(t) for t in self.active}, f, indent=1)

    def log(self, record: dict[str, Any]) -> None:
        """Send one metrics.jsonl record, at its step."""
        if self.active:
            values, step = scalars(record), int(record["step"])
            for tracker in self.active:
                tracker.log(values, step=step)

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        trackers, self.active = self.active, []
        for tracker in trackers:
            try:
                tracker.finish()
            except Exception as e:  # noqa: BLE001
                if kind is None:
                    raise
                log.warning("report_to %s: could not end the run after the failure (%s)", tracker.name, e)
