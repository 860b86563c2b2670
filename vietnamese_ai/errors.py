"""Errors that a user can fix. Each prints as one line; the CLI shows it without a traceback.

`UserError` marks a mistake in the user's input (a config key, a data record, a path);
anything else that escapes is a bug in this package and keeps its traceback. `UserCodeError` is the
one that is not one line: the user's own code (a pipeline's `python` stage) failed, and the user
needs their traceback, without this package's frames.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import Any


class UserError(Exception):
    """A mistake in the user's input, explained in one line."""

    def __str__(self) -> str:
        # Collapse any stray newlines so the message is always exactly one line.
        return " ".join(str(self.args[0]).split()) if self.args else ""


class ConfigError(UserError):
    """A bad configuration key or value."""


class DataError(UserError):
    """A bad data file or record: the message names the file, the record and the field."""

    @classmethod
    def at(cls, where: str, field: str | None, problem: str) -> "DataError":
        """`where` names the file and record, e.g. "train.jsonl: line 3"."""
        if field is not None:
            where += f": field '{field}'"
        return cls(f"{where}: {problem}")


class UserCodeError(UserError):
    """The user's own code failed: one header line saying where, then the user's traceback."""

    def __init__(self, header: str, user_traceback: str):
        super().__init__(header)
        self.header, self.user_traceback = header, user_traceback

    @classmethod
    def of(cls, header: str, error: BaseException) -> "UserCodeError":
        """Call it in the `except` of the frame that called the user's code: that frame (ours) and the
        import machinery's frames are left out (as Python leaves them out of an import statement's
        traceback); the user's frames, and those of what their code called, stay."""
        caught = error.__traceback__
        shown = traceback.TracebackException(type(error), error, caught.tb_next if caught else None)
        shown.stack = traceback.StackSummary.from_list(
            [f for f in shown.stack if not (f.filename.startswith("<frozen importlib") or f.filename == importlib.__file__)])
        return cls(header, "".join(shown.format()).rstrip("\n"))

    def __str__(self) -> str:
        return f"{self.header}\n{self.user_traceback}"


class TrainingError(UserError):
    """Training cannot go on (for example the loss became NaN); says what was kept."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run; `message` says what was kept. The CLI exits 128 + signal."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum, self.message = signum, message


class OneLineParser(argparse.ArgumentParser):
    """argparse for the commands that take flags (report, chat, export): a usage mistake is one
    UserError line naming the command, instead of usage text and an exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """Also `key=value` for an option `--key` (max_new_tokens=64 as --max-new-tokens 64), the way
        every other command takes its settings."""
        flags = {a.dest: a for a in self._actions if a.option_strings}
        out: list[str] = []
        for item in args if args is not None else sys.argv[1:]:
            key, eq, value = item.partition("=")
            action = flags.get(key.replace("-", "_")) if eq and not item.startswith("-") else None
            if action is None:
                out.append(item)
            elif action.nargs == 0:   # a switch: true or false
                if value.lower() not in ("true", "false"):
                    self.error(f"{key}: expected true or false, got '{value}'")
                out += [action.option_strings[-1]] if value.lower() == "true" else []
            else:
                out += [action.option_strings[-1], value]
        return super().parse_args(out, namespace)
