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
import subprocess
import sys
import time

import pytest

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


# --- one run per output_dir ----------------------------------------------------------------------

ENV = {**os.environ, "PYTHONPATH": os.path.dirname(HERE), "OMP_NUM_THREADS": "1"}


def _wait_for(path, process, seconds=120):
    deadline = time.time() + seconds
    while not os.path.exists(path):
        if process.poll() is not None:
            raise AssertionError(f"the first run ended early: {process.communicate()[1][-3000:]}")
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _start_paused_training(tmp_path, model, data, out):
    """A training in another process, paused inside step 3 (after checkpoints of steps 1 and 2)."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "paused_worker.py"), model, data, str(out), "3",
                                str(ready), str(go)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(ready, process)
    return process, go


def test_a_second_training_into_a_running_ones_output_dir_is_refused_naming_the_holder(tmp_path, tiny_model, sft_file):
    out = tmp_path / "run"
    first, go = _start_paused_training(tmp_path, tiny_model, sft_file, out)
    try:
        second = subprocess.run([sys.executable, "-m", "vietnamese_ai.cli", "sft", f"model_name_or_path={tiny_model}",
                                 f"dataset={sft_file}", f"output_dir={out}", "overwrite_output_dir=true", "max_steps=1",
                                 "disable_tqdm=true"], env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        [line] = second.stderr.strip().splitlines()
        assert line.startswith(f"vietnamese-ai: error: output_dir: '{out}' is in use by another run: pid {first.pid} on ")
        assert "paused_worker.py" in line and "started 20" in line and line.endswith("or choose another output_dir")
        # The first run's checkpoints are untouched, and it finishes normally.
        assert sorted(os.listdir(out / "checkpoints")) == ["step-000001", "step-000002"]
    finally:
        (go).touch()
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr[-3000:]
    assert (out / "final" / "model.safetensors").exists() and (out / "run.json").exists()
    assert not [n for n in os.listdir(out) if n.startswith(".")]   # the lock goes with its run


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_warning(tmp_path, tiny_model, sft_file, caplog):
    from vietnamese_ai.recipes.sft import run_sft

    out = tmp_path / "run"
    first, _ = _start_paused_training(tmp_path, tiny_model, sft_file, out)
    first.kill()   # SIGKILL: no clean-up; the kernel drops the lock, its file stays
    first.communicate()
    assert (out / ".lock").exists()
    with caplog.at_level("WARNING", logger="vietnamese_ai"):
        result = run_sft(SFTConfig(model_name_or_path=tiny_model, dataset=sft_file, output_dir=str(out), max_steps=4,
                                   save_steps=1, per_device_train_batch_size=4, learning_rate=1e-3,
                                   resume_from_checkpoint="latest",
                                   disable_tqdm=True))
    assert result.global_step == 4
    taken = [r.getMessage() for r in caplog.records if "took over the lock" in r.getMessage()]
    assert len(taken) == 1 and f"pid {first.pid} " in taken[0] and "no longer running" in taken[0], taken
    assert not (out / ".lock").exists()


def test_a_second_pipeline_run_is_refused_naming_the_holder(tmp_path):
    (tmp_path / "waiting.py").write_text(
        "import os, time\n"
        "def wait(output_dir, ready, go):\n"
        "    open(ready, 'w').close()\n"
        "    deadline = time.time() + 120\n"
        "    while not os.path.exists(go) and time.time() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    return {'waited': 1}\n", encoding="utf-8")
    ready, go = tmp_path / "ready", tmp_path / "go"
    path = tmp_path / "p.yaml"
    path.write_text(f"output_dir: {tmp_path / 'out'}\n"
                    f"stages:\n"
                    f"  wait:\n"
                    f"    command: python\n"
                    f"    function: waiting:wait\n"
                    f"    args: {{ready: {ready}, go: {go}}}\n", encoding="utf-8")
    env = {**ENV, "PYTHONPATH": f"{os.path.dirname(HERE)}{os.pathsep}{tmp_path}"}
    command = [sys.executable, "-m", "vietnamese_ai.cli", "pipeline", "run", str(path)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(ready, first)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        [line] = second.stderr.strip().splitlines()
        assert line.startswith(f"vietnamese-ai: error: output_dir: '{tmp_path / 'out'}' is in use by another run: "
                               f"pid {first.pid} on "), line
        assert f"pipeline run {path}" in line
    finally:
        go.touch()
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr[-3000:]
    state = json.loads((tmp_path / "out" / "pipeline_state.json").read_text(encoding="utf-8"))
    assert state["stages"]["wait"]["status"] == "done"


def test_one_process_may_hold_a_directory_again_and_the_lock_file_goes_with_the_last_release(tmp_path):
    from vietnamese_ai.files import LOCK_FILE, hold_directory

    with hold_directory(str(tmp_path / "a"), "output_dir"):
        with hold_directory(str(tmp_path / "a"), "output_dir"):   # a pipeline stage writing into its pipeline's
            with hold_directory(str(tmp_path / "a" / "sft"), "output_dir"):
                assert (tmp_path / "a" / "sft" / LOCK_FILE).exists()
            assert not (tmp_path / "a" / "sft" / LOCK_FILE).exists()
        assert (tmp_path / "a" / LOCK_FILE).exists()
        holder = json.loads((tmp_path / "a" / LOCK_FILE).read_text(encoding="utf-8"))
        assert holder["pid"] == os.getpid() and set(holder) == {"pid", "host", "started", "command"}
    assert not (tmp_path / "a" / LOCK_FILE).exists()
    with pytest.raises(RuntimeError, match="boom"):
        with hold_directory(str(tmp_path / "b"), "output_dir"):
            raise RuntimeError("boom")
    assert not (tmp_path / "b" / LOCK_FILE).exists()


HOLDER = '''
import os, sys, time
from vietnamese_ai.files import hold_directory

directory, ready, go = sys.argv[1:4]
with hold_directory(directory, "output_dir"):
    open(ready, "w").close()
    deadline = time.time() + 120
    while not os.path.exists(go) and time.time() < deadline:
        time.sleep(0.05)
'''


def _hold_in_another_process(tmp_path, directory):
    """Another process holding `directory` as a run does, until the returned file appears."""
    script, ready, go = tmp_path / "holder.py", tmp_path / "held", tmp_path / "release"
    script.write_text(HOLDER, encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(script), str(directory), str(ready), str(go)], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(ready, process)
    return process, go


def test_an_evaluation_into_a_held_output_dir_is_refused_naming_the_holder_before_any_model_loads(
        tmp_path, capsys, monkeypatch, tiny_model):
    import transformers

    def no_loading(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded")

    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModelForSequenceClassification,
                 transformers.AutoTokenizer):
        monkeypatch.setattr(auto, "from_pretrained", no_loading)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "eval.json").write_text("{}", encoding="utf-8")   # the holder's results: never touched
    holder, go = _hold_in_another_process(tmp_path, out)
    try:
        data = tmp_path / "p.jsonl"
        data.write_text('{"prompt": "x"}\n', encoding="utf-8")
        assert main(["evaluate", f"models=[{tiny_model},{tiny_model}]", f"dataset={data}", f"output_dir={out}"]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"vietnamese-ai: error: output_dir: '{out}' is in use by another run: "
                               f"pid {holder.pid} on "), line
        assert "holder.py" in line and line.endswith("or choose another output_dir"), line
        assert sorted(os.listdir(out)) == [".lock", "eval.json"] and (out / "eval.json").read_text() == "{}"
    finally:
        go.touch()
        holder.communicate(timeout=60)
    assert holder.returncode == 0


def test_an_evaluation_holds_its_output_dir_while_it_runs_and_inside_a_pipeline(tmp_path, monkeypatch, tiny_model):
    """Held from before the models load to after eval.json is written, then released; a pipeline's evaluate
    stage runs in the process that holds the pipeline's directory."""
    import vietnamese_ai.evaluation.compare as compare
    from vietnamese_ai.files import LOCK_FILE

    seen = []
    real = compare.evaluate_models

    def watched(*args, **kwargs):   # while the answers are sampled: who holds what
        for directory in sorted(tmp_path.glob("**/" + LOCK_FILE)):
            seen.append((str(directory.parent.relative_to(tmp_path)), json.loads(directory.read_text())["pid"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "evaluate_models", watched)
    data = tmp_path / "p.jsonl"
    data.write_text('{"prompt": "x"}\n', encoding="utf-8")
    small = ["samples=1", "max_new_tokens=2", "disable_tqdm=true"]
    assert main(["evaluate", f"models=[{tiny_model},{tiny_model}]", f"dataset={data}", f"output_dir={tmp_path / 'e'}",
                 *small]) == 0
    assert seen == [("e", os.getpid())]
    assert sorted(os.listdir(tmp_path / "e")) == ["eval.json", "samples.jsonl"]
    seen.clear()
    path = tmp_path / "p.yaml"
    path.write_text(f"output_dir: {tmp_path / 'pipe'}\n"
                    f"stages:\n"
                    f"  compare:\n"
                    f"    command: evaluate\n"
                    f"    models: [{tiny_model}, {tiny_model}]\n"
                    f"    dataset: {data}\n"
                    f"    samples: 1\n"
                    f"    max_new_tokens: 2\n"
                    f"    disable_tqdm: true\n", encoding="utf-8")
    assert main(["pipeline", "run", str(path)]) == 0
    assert seen == [("pipe", os.getpid()), ("pipe/compare", os.getpid())]
    assert (tmp_path / "pipe" / "compare" / "eval.json").exists()
    assert not [n for n in os.listdir(tmp_path / "pipe" / "compare") if n.startswith(".")]
