"""The layers depend in one direction: the pure losses and the data layer never import transformers."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["vietnamese_ai.losses", "vietnamese_ai.data.layout", "vietnamese_ai.data.tokenize",
                                    "vietnamese_ai.data.records"])
def test_low_layers_do_not_import_transformers(module):
    code = f"import sys, {module}; bad = [m for m in ('transformers', 'peft', 'accelerate') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"{module} imports {out}"



# Which of our packages each layer may import (docs/architecture.md). Higher layers may use lower ones.
ALLOWED = {
    "errors": set(),
    "files": {"errors"},
    "metric_names": set(),   # plain data: the names in metrics.jsonl that writers and readers share
    "progress": set(),       # a bar on a terminal, a line every few seconds in a log: for any long loop
    "losses": set(),
    "data": {"errors", "files"},
    "models": {"errors", "files", "data", "losses", "progress"},
    "training": {"errors", "files", "metric_names", "data", "losses", "models", "progress"},
    "scoring": {"errors", "files", "data", "losses", "models", "progress"},
    # feedback and evaluation meet only through the Scorer interface: neither imports the other
    "feedback": {"errors", "files", "data", "losses", "models", "scoring", "progress"},
    "evaluation": {"errors", "files", "data", "losses", "models", "scoring", "progress"},
    "recipes": {"errors", "files", "metric_names", "progress", "data", "losses", "models", "training", "scoring", "feedback",
                "evaluation"},
    "estimate": {"errors", "models", "scoring"},   # memory arithmetic from config files: loads no model
    "report": {"errors", "files", "metric_names"},   # reads run files only: no model, no training code
    "pipeline": {"errors", "files", "progress", "data", "losses", "models", "training", "scoring", "feedback", "evaluation",
                 "recipes", "report"},
}


def _imports(path):
    import ast

    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vietnamese_ai."):
            yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("vietnamese_ai."):
                    yield alias.name.split(".")[1]


def test_layers_import_only_downwards():
    import os

    import vietnamese_ai

    root = os.path.dirname(vietnamese_ai.__file__)
    for layer, allowed in ALLOWED.items():
        target = os.path.join(root, layer)
        # every file of the layer, those of its subpackages (recipes/online/) included
        files = [os.path.join(d, f) for d, _, names in os.walk(target) for f in names if f.endswith(".py")] \
            if os.path.isdir(target) else [target + ".py"]
        for path in files:
            for imported in _imports(path):
                assert imported == layer or imported in allowed, f"{path} imports vietnamese_ai.{imported}"


def test_the_online_engine_files_stay_short():
    """recipes/online/ is split so that each file reads in one sitting (docs/architecture.md#the-online-engine)."""
    import os

    import vietnamese_ai

    folder = os.path.join(os.path.dirname(vietnamese_ai.__file__), "recipes", "online")
    lengths = {f: sum(1 for _ in open(os.path.join(folder, f), encoding="utf-8"))
               for f in os.listdir(folder) if f.endswith(".py")}
    assert {"config.py", "rewards.py", "method.py", "source.py", "engine.py"} <= set(lengths)
    assert max(lengths.values()) <= 300, lengths
