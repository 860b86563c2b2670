"""Stop on Ctrl-C or SIGTERM (what cluster schedulers send before killing a job) without tearing
an optimizer step in half.

Inside `StopSignals`, both signals raise `Interrupted` at once, except within `critical()`: there
the signal is remembered and raised when the section ends. The training loop wraps the optimizer
update in `critical()`, so an interrupted run always stops with the weights, the optimizer state
and the step counter describing the same completed step, and can checkpoint it. It also wraps the
step's logging (and evaluation) in `critical(hard=False)`, so that the checkpoint taken on the way
out does not hold a window that was half logged; there a second signal is obeyed at once, for a
user who does not want to wait for an evaluation to finish.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from vietnamese_ai.errors import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    def __init__(self) -> None:
        self.depth = 0
        self.hard = 0          # how many of the open sections must not be left early
        self.pending: int | None = None
        self.previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.depth > 0 and (self.hard > 0 or self.pending is None):
            self.pending = signum
            return
        self.pending = None
        raise Interrupted(signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for signum in HANDLED:
                self.previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    @contextlib.contextmanager
    def critical(self, hard: bool = True) -> Iterator[None]:
        self.depth += 1
        self.hard += hard
        try:
            yield
        finally:
            self.depth -= 1
            self.hard -= hard
        if self.depth == 0 and self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)
