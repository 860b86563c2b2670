"""Progress a user can see: tqdm's bar on a terminal, and a plain line every few seconds otherwise;
for training steps and for batches of generation alike.

A bar redrawn with carriage returns is one endless line in a log file or a CI job's output, so when
stderr is not a terminal the loop prints instead, at most every `every` seconds (and at the end):

    [sft] step 40/120 (33%), 0.45 s/step, about 36s left; loss=0.8123 lr=1.00e-03
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class LineProgress:
    """tqdm's update / set_postfix / close, as a line every `every` seconds."""

    def __init__(self, total: int, initial: int = 0, desc: str = "train", every: float = 10.0, stream: Any = None,
                 clock: Any = time.monotonic, unit: str = "step"):
        self.total, self.n, self.desc, self.every, self.unit = total, initial, desc, every, unit
        self.stream, self.clock = stream or sys.stderr, clock
        self.started, self.first, self.last_printed = clock(), initial, clock()
        self.postfix = ""
        self.printed, self.printed_at = False, initial

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last_printed >= self.every:
            self.print()

    def line(self) -> str:
        done = self.n - self.first
        per_step = (self.clock() - self.started) / done if done else 0.0
        left = per_step * max(self.total - self.n, 0)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        timing = f", {per_step:.2f} s/{self.unit}, about {left:.0f}s left" if done else ""
        return f"[{self.desc}] {self.unit} {self.n}/{self.total}{share}{timing}" + (f"; {self.postfix}" if self.postfix else "")

    def print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_printed, self.printed, self.printed_at = self.clock(), True, self.n

    def close(self) -> None:
        # A run long enough to have printed a line ends with one (where it stopped); a run of a few
        # seconds stays silent, as a bar that finished at once would be.
        if self.printed and self.n > self.printed_at:
            self.print()
        self.printed = False   # a second close prints nothing


class _Off:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **values: Any) -> None: ...
    def close(self) -> None: ...


def progress(total: int, initial: int, desc: str, disable: bool, unit: str = "step", leave: bool = True) -> Any:
    """tqdm on a terminal, LineProgress otherwise, nothing when disabled."""
    if disable:
        return _Off()
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, unit=unit, leave=leave)
    return LineProgress(total, initial, desc, unit=unit)


def tracked(items: Iterable[T], total: int, desc: str, disable: bool, unit: str = "batch") -> Iterator[T]:
    """`items`, with progress shown as they are consumed (a bar left off the screen when done)."""
    bar = progress(total, 0, desc, disable, unit=unit, leave=False)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
