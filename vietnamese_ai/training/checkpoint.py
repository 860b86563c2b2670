"""Checkpoints that are written atomically, checked before use, and resume exactly.

A checkpoint directory holds the model in Hugging Face format (so it can be loaded on its own) and
optimizer.pt, or, for a run whose parameters are sharded (FSDP2), `distributed/`: each rank's shard of
the weights and of the optimizer state, written by torch.distributed.checkpoint, with no rank ever
holding the whole; then scheduler.json, rng_state_RANK.pth (the random generators of each process: torch, CUDA,
Python, NumPy; each rank draws its own dropout masks, so each rank's state is kept) and, written last,
trainer_state.json:
the step, the position in the epoch's data order, the sums of the metrics window that was not logged
yet, the settings the run was started with, and the size of every other file in the directory.

Writing goes through files.atomic_directory (temporary directory, fsync, rename), so a crash never
leaves a half-written checkpoint under a valid name. Pruning renames a checkpoint away before deleting
it, for the same reason. Before resuming, `check_checkpoint` compares the recorded file sizes with
what is on disk, so a checkpoint damaged later (a disk error, a manual copy cut short) is skipped
rather than trusted.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from vietnamese_ai.errors import ConfigError
from vietnamese_ai.files import remove_directory
from vietnamese_ai.training.distributed import SHARDED_STATE

log = logging.getLogger("vietnamese_ai")

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"
# Checkpoints written before each rank's generators were kept hold rank 0's alone, in these two files.
LEGACY_RNG, LEGACY_PYTHON_RNG = "rng.safetensors", "python_rng.json"


@dataclass
class TrainerState:
    global_step: int = 0      # optimizer steps done
    epoch: int = 0            # epoch the next micro-batch comes from
    micro_index: int = 0      # index of the next micro-batch within that epoch's order
    tokens_seen: int = 0
    seconds: float = 0.0      # wall time of the completed steps, summed across resumes (run.json)
    # Sums of the metrics window since the last metrics.jsonl line (training.metrics.Window.state), so
    # that a resumed run logs the same numbers as an uninterrupted one whatever save_steps is.
    log_window: dict[str, Any] = field(default_factory=dict)
    # The settings that decide the data order and the optimisation (training.loop.run_settings).
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)   # relative path -> size in bytes

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def checkpoint_dirs(output_dir: str) -> list[str]:
    """Checkpoint directories by name, oldest first (see `check_checkpoint` for their state)."""
    root = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(root) if (m := CHECKPOINT_PATTERN.match(name))]
    return [os.path.join(root, name) for _, name in sorted(found)]


def _file_sizes(root: str) -> dict[str, int]:
    sizes = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            sizes[os.path.relpath(path, root)] = os.path.getsize(path)
    return sizes


def rng_file(rank: int) -> str:
    return f"rng_state_{rank}.pth"


def check_checkpoint(path: str) -> str | None:
    """None if `path` is a complete checkpoint, else what is wrong with it."""
    state_path = os.path.join(path, STATE_FILE)
    if not os.path.isfile(state_path):
        return f"no {STATE_FILE}"
    try:
        with open(state_path) as f:
            state = TrainerState(**json.load(f))
    except (OSError, ValueError, TypeError) as e:
        return f"{STATE_FILE} is unreadable ({type(e).__name__})"
    if not state.files:
        return f"{STATE_FILE} lists no files"
    for name, size in state.files.items():
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            return f"{name} is missing"
        if os.path.getsize(full) != size:
            return f"{name} has {os.path.getsize(full)} bytes, {size} were written"
    if LEGACY_RNG not in state.files:   # written before each rank's generators were kept: one file for all
        for rank in range(int(state.settings.get("num_processes", 1))):
            if rng_file(rank) not in state.files:
                return f"no {rng_file(rank)} (the random state of process {rank})"
    return None


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda{i}"] = s
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    cuda = [state[k] for k in sorted(state) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


@dataclass
class RandomState:
    """Every random generator this process's training step may draw from (dropout; a user's reward
    function or collator). The data order is seeded separately."""

    torch_state: dict[str, torch.Tensor]
    python_state: Any
    numpy_state: Any = None

    @classmethod
    def capture(cls) -> "RandomState":
        return cls(rng_state(), random.getstate(), np.random.get_state())

    def restore(self) -> None:
        set_rng_state(self.torch_state)
        random.setstate(self.python_state)
        if self.numpy_state is not None:
            np.random.set_state(self.numpy_state)

    def to_file(self, path: str) -> None:
        """Tensors, numbers and lists only, so that reading it back needs no unpickling of objects."""
        name, keys, position, has_gauss, gauss = self.numpy_state
        version, internal, python_gauss = self.python_state
        torch.save({"torch": self.torch_state, "python": [version, list(internal), python_gauss],
                    "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]}, path)

    @classmethod
    def from_file(cls, path: str) -> "RandomState":
        saved = torch.load(path, weights_only=True, map_location="cpu")
        version, internal, python_gauss = saved["python"]
        name, keys, position, has_gauss, gauss = saved["numpy"]
        return cls(saved["torch"], (version, tuple(internal), python_gauss),
                   (name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))


def read_random_state(path: str, rank: int) -> RandomState:
    """This process's generators as `path` saved them (see `compare_settings` for the world size)."""
    if os.path.isfile(os.path.join(path, rng_file(rank))):
        return RandomState.from_file(os.path.join(path, rng_file(rank)))
    if rank > 0:
        log.warning("%s holds the random state of process 0 only (it was saved by an earlier version): process "
                    "%d restores that one, so its dropout after the resume differs from an uninterrupted run", path, rank)
    with open(os.path.join(path, LEGACY_PYTHON_RNG)) as f:
        version, internal, gauss = json.load(f)
    return RandomState(load_file(os.path.join(path, LEGACY_RNG)), (version, tuple(internal), gauss))


