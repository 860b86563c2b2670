"""Every module's doctests run. The modules are found by walking the package's files, so that a new
module's examples are checked without being listed anywhere. (pkgutil.walk_packages skips folders
without an __init__.py, such as vietnamese_ai/data/, so the walk goes over the files themselves.)"""

import doctest
import importlib
import os
import pkgutil

import pytest

import vietnamese_ai

ROOT = os.path.dirname(os.path.abspath(vietnamese_ai.__file__))


def module_names() -> list[str]:
    names = []
    for directory, folders, files in os.walk(ROOT):
        folders[:] = sorted(f for f in folders if f != "__pycache__")
        for file in sorted(files):
            if not file.endswith(".py") or file == "__main__.py":   # a __main__ module runs its program when imported
                continue
            parts = os.path.relpath(os.path.join(directory, file[:-3]), os.path.dirname(ROOT)).split(os.sep)
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = module_names()


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_in_its_docstrings_hold(name):
    module = importlib.import_module(name)
    runner, report = doctest.DocTestRunner(), []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_the_walk_finds_every_module():
    """Both kinds of folder: regular packages (what pkgutil finds) and the namespace folder data/."""
    found = {m.name for m in pkgutil.walk_packages(vietnamese_ai.__path__, "vietnamese_ai.")
             if not m.name.endswith("__main__")}
    assert found <= set(MODULES) and "vietnamese_ai.data.layout" in MODULES and "vietnamese_ai" in MODULES
