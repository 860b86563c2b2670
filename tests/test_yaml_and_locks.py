"""Two kinds of input that used to be lost without a word.

- A key given twice in a YAML file (two `sft:` stages, a config key twice, a principle's field twice):
  a plain YAML reader keeps the last one, so the first disappears; every YAML the toolkit reads
  refuses it, naming the file, the line and the key.
- Two runs writing into one output_dir: the second one's start-up clean-up would delete the first's
  checkpoint being written; a run holds a lock on its output_dir, and a second run is refused in one
  line naming the holder, while a lock left by a killed process is taken over.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.data.loading import read_yaml
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.feedback.constitution import load_constitution
from vietnamese_ai.pipeline.spec import load_pipeline
from vietnamese_ai.recipes.sft import SFTConfig
from vietnamese_ai.training.config import load_config

HERE = os.path.dirname(os.path.abspath(__file__))


# --- duplicate keys ------------------------------------------------------------------------------

def test_a_pipeline_with_two_stages_of_one_name_is_refused_naming_the_line(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text("output_dir: out\n"
                    "stages:\n"
                    "  sft:\n"
                    "    model_name_or_path: a\n"
                    "    dataset: d.jsonl\n"
                    "  sft:\n"
                    "    model_name_or_path: b\n"
                    "    dataset: d.jsonl\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_pipeline(str(path))
    assert str(e.value) == f"{path}: line 6: key 'sft' appears twice (first on line 3)"
    # The same through the command line: one line on stderr, exit code 2, nothing run.
    assert main(["pipeline", "run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vietnamese-ai: error: {path}: line 6: key 'sft' appears twice (first on line 3)"]


def test_a_config_file_with_a_key_twice_is_refused(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("model_name_or_path: m\n"
                    "learning_rate: 1e-3\n"
                    "dataset: d.jsonl\n"
                    "learning_rate: 1e-5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: line 4: key 'learning_rate' appears twice \(first on line 2\)$"):
        load_config(SFTConfig, str(path))


def test_a_nested_duplicate_is_refused_and_equal_keys_in_different_mappings_are_not(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("principles:\n"
                    "  - id: respectful\n"
                    "    description: {vi: a, en: b}\n"
                    "    critique: {vi: a, en: b, vi: c}\n"
                    "    revision: {vi: a, en: b}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: line 4: key 'vi' appears twice \(first on line 4\)$"):
        load_constitution(str(path))
    # The same key in two different mappings is no duplicate; YAML merge keys (<<) may be overridden.
    ok = tmp_path / "ok.yaml"
    ok.write_text("base: &b {x: 1, y: 2}\n"
                  "a: {x: 1}\n"
                  "b: {x: 1}\n"
                  "c:\n"
                  "  <<: *b\n"
                  "  x: 3\n", encoding="utf-8")
    assert read_yaml(str(ok)) == {"base": {"x": 1, "y": 2}, "a": {"x": 1}, "b": {"x": 1}, "c": {"x": 3, "y": 2}}


def test_a_constitution_with_a_principle_field_twice_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("principles:\n"
                    "  - id: respectful\n"
                    "    weight: 1\n"
                    "    description: {vi: a, en: b}\n"
                    "    critique: {vi: a, en: b}\n"
                    "    revision: {vi: a, en: b}\n"
                    "    weight: 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: line 7: key 'weight' appears twice \(first on line 3\)$"):
        load_constitution(str(path))


def test_keys_equal_once_read_are_duplicates(tmp_path):
    # `yes` and `true` are both the boolean true, 1 and 0x1 both the integer 1: a plain reader keeps one.
    path = tmp_path / "x.yaml"
    path.write_text("a:\n  1: one\n  0x1: also one\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 3: key '0x1' appears twice \(first on line 2\)"):
        read_yaml(str(path))


def test_a_command_line_value_with_a_key_twice_is_refused():
    with pytest.raises(ConfigError, match=r"^command line: 'lora_target_modules=\{a: 1, a: 2\}': key 'a' appears twice$"):
        load_config(SFTConfig, None, ["model_name_or_path=m", "dataset=d.jsonl", "lora_target_modules={a: 1, a: 2}"])
    # A value that is not YAML at all still stays text, as before.
    config = load_config(SFTConfig, None, ["model_name_or_path=m", "dataset=d.jsonl", "output_dir=runs/{a"])
    assert config.output_dir == "runs/{a"


def test_a_run_config_yaml_with_a_key_twice_is_refused_by_the_report(tmp_path):
    from vietnamese_ai.errors import DataError
    from vietnamese_ai.report.runs import collect

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("learning_rate: 1\nseed: 2\nlearning_rate: 3\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{run / 'config.yaml'}: line 3: key 'learning_rate' appears twice "
                                        rf"\(first on line 1\)$"):
        collect([str(run)])


def test_the_yaml_reader_stays_safe(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: !!python/object/apply:os.system ['true']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 1: invalid YAML"):
        read_yaml(str(path))
