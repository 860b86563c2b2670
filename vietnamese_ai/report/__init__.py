"""`vietnamese-ai report RUN_DIR... --output report.html`: one self-contained HTML page built only
from run files (metrics.jsonl, config.yaml, run.json, eval.json, samples.jsonl, summary.json).

No model is loaded and nothing is fetched: plotly.js is inlined, so the page opens offline in any
browser. `runs.py` reads the files, `figures.py` draws, `page.py` lays the page out.
"""

from __future__ import annotations

import os

from vietnamese_ai.errors import UserError
from vietnamese_ai.files import atomic_file, check_writable_file
from vietnamese_ai.report.runs import RunFiles, collect


def build_report(paths: list[str], output: str, title: str = "vietnamese-ai report") -> RunFiles:
    """Write the report of the runs under `paths` to `output`; returns what was read."""
    if not paths:
        raise UserError("report: give one or more run directories")
    check_writable_file(output, "--output")
    found = collect(paths)
    from plotly.offline import get_plotlyjs

    from vietnamese_ai.report.page import render

    text = render(found, title, get_plotlyjs())
    if os.path.dirname(output):
        os.makedirs(os.path.dirname(output), exist_ok=True)
    with atomic_file(output) as f:
        f.write(text)
    return found
