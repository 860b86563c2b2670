"""Errors that a user can fix. Each prints as one line; the CLI shows it without a traceback.

`UserError` marks a mistake in the user's input (a config key, a data record, a path);
anything else that escapes is a bug in this package and keeps its traceback.
"""

from __future__ import annotations


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


class TrainingError(UserError):
    """Training cannot go on (for example the loss became NaN); says what was kept."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run; `message` says what was kept. The CLI exits 128 + signal."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum, self.message = signum, message