def write_training_state(path: str, optimizer: torch.optim.Optimizer | None, scheduler: Any, state: TrainerState,
                         randomness: list[RandomState] | None = None) -> None:
    """Everything but the weights, trainer_state.json last. `optimizer=None` (sharded runs, whose
    optimizer state is in distributed/) writes no optimizer.pt; `randomness` holds every process's generators, by rank (default: this process's
    current state, for a single-process run)."""
    randomness = randomness or [RandomState.capture()]
    if optimizer is not None:
        torch.save(optimizer.state_dict(), os.path.join(path, "optimizer.pt"))
    with open(os.path.join(path, "scheduler.json"), "w") as f:
        json.dump(scheduler.state_dict(), f)
    for rank, generators in enumerate(randomness):
        generators.to_file(os.path.join(path, rng_file(rank)))
    state.files = _file_sizes(path)
    with open(os.path.join(path, STATE_FILE), "w") as f:
        f.write(state.to_json())


def read_trainer_state(path: str) -> TrainerState:
    with open(os.path.join(path, STATE_FILE)) as f:
        return TrainerState(**json.load(f))


def _launch(engine: str | None, processes: int) -> str:
    """The launch command that runs `engine` with `processes` processes."""
    if engine and engine.startswith("deepspeed-zero"):
        return f"accelerate launch --use_deepspeed --zero_stage {engine[-1]} --num_processes {processes}"
    return f"accelerate launch --use_fsdp --fsdp_version 2 --num_processes {processes}"


def check_resumable(path: str, engine: str, world_size: int) -> None:
    """Refuse, before any weight is touched, a checkpoint that a run under `engine` cannot resume exactly
    (the number of processes is checked with the other settings that decide the data order)."""
    settings = read_trainer_state(path).settings
    saved_by, processes = settings.get("engine"), settings.get("num_processes", 1)
    sharded_state = os.path.isdir(os.path.join(path, SHARDED_STATE))
    sharded_run = engine not in ("none", "ddp")
    if sharded_state and (not sharded_run or (saved_by and saved_by != engine)):
        raise ConfigError(f"resume_from_checkpoint: '{path}' holds the sharded state of a {saved_by or 'sharded'} run "
                          f"of {processes} processes, which this {engine} run of {world_size} cannot read; resume it "
                          f"as it was saved: {_launch(saved_by, processes)}")
    if sharded_run and not sharded_state:
        raise ConfigError(f"resume_from_checkpoint: '{path}' was saved by a run whose parameters were not sharded, "
                          f"which this {engine} run cannot resume; resume it as it was saved (without --use_fsdp or "
                          f"--use_deepspeed), or start a new run from its weights with model_name_or_path={path}")
    if not sharded_state and not os.path.isfile(os.path.join(path, "optimizer.pt")):
        raise ConfigError(f"resume_from_checkpoint: '{path}' has no optimizer state (it was saved by a sharded "
                          f"run of an earlier version), so it cannot resume exactly; start a new run from its "
                          f"weights with model_name_or_path={path}")


def read_training_state(path: str, optimizer: torch.optim.Optimizer | None, scheduler: Any,
                        rank: int = 0) -> TrainerState:
    """Restore the optimizer (None: restored with the sharded state), the schedule and process `rank`'s
    random generators; return the trainer state."""
    # weights_only: the optimizer file holds tensors and numbers; nothing else may be unpickled.
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(os.path.join(path, "optimizer.pt"), weights_only=True,
                                             map_location="cpu"))
    with open(os.path.join(path, "scheduler.json")) as f:
        scheduler.load_state_dict(json.load(f))
    read_random_state(path, rank).restore()
    return read_trainer_state(path)


def prune_checkpoints(output_dir: str, keep: int | None) -> None:
    """Keep the newest `keep` checkpoints. Each one goes by rename-then-delete, so a kill during
    pruning never leaves a half-deleted checkpoint under a valid name."""
    if keep is None:
        return
    for path in checkpoint_dirs(output_dir)[:-keep]:
        remove_directory(path)
