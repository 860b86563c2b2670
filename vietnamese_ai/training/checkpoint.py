"""Checkpoints that are written atomically and resume exactly.

A checkpoint directory holds the model in Hugging Face format (so it can be loaded on its own),
optimizer.pt, scheduler.json, rng.safetensors and trainer_state.json (step, epoch and the position in
the epoch's data order). It is written to a hidden temporary directory and renamed into place, so a
crash mid-write never leaves a half-written checkpoint and never replaces a good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vietnamese_ai.errors import ConfigError

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    global_step: int = 0      # optimizer steps done
    epoch: int = 0            # epoch the next micro-batch comes from
    micro_index: int = 0      # index of the next micro-batch within that epoch's order
    tokens_seen: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Yield a temporary directory that replaces `path` only if the block finishes without error."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(path):
        old = os.path.join(parent, f".old-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
        os.rename(path, old)
    os.rename(tmp, path)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def checkpoint_dirs(output_dir: str) -> list[str]:
    """Complete checkpoints, oldest first."""
    root = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(root) if (m := CHECKPOINT_PATTERN.match(name))]
    return [os.path.join(root, name) for _, name in sorted(found)]


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


def write_training_state(path: str, optimizer: torch.optim.Optimizer | None, scheduler: Any, state: TrainerState) -> None:
    """Everything but the weights. `optimizer=None` (sharded runs) writes no optimizer state."""
    if optimizer is not None:
        torch.save(optimizer.state_dict(), os.path.join(path, "optimizer.pt"))
    with open(os.path.join(path, "scheduler.json"), "w") as f:
        json.dump(scheduler.state_dict(), f)
    save_file(rng_state(), os.path.join(path, "rng.safetensors"))
    with open(os.path.join(path, "python_rng.json"), "w") as f:
        json.dump(random.getstate(), f)
    with open(os.path.join(path, "trainer_state.json"), "w") as f:
        f.write(state.to_json())


def read_training_state(path: str, optimizer: torch.optim.Optimizer, scheduler: Any) -> TrainerState:
    if not os.path.isfile(os.path.join(path, "optimizer.pt")):
        raise ConfigError(f"resume_from_checkpoint: '{path}' has no optimizer state (it was saved by a sharded "
                          f"FSDP/DeepSpeed run), so it cannot resume exactly; start a new run from its weights "
                          f"with model_name_or_path={path}")
    # weights_only: the optimizer file holds tensors and numbers; nothing else may be unpickled.
    optimizer.load_state_dict(torch.load(os.path.join(path, "optimizer.pt"), weights_only=True, map_location="cpu"))
    with open(os.path.join(path, "scheduler.json")) as f:
        scheduler.load_state_dict(json.load(f))
    set_rng_state(load_file(os.path.join(path, "rng.safetensors")))
    with open(os.path.join(path, "python_rng.json")) as f:
        version, internal, gauss = json.load(f)
        random.setstate((version, tuple(internal), gauss))
    with open(os.path.join(path, "trainer_state.json")) as f:
        return TrainerState(**json.load(f))


def prune_checkpoints(output_dir: str, keep: int | None) -> None:
    if keep is None:
        return
    for path in checkpoint_dirs(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
