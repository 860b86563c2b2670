"""What a run's output_dir may hold when a run starts, and what a resumed run may change.

- One run at a time: a run holds a lock on its output_dir (files.hold_directory, taken by `train`
  before anything is swept); a second run into it is refused in one line naming the first, already
  by `check_output_dir`, before a model loads.
- A directory holding a finished run (final/) or checkpoints is never reused silently: the run
  refuses unless told to resume (resume_from_checkpoint) or to start again (overwrite_output_dir).
- Leftovers of a killed writer (.tmp-*, .old-*, .trash-*; see files.sweep) are cleaned up first.
- `resume_from_checkpoint=latest` takes the newest checkpoint that passes `check_checkpoint`,
  warning about any newer one that does not.
- On resume, settings that decide the data order (batch size, accumulation, processes, seed, data
  size, a mixture's sources and weights) must be unchanged, or the saved data position would point
  elsewhere: refused. Optimisation settings (learning rate, schedule, warmup, steps, weight decay,
  Adam, clipping) may change: the new values apply from the resumed step on, with a warning naming them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from vietnamese_ai.errors import ConfigError
from vietnamese_ai.files import check_not_held, check_writable_directory, remove_directory, sweep
from vietnamese_ai.training.checkpoint import check_checkpoint, checkpoint_dirs
from vietnamese_ai.training.config import TrainingConfig

log = logging.getLogger("vietnamese_ai")

DATA_ORDER_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "num_processes", "seed", "train_examples",
                   "mixture")
OPTIMISATION_KEYS = ("learning_rate", "lr_scheduler_type", "warmup_ratio", "total_steps", "weight_decay", "adam_beta1",
                     "adam_beta2", "adam_epsilon", "max_grad_norm")


def run_settings(config: TrainingConfig, train_examples: int, num_processes: int, total_steps: int) -> dict[str, Any]:
    """What a checkpoint records about how its run was set up."""
    values = {key: getattr(config, key) for key in DATA_ORDER_KEYS + OPTIMISATION_KEYS if hasattr(config, key)}
    values.update(num_processes=num_processes, train_examples=train_examples, total_steps=total_steps)
    if isinstance(config.dataset, list):   # a mixture's weights can change its records but not their number
        values["mixture"] = config.dataset
    return values


def newest_valid_checkpoint(output_dir: str) -> str | None:
    for path in reversed(checkpoint_dirs(output_dir)):
        problem = check_checkpoint(path)
        if problem is None:
            return path
        log.warning("checkpoint %s is incomplete (%s); falling back to an older one", path, problem)
    return None


def check_output_dir(config: TrainingConfig) -> str | None:
    """Checks only (no side effects), early enough to fail before a model loads. Returns the
    checkpoint a run will resume from, if any."""
    out = config.output_dir
    check_writable_directory(out, "output_dir")
    if int(os.environ.get("RANK", "0")) == 0:   # the other ranks' main process holds it (train)
        check_not_held(out, "output_dir")
    resume = config.resume_from_checkpoint
    if resume == "latest":
        found = newest_valid_checkpoint(out)
        if found is None and checkpoint_dirs(out):
            raise ConfigError(f"resume_from_checkpoint: no complete checkpoint in '{out}/checkpoints' "
                              f"(every one failed its check); start again with overwrite_output_dir=true")
        if found is not None:
            return found
        log.info("resume_from_checkpoint=latest: no checkpoint in %s, starting from scratch", out)
    elif resume:
        problem = check_checkpoint(resume) if os.path.isdir(resume) else "not a directory"
        if problem:
            raise ConfigError(f"resume_from_checkpoint: '{resume}' is not a complete checkpoint ({problem})")
        return resume
    if config.overwrite_output_dir:
        return None
    if checkpoint_dirs(out):
        raise ConfigError(f"output_dir: '{out}' already holds checkpoints; pass resume_from_checkpoint=latest to "
                          f"continue or overwrite_output_dir=true to start again")
    if os.path.isdir(os.path.join(out, "final")):
        raise ConfigError(f"output_dir: '{out}' holds a finished run (final/); pass overwrite_output_dir=true to "
                          f"replace it, or choose another output_dir")
    return None


def prepare_output_dir(config: TrainingConfig, is_main: bool) -> str | None:
    """`check_output_dir`, then (main process) sweep leftovers and clear what overwrite replaces."""
    out = config.output_dir
    if is_main:
        for directory in (out, os.path.join(out, "checkpoints")):
            for what in sweep(directory):
                log.warning("cleaned up after an interrupted write: %s", what)
    resume = check_output_dir(config)
    if is_main and config.overwrite_output_dir and not resume:
        remove_directory(os.path.join(out, "checkpoints"))
        remove_directory(os.path.join(out, "final"))
        for name in ("metrics.jsonl", "run.json"):   # run.json says a run finished: not this one yet
            if os.path.isfile(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    return resume


def compare_settings(saved: dict[str, Any], current: dict[str, Any], checkpoint: str) -> list[str]:
    """Refuse changed data-order settings; return the changed optimisation settings (applied)."""
    for key in DATA_ORDER_KEYS:
        if key in saved and saved[key] != current.get(key):
            raise ConfigError(f"resume_from_checkpoint: {key} was {saved[key]!r} when {checkpoint} was saved and is "
                              f"{current.get(key)!r} now; the saved data position only holds for the same value "
                              f"(keep it, or start again with overwrite_output_dir=true)")
    return [f"{key} {saved[key]!r} -> {current.get(key)!r}" for key in OPTIMISATION_KEYS
            if key in saved and saved[key] != current.get(key)]


def apply_current_optimisation(optimizer: Any, scheduler: Any, fresh_groups: list[dict[str, Any]],
                               learning_rate: float) -> None:
    """After loading a checkpoint's optimizer and scheduler state, put back this run's settings:
    loading restores the old hyperparameters along with the moment estimates."""
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        group.update({k: v for k, v in fresh.items() if k not in ("params", "lr", "initial_lr")})
        group["initial_lr"] = learning_rate
    scheduler.base_lrs = [learning_rate] * len(optimizer.param_groups)
    for group, multiplier in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["lr"] = learning_rate * multiplier(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
