"""run.json: what a finished run was (its method, library versions, when it ran, how long it took).

Written once, atomically, when a run finishes, so its presence means the run completed; the report
reads it to show versions and time per stage without loading anything."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from typing import Any

from vietnamese_ai.files import atomic_file

PACKAGES = ("vietnamese-ai", "torch", "transformers", "peft", "accelerate", "datasets")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_run_info(output_dir: str, method: str, **values: Any) -> None:
    info = {"method": method, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(), **values}
    with atomic_file(os.path.join(output_dir, "run.json")) as f:
        json.dump(info, f, ensure_ascii=False, indent=2)
