"""metrics.jsonl and the window of sums behind each of its lines.

A line is written every `logging_steps` optimizer steps; it holds item-weighted means since the
previous line, summed over all processes. The sums of a window that has not been logged yet are
saved in every checkpoint (`Window.state`), so a run resumed from a checkpoint taken in the middle
of a window logs exactly what the uninterrupted run logs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import torch

from vietnamese_ai.files import atomic_file

log = logging.getLogger("vietnamese_ai")


def reduce_sums(accelerator: Any, values: list[float]) -> list[float]:
    """Element-wise sums over all processes."""
    if accelerator.num_processes == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(tensor, reduction="sum").tolist()


class MetricsLog:
    """metrics.jsonl: one JSON object per logged step, always with `step` and `loss`."""

    def __init__(self, path: str, resume_step: int | None, enabled: bool):
        self.path, self.enabled, self.history = path, enabled, []
        if not enabled:
            return
        kept: list[dict[str, Any]] = []
        if resume_step is not None and os.path.isfile(path):
            kept = self._read_until(resume_step)
        # Rewritten atomically: a kill here leaves the old file, never a truncated one.
        with atomic_file(path) as f:
            f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in kept)
        self.history = kept

    def _read_until(self, step: int) -> list[dict[str, Any]]:
        """Records up to `step`: lines after it belong to the interrupted run's lost steps. A line
        that does not parse (a kill in the middle of a write) is dropped with a warning."""
        kept = []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    record_step = int(record["step"])
                except (ValueError, KeyError, TypeError):
                    log.warning("%s: line %d is incomplete (the run was killed while writing it); dropped",
                                self.path, number)
                    continue
                if record_step <= step:
                    kept.append(record)
        return kept

    def write(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


class Window:
    """Sums since the last log line."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self.loss, self.items, self.tokens = state.get("loss", 0.0), state.get("items", 0.0), state.get("tokens", 0.0)
        self.metrics: dict[str, tuple[float, float]] = {k: tuple(v) for k, v in state.get("metrics", {}).items()}
        self.extremes: dict[str, tuple[str, float]] = {k: tuple(v) for k, v in state.get("extremes", {}).items()}
        self.start = time.perf_counter() - state.get("seconds", 0.0)

    def add(self, out: Any, batch: Any) -> None:
        """Add a micro-batch's StepOutput (loss sum, metric sums) and its PackedBatch's counts."""
        self.loss += float(out.loss.detach())
        self.items += batch.num_items
        self.tokens += batch.num_tokens
        for key, value in out.metrics.items():
            total, count = value if isinstance(value, tuple) else (value, batch.num_items)
            s, c = self.metrics.get(key, (0.0, 0.0))
            self.metrics[key] = (s + float(total), c + float(count))

    def add_sums(self, sums: dict[str, tuple[float, float]], extremes: dict[str, tuple[str, float]] | None = None) -> None:
        """Metric (sum, count) pairs and ("min" | "max", value) extremes measured outside the loss
        (a step source's rollout statistics and timings)."""
        for key, (total, count) in sums.items():
            s, c = self.metrics.get(key, (0.0, 0.0))
            self.metrics[key] = (s + float(total), c + float(count))
        for key, (kind, value) in (extremes or {}).items():
            old = self.extremes.get(key)
            keep = value if old is None else (min if kind == "min" else max)(old[1], float(value))
            self.extremes[key] = (kind, float(keep))

    def _reduced_extremes(self, accelerator: Any) -> dict[str, float]:
        if accelerator.num_processes == 1 or not self.extremes:
            return {k: v for k, (_, v) in self.extremes.items()}
        import torch.distributed as dist

        out = {}
        for key in sorted(self.extremes):  # every rank logs the same keys (its source yields them each step)
            kind, value = self.extremes[key]
            tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
            dist.all_reduce(tensor, op=dist.ReduceOp.MIN if kind == "min" else dist.ReduceOp.MAX)
            out[key] = float(tensor)
        return out

    def _flat(self, accelerator: Any) -> tuple[list[str], list[float]]:
        keys = sorted(self.metrics)
        flat = [self.loss, float(self.items), float(self.tokens)] + [x for k in keys for x in self.metrics[k]]
        return keys, reduce_sums(accelerator, flat)

    def reduced(self, accelerator: Any) -> tuple[float, float, float, dict[str, float]]:
        """(loss sum, items, tokens, metric means), summed over all processes."""
        keys, sums = self._flat(accelerator)
        means = {k: sums[3 + 2 * i] / sums[4 + 2 * i] for i, k in enumerate(keys) if sums[4 + 2 * i] > 0}
        means.update(self._reduced_extremes(accelerator))
        return sums[0], sums[1], sums[2], means

    def state(self, accelerator: Any) -> dict[str, Any]:
        """The window's sums over all processes (a collective call: every rank must make it). A
        resumed run gives them to rank 0 and zeros to the others, so the next line's sums are equal."""
        keys, sums = self._flat(accelerator)
        return {"loss": sums[0], "items": sums[1], "tokens": sums[2], "seconds": time.perf_counter() - self.start,
                "metrics": {k: [sums[3 + 2 * i], sums[4 + 2 * i]] for i, k in enumerate(keys)},
                "extremes": {k: [self.extremes[k][0], v] for k, v in self._reduced_extremes(accelerator).items()}}

    def copy(self) -> "Window":
        other = Window()
        other.loss, other.items, other.tokens, other.start = self.loss, self.items, self.tokens, self.start
        other.metrics, other.extremes = dict(self.metrics), dict(self.extremes)
        return other
