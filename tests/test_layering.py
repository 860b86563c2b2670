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

