"""Reward functions written in Python: `python:FILE.py:FUNCTION`.

The function has TRL's reward-function signature, so functions written for TRL work unchanged:

    def my_reward(prompts, completions, completion_ids, **kwargs) -> list[float | None]

`prompts` and `completions` hold one entry per completion: strings for plain-text prompts, or, for
conversational prompts, the list of messages and a one-message list [{"role": "assistant",
"content": ...}]. `kwargs` holds the data set's other columns (one value per completion) and
`trainer_state` (with `global_step`). None means "does not apply to this completion".
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

from vietnamese_ai.errors import ConfigError

PREFIX = "python:"


def load_reward_function(spec: str) -> tuple[str, Callable[..., Any]]:
    """(the function's name, the function) from 'python:path/to/file.py:function_name'."""
    body = spec[len(PREFIX):]
    path, _, name = body.rpartition(":")
    if not path or not name:
        raise ConfigError(f"reward: '{spec}' should be python:FILE.py:FUNCTION")
    if not os.path.isfile(path):
        raise ConfigError(f"reward: '{spec}': file '{path}' not found")
    module_name = f"vietnamese_ai_reward_{abs(hash(os.path.abspath(path)))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"reward: '{spec}': '{path}' is not a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:  # the user's file: any error in it is theirs to fix, reported in one line
        raise ConfigError(f"reward: importing '{path}' failed: {type(e).__name__}: {e}") from None
    function = getattr(module, name, None)
    if function is None:
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ConfigError(f"reward: '{path}' defines no '{name}'" + (f"; it defines {', '.join(found)}" if found else ""))
    if not callable(function):
        raise ConfigError(f"reward: '{name}' in '{path}' is not a function")
    return name, function
