"""Where the micro-batches of each optimizer step come from.

The training loop asks a `StepSource` for one step's micro-batches at a time and knows nothing
else about them. Two kinds exist:

- `DatasetSource` (SFT, DPO, reward models, ...): a fixed list of examples, a seeded permutation per
  epoch cut into micro-batches (`DataSchedule`). Its position lives in the trainer state.
- an online source (recipes/online.py): it *generates* its batches, sampling completions from the
  model being trained, scoring them, and laying them out; it keeps a rollout buffer between steps.

A source may also hand the loop metric sums for the step (rollout statistics, phase timings) and
extremes (min/max), which are logged with the loss; and any state the trainer state does not hold,
as JSON, which goes into every checkpoint so that a resumed run continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.training.checkpoint import TrainerState


@dataclass
class StepBatches:
    """One optimizer step's micro-batches for this process, and what the source measured on the way."""

    batches: list[PackedBatch]
    sums: dict[str, tuple[float, float]] = field(default_factory=dict)      # key -> (sum, count): a mean
    extremes: dict[str, tuple[str, float]] = field(default_factory=dict)    # key -> ("min" | "max", value)


class StepSource(Protocol):
    examples: int            # how many examples (or prompts) it draws from; a resumed run must have as many

    def setup(self, accelerator: Any) -> int:
        """Plan for this process of `accelerator`; returns the number of optimizer steps per epoch."""

    def attach(self, model: Any, output_dir: str, resume_step: int | None) -> None:
        """The model being trained (prepared by accelerate), for sources that sample from it; the run's
        directory and the step it resumed from, for sources that write logs of their own."""

    def next_step(self, state: TrainerState) -> StepBatches:
        """This process's micro-batches for the next optimizer step; may advance `state`."""

    def state_dict(self) -> dict[str, Any]:
        """What the source keeps beyond `state` (JSON), for checkpoints and for rolling back a step."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class DataSchedule:
    """Which examples each optimizer step sees: a seeded permutation per epoch, cut into micro-batches,
    micro-batch m of a step going to rank m % world. Resuming needs only (epoch, micro_index)."""

    size: int
    batch_size: int
    accumulation: int
    world: int
    rank: int
    seed: int

    def __post_init__(self) -> None:
        # Every rank gets the same number of micro-batches; a remainder smaller than `world` is dropped.
        self.micro_per_epoch = math.ceil(self.size / self.batch_size) // self.world * self.world
        if self.micro_per_epoch == 0:
            raise ConfigError(f"per_device_train_batch_size: {self.size} training examples cannot fill one "
                              f"micro-batch on each of {self.world} processes")
        self.steps_per_epoch = math.ceil(self.micro_per_epoch // self.world / self.accumulation)
        self._order: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._order = (epoch, torch.randperm(self.size, generator=generator).tolist())
        return self._order[1]

    def next_step(self, state: TrainerState) -> list[list[int]]:
        """This rank's micro-batches (example indices) for one optimizer step; advances `state`."""
        order = self.order(state.epoch)
        rounds = min(self.accumulation, (self.micro_per_epoch - state.micro_index) // self.world)
        batches = []
        for r in range(rounds):
            m = state.micro_index + r * self.world + self.rank
            batches.append(order[m * self.batch_size:(m + 1) * self.batch_size])
        state.micro_index += rounds * self.world
        if state.micro_index >= self.micro_per_epoch:
            state.epoch, state.micro_index = state.epoch + 1, 0
        return batches



class DatasetSource:
    """A fixed list of examples, laid out by `collate`, in the order `DataSchedule` gives."""

    def __init__(self, data: Sequence[Any], collate: Callable[[list[Any]], PackedBatch], batch_size: int,
                 accumulation: int, seed: int):
        self.data, self.collate = data, collate
        self.batch_size, self.accumulation, self.seed = batch_size, accumulation, seed
        self.examples = len(data)
        self.schedule: DataSchedule | None = None

    def setup(self, accelerator: Any) -> int:
        self.schedule = DataSchedule(len(self.data), self.batch_size, self.accumulation, accelerator.num_processes,
                                     accelerator.process_index, self.seed)
        return self.schedule.steps_per_epoch

    def attach(self, model: Any, output_dir: str, resume_step: int | None) -> None:
        pass

    def next_step(self, state: TrainerState) -> StepBatches:
        return StepBatches([self.collate([self.data[i] for i in indices]) for indices in self.schedule.next_step(state)])

    def state_dict(self) -> dict[str, Any]:
        return {}  # the position is the trainer state's (epoch, micro_index)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
