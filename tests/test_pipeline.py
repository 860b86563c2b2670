"""YAML pipelines on the tiny model: a stage that is done and unchanged is skipped; changing a stage
re-runs it and the stages that use it, nothing else, and the plan says which key or file changed; a
stage killed mid-run resumes from its own checkpoint; bad pipeline files fail in one line before
anything runs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import read_jsonl, write_jsonl
from vietnamese_ai.cli import main


def _pipeline(tmp_path, tiny_model, sft_file, sft_lr="1e-3", title="first", sft_steps=4, save_steps=0):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"Câu {i}: thủ đô?", "chosen": " Hà Nội.",
                                                    "rejected": " Đồ ngốc."} for i in range(8)])
    text = f"""
output_dir: {tmp_path / 'run'}
stages:
  sft:
    model_name_or_path: {tiny_model}
    dataset: {sft_file}
    learning_rate: {sft_lr}
    max_steps: {sft_steps}
    save_steps: {save_steps}
    per_device_train_batch_size: 4
    disable_tqdm: true
  dpo:
    model_name_or_path: ${{sft.final}}
    dataset: {pairs}
    max_steps: 2
    per_device_train_batch_size: 4
    save_steps: 0
    disable_tqdm: true
  report:
    title: {title}
"""
    path = tmp_path / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _state(tmp_path):
    return json.loads((tmp_path / "run" / "pipeline_state.json").read_text(encoding="utf-8"))["stages"]


def _plan(capsys, path, *flags):
    capsys.readouterr()   # what an earlier run printed (its evaluation tables, the report's path)
    assert main(["pipeline", "run", path, "--dry-run", *flags]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return {line.split()[0]: line.split()[2] for line in lines}


def test_a_changed_stage_reruns_itself_and_what_follows_only(tmp_path, capsys, tiny_model, sft_file):
    path = _pipeline(tmp_path, tiny_model, sft_file)
    assert _plan(capsys, path) == {"sft": "run", "dpo": "run", "report": "run"}
    assert main(["pipeline", "run", path]) == 0
    first = _state(tmp_path)
    assert all(s["status"] == "done" for s in first.values())
    assert os.path.isdir(tmp_path / "run" / "dpo" / "final") and (tmp_path / "run" / "report" / "report.html").is_file()
    resolved = (tmp_path / "run" / "pipeline.yaml").read_text(encoding="utf-8")
    assert f"model_name_or_path: {tmp_path / 'run' / 'sft' / 'final'}" in resolved   # the reference, resolved

    assert _plan(capsys, path) == {"sft": "skip", "dpo": "skip", "report": "skip"}   # nothing changed

    path = _pipeline(tmp_path, tiny_model, sft_file, title="second")   # the last stage changes
    assert _plan(capsys, path) == {"sft": "skip", "dpo": "skip", "report": "run"}
    assert main(["pipeline", "run", path]) == 0
    second = _state(tmp_path)
    assert second["sft"] == first["sft"] and second["dpo"] == first["dpo"]
    assert second["report"]["finished_at"] >= first["report"]["finished_at"]
    assert "<title>second</title>" in (tmp_path / "run" / "report" / "report.html").read_text(encoding="utf-8")

    path = _pipeline(tmp_path, tiny_model, sft_file, sft_lr="5e-4", title="second")   # the first stage changes
    steps = _plan(capsys, path)
    assert steps == {"sft": "run", "dpo": "run", "report": "run"}
    assert main(["pipeline", "run", path]) == 0
    third = _state(tmp_path)
    assert third["sft"]["hash"] != second["sft"]["hash"] and third["dpo"]["hash"] != second["dpo"]["hash"]

    assert _plan(capsys, path, "--from", "dpo") == {"sft": "skip", "dpo": "run", "report": "run"}
    assert _plan(capsys, path, "--only", "dpo") == {"sft": "skip", "dpo": "run", "report": "skip"}


def test_a_changed_input_file_reruns_the_stage(tmp_path, capsys, tiny_model, sft_file):
    path = _pipeline(tmp_path, tiny_model, sft_file)
    assert main(["pipeline", "run", path, "--only", "sft"]) == 0
    assert _plan(capsys, path)["sft"] == "skip"
    with open(sft_file, "a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "Một câu mới?", "completion": " Vâng."}, ensure_ascii=False) + "\n")
    assert _plan(capsys, path)["sft"] == "run"


def test_a_stage_killed_mid_run_resumes_from_its_checkpoint(tmp_path, capsys, tiny_model, sft_file):
    path = _pipeline(tmp_path, tiny_model, sft_file, sft_steps=60, save_steps=2)
    process = subprocess.Popen([sys.executable, "-m", "vietnamese_ai.cli", "pipeline", "run", path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "run" / "sft" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not (checkpoints.is_dir() and len([c for c in os.listdir(checkpoints)
                                                                         if c.startswith("step-")]) >= 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "run" / "sft" / "final").exists(), "the stage finished before it could be killed"
    assert _state(tmp_path)["sft"]["status"] == "running"
    assert _plan(capsys, path) == {"sft": "resume", "dpo": "run", "report": "run"}
    assert main(["pipeline", "run", path]) == 0
    rows = read_jsonl(tmp_path / "run" / "sft" / "metrics.jsonl")
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows}) and rows[-1]["step"] == 60
    info = json.loads((tmp_path / "run" / "sft" / "run.json").read_text(encoding="utf-8"))
    assert info["resumed_from"] is not None and "step-" in info["resumed_from"]
    assert all(s["status"] == "done" for s in _state(tmp_path).values())


@pytest.mark.parametrize("stages,fragment", [
    ("  sft:\n    command: sfft\n", "stage 'sft': unknown command 'sfft'; did you mean 'sft'?"),
    ("  dpo:\n    model_name_or_path: ${sft.final}\n    dataset: x.jsonl\n",
     "stage 'dpo': '${sft.final}': stage 'sft' does not exist"),
    ("  dpo:\n    model_name_or_path: ${sft.final}\n    dataset: x.jsonl\n  sft:\n    dataset: y.jsonl\n",
     "stage 'dpo': '${sft.final}': stage 'sft' comes later"),
    ("  sft:\n    model_name_or_path: ${sft.final}\n    dataset: x.jsonl\n", "refers to the stage itself (a cycle)"),
    ("  sft:\n    model_name_or_path: m\n    dataset: x.jsonl\n    lerning_rate: 1\n",
     "stage 'sft': unknown key 'lerning_rate'; did you mean 'learning_rate'?"),
    ("  sft:\n    model_name_or_path: m\n    dataset: x.jsonl\n    output_dir: elsewhere\n",
     "stage 'sft': key 'output_dir' is set by the pipeline"),
    ("  sft:\n    model_name_or_path: m\n    dataset: x.jsonl\n  dpo:\n    model_name_or_path: ${sft.finale}\n"
     "    dataset: x.jsonl\n", "stage 'sft' (sft) has no output or key 'finale'"),
    ("  sft:\n    model_name_or_path: m\n    dataset: x.jsonl\n    learning_rate: -1\n", "stage 'sft': key 'learning_rate'"),
])
def test_a_bad_pipeline_file_is_one_line_before_anything_runs(tmp_path, capsys, stages, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\nstages:\n{stages}", encoding="utf-8")
    assert main(["pipeline", "run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and str(path) in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("last,fragment", [
    ("  grpo:\n    model_name_or_path: ${sft.final}\n    dataset: p.jsonl\n    reward: [constitution, judge:m@]\n",
     "stage 'grpo': key 'reward': 'judge:m@' has no weight after '@'"),
    ("  label:\n    command: feedback label\n    candidates: c.jsonl\n    scorer: constitution@2++judge:m\n",
     "stage 'label': key 'scorer': 'constitution@2++judge:m' has an empty part"),
    ("  compare:\n    command: evaluate\n    models: [\"${sft.final}\", m]\n    dataset: d.jsonl\n    scorer: constitution@x\n",
     "stage 'compare': key 'scorer': weight 'x' in 'constitution@x' is not a number"),
    ("  regularised:\n    command: score-sft\n    model_name_or_path: m\n    dataset: d.jsonl\n    target_scorer: '@2'\n",
     "stage 'regularised': key 'target_scorer': '@2' names nothing before '@'"),
])
def test_a_malformed_scorer_or_reward_in_a_later_stage_is_refused_before_the_first_runs(tmp_path, capsys, last,
                                                                                      fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\nstages:\n  sft:\n    model_name_or_path: m\n"
                    f"    dataset: x.jsonl\n{last}", encoding="utf-8")
    assert main(["pipeline", "run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and str(path) in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,fragment", [
    (["pipeline"], "usage: vietnamese-ai pipeline run"),
    (["pipeline", "run"], "required: PIPELINE.yaml"),
    (["pipeline", "run", "missing.yaml"], "missing.yaml: pipeline file not found"),
])
def test_pipeline_command_line_mistakes_are_one_line(tmp_path, capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err


def test_a_data_error_inside_a_stage_names_the_stage(tmp_path, capsys, tiny_model, sft_file):
    path = _pipeline(tmp_path, tiny_model, sft_file)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "x", "chosen": "a"}\n', encoding="utf-8")   # no 'rejected'
    assert main(["pipeline", "run", path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{path}: stage 'dpo': " in err and "field 'rejected'" in err, err
    assert _state(tmp_path)["sft"]["status"] == "done" and _state(tmp_path)["dpo"]["status"] == "running"


def test_a_pipeline_refuses_to_run_once_per_rank(tmp_path, capsys, monkeypatch, tiny_model, sft_file):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["pipeline", "run", _pipeline(tmp_path, tiny_model, sft_file)]) == 2
    assert "run it as one process" in capsys.readouterr().err


def test_overrides_and_unknown_stage_names(tmp_path, capsys, tiny_model, sft_file):
    path = _pipeline(tmp_path, tiny_model, sft_file)
    assert main(["pipeline", "run", path, "sft.learning_rate=2e-3", "--dry-run"]) == 0
    capsys.readouterr()
    assert main(["pipeline", "run", path, "sfx.learning_rate=2e-3"]) == 2
    assert "expected STAGE.KEY=VALUE with a stage of" in capsys.readouterr().err
    assert main(["pipeline", "run", path, "--only", "nope"]) == 2
    assert "no stage 'nope'; stages: sft, dpo, report" in capsys.readouterr().err
    assert main(["pipeline", "run", path, "--only", "dpo"]) == 2   # nothing has run: dpo's model does not exist
    assert "--only dpo: it needs stage 'sft', which has not completed" in capsys.readouterr().err
    assert not (tmp_path / "run" / "dpo").exists()


# A `python` stage runs the user's own code. Its mistakes in the YAML (no such module or function, an
# argument the function does not take) are one line before anything runs; a failure of the code itself
# (an import that raises, a syntax error, an exception in the function) is one header line naming the
# stage and the function, then the user's traceback: their frames, none of this package's.
USER_MODULES = {
    "raises": "import json\n\ndef prepare(output_dir, n=1):\n    return json.loads('{' * n)\n",
    "type_error": "def prepare(output_dir, n=1):\n    return len(n)\n",
    "syntax": "def prepare(output_dir):\n    return 1\n\ndef broken(:\n    pass\n",
    "import_raises": "import json\n\nCONFIG = json.loads('not json')\n\ndef prepare(output_dir):\n    pass\n",
    "missing_dependency": "import numpyy_not_installed\n\ndef prepare(output_dir):\n    pass\n",
    "fine": "def prepare(output_dir, length=1, *, seed=0):\n    return {'length': length}\n\n"
            "def no_output_dir(length=1):\n    pass\n\n"
            "class NoSignature:\n    __signature__ = 'unreadable'   # inspect.signature fails, as on some builtins\n\n"
            "    def __call__(self, output_dir, length=1):\n        pass\n\nno_signature = NoSignature()\n",
}
PACKAGE = os.path.dirname(os.path.abspath(sys.modules["vietnamese_ai.cli"].__file__))


def _python_stage(tmp_path, monkeypatch, case, function="prepare", args="{}"):
    """A pipeline whose first stage is a python stage that would write a file, then the stage under test."""
    module = f"user_stage_{case}_{tmp_path.name}"   # a fresh name: no module cached from another test
    (tmp_path / f"{module}.py").write_text(USER_MODULES[case], encoding="utf-8")
    (tmp_path / f"{module}_first.py").write_text("def first(output_dir):\n    open(output_dir + '/ran', 'w').close()\n",
                                                 encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\nstages:\n"
                    f"  first:\n    command: python\n    function: {module}_first:first\n"
                    f"  prep:\n    command: python\n    function: {module}:{function}\n    args: {args}\n", encoding="utf-8")
    return str(path), module, tmp_path / f"{module}.py"


@pytest.mark.parametrize("case,args,header,user_lines,before_running", [
    ("raises", "{n: 2}", "function '{m}:prepare' failed", ['line 4, in prepare', "json.decoder.JSONDecodeError"], False),
    ("type_error", "{n: 3}", "function '{m}:prepare' failed", ["line 2, in prepare", "TypeError: object of type 'int'"],
     False),
    ("syntax", "{}", "importing '{m}' for function '{m}:prepare' failed", ["line 4", "SyntaxError"], True),
    ("import_raises", "{}", "importing '{m}' for function '{m}:prepare' failed",
     ["line 3, in <module>", "json.decoder.JSONDecodeError"], True),
    ("missing_dependency", "{}", "importing '{m}' for function '{m}:prepare' failed",
     ["line 1, in <module>", "No module named 'numpyy_not_installed'"], True),
])
def test_a_python_stage_that_fails_prints_its_own_traceback(tmp_path, capsys, monkeypatch, case, args, header,
                                                            user_lines, before_running):
    path, module, source = _python_stage(tmp_path, monkeypatch, case, args=args)
    code = main(["pipeline", "run", path])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert lines[0] == f"vietnamese-ai: error: {path}: stage 'prep': {header.format(m=module)}; its traceback:", err
    assert not lines[0].startswith("Traceback") and lines[1].startswith(("Traceback", '  File "')), err
    assert f'File "{source}", {user_lines[0]}' in err and user_lines[1] in err, err
    assert PACKAGE not in err and "importlib" not in err, err   # none of our frames, nor the import machinery's
    assert (tmp_path / "run" / "first" / "ran").exists() != before_running   # an import failure stops the validation


@pytest.mark.parametrize("case,function,args,message", [
    ("fine", "prepare", "{lenght: 3}",
     "stage 'prep': key 'args': '{m}:prepare' takes no argument 'lenght'; did you mean 'length'?"),
    ("fine", "prepare", "{length: 3, output_dir: x}", "stage 'prep': key 'args': 'output_dir' is set by the pipeline"),
    ("fine", "no_output_dir", "{}",
     "stage 'prep': key 'function': '{m}:no_output_dir' must take an argument output_dir (the stage's folder)"),
    ("fine", "prepar", "{}", "stage 'prep': key 'function': module '{m}' has no 'prepar'; did you mean 'prepare'?"),
    ("fine", "CONSTANT", "{}", "stage 'prep': key 'function': module '{m}' has no 'CONSTANT'"),
])
def test_a_python_stage_mistake_in_the_file_is_one_line_before_anything_runs(tmp_path, capsys, monkeypatch, case,
                                                                               function, args, message):
    path, module, _ = _python_stage(tmp_path, monkeypatch, case, function=function, args=args)
    assert main(["pipeline", "run", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"vietnamese-ai: error: {path}: {message.format(m=module)}" or (
        len(err.splitlines()) == 1 and f"{path}: {message.format(m=module)}" in err), err
    assert not (tmp_path / "run").exists()


def test_a_python_stage_module_that_does_not_exist_is_one_line(tmp_path, capsys):
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\nstages:\n  prep:\n    command: python\n"
                    f"    function: no_such_package_here.steps:prepare\n", encoding="utf-8")
    assert main(["pipeline", "run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"vietnamese-ai: error: {path}: stage 'prep': key 'function': no module 'no_such_package_here.steps' "
                   f"beside the pipeline file or on the Python path (set PYTHONPATH to the folder that holds it)"), err


def test_a_keyword_the_function_refuses_without_a_signature_is_one_line_at_the_call(tmp_path, capsys, monkeypatch):
    """A callable whose signature cannot be read: the call itself refuses the keyword, and that is still the
    file's mistake (one line naming the stage), told apart from a TypeError raised inside the function."""
    path, module, _ = _python_stage(tmp_path, monkeypatch, "fine", function="no_signature", args="{lenght: 3}")
    assert main(["pipeline", "run", path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{path}: stage 'prep': key 'args': '{module}:no_signature' refused its arguments: " in err, err
    assert "got an unexpected keyword argument 'lenght'" in err and (tmp_path / "run" / "first" / "ran").exists(), err


def test_a_failing_python_stage_through_the_command_line(tmp_path, monkeypatch):
    """The real command: progress lines, then the header and the user's traceback on stderr, exit 1."""
    path, module, source = _python_stage(tmp_path, monkeypatch, "raises", args="{n: 2}")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "vietnamese_ai.cli", "pipeline", "run", path], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    header = [i for i, line in enumerate(lines) if "error:" in line]
    assert len(header) == 1 and lines[header[0]] == (f"vietnamese-ai: error: {path}: stage 'prep': function "
                                                     f"'{module}:prepare' failed; its traceback:"), done.stderr
    assert all(line.startswith("[vietnamese-ai]") for line in lines[:header[0]]), done.stderr
    assert lines[header[0] + 1] == "Traceback (most recent call last):", done.stderr
    assert f'File "{source}", line 4, in prepare' in done.stderr and PACKAGE not in done.stderr, done.stderr


def test_a_python_stage_module_beside_the_pipeline_file_needs_no_pythonpath_and_an_edit_reruns_it(tmp_path, capsys):
    """The module sits beside the pipeline file (as a script's modules sit beside it), nothing on
    PYTHONPATH; the stage's hash covers the module's code, so an edited function runs again rather than
    being skipped as done."""
    module = f"beside_{tmp_path.name}"
    source = tmp_path / f"{module}.py"
    source.write_text("def prepare(output_dir, n=1):\n    open(output_dir + '/out.txt', 'w').write(str(n))\n",
                      encoding="utf-8")
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\nstages:\n  prep:\n    command: python\n"
                    f"    function: {module}:prepare\n    args: {{n: 2}}\n", encoding="utf-8")
    assert str(tmp_path) not in sys.path
    assert main(["pipeline", "run", str(path)]) == 0
    assert (tmp_path / "run" / "prep" / "out.txt").read_text() == "2"
    assert _plan(capsys, str(path)) == {"prep": "skip"}
    source.write_text("def prepare(output_dir, n=1):\n    open(output_dir + '/out.txt', 'w').write(str(10 * n))\n",
                      encoding="utf-8")
    sys.modules.pop(module)   # as a new process would: the edited file is imported afresh
    assert _plan(capsys, str(path)) == {"prep": "run"}
    assert main(["pipeline", "run", str(path)]) == 0
    assert (tmp_path / "run" / "prep" / "out.txt").read_text() == "20"


def test_stages_form_a_graph_a_change_reruns_only_what_uses_it_and_the_plan_says_what_changed(
        tmp_path, capsys, tiny_model, sft_file):
    """dpo and orpo both use sft, not each other: changing dpo's beta re-runs dpo alone, and the plan
    names the key and its two values; a changed input file and a changed stage it uses are named too."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"Câu {i}?", "chosen": " Vâng.", "rejected": " Không."}
                                                   for i in range(4)])

    def pipeline(beta):
        text = f"""
output_dir: {tmp_path / 'run'}
stages:
  sft: {{model_name_or_path: {tiny_model}, dataset: {sft_file}, max_steps: 1, save_steps: 0,
        per_device_train_batch_size: 4, disable_tqdm: true}}
  dpo: {{model_name_or_path: '${{sft.final}}', dataset: {pairs}, beta: {beta}, max_steps: 1, save_steps: 0,
        per_device_train_batch_size: 4, disable_tqdm: true}}
  orpo: {{model_name_or_path: '${{sft.final}}', dataset: {pairs}, max_steps: 1, save_steps: 0,
         per_device_train_batch_size: 4, disable_tqdm: true}}
"""
        path = tmp_path / "pipeline.yaml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    path = pipeline(0.1)
    assert main(["pipeline", "run", path]) == 0
    capsys.readouterr()
    assert main(["pipeline", "run", pipeline(0.2), "--dry-run"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.strip().splitlines()}
    assert lines["sft"].split()[2] == "skip" and lines["orpo"].split()[2] == "skip"
    assert lines["dpo"].split()[2] == "run" and "key 'beta' changed: 0.1 -> 0.2" in lines["dpo"]
    with open(pairs, "a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "Mới?", "chosen": " Có.", "rejected": " Không."}, ensure_ascii=False) + "\n")
    assert main(["pipeline", "run", pipeline(0.1), "--dry-run"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.strip().splitlines()}
    assert f"input '{pairs}' changed" in lines["dpo"] and f"input '{pairs}' changed" in lines["orpo"]
    assert lines["sft"].split()[2] == "skip"
    with open(sft_file, "a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "Một câu mới?", "completion": " Vâng."}, ensure_ascii=False) + "\n")
    assert main(["pipeline", "run", pipeline(0.1), "--dry-run"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.strip().splitlines()}
    assert "stage 'sft', which it uses, changed" in lines["dpo"] and lines["sft"].split()[2] == "run"


def test_the_dry_run_flags_an_input_that_does_not_exist_and_a_run_ends_with_the_report_path(
        tmp_path, capsys, tiny_model, sft_file):
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"""
output_dir: {tmp_path / 'run'}
stages:
  sft: {{model_name_or_path: {tiny_model}, dataset: data/not_here.jsonl, max_steps: 1, disable_tqdm: true}}
""", encoding="utf-8")
    assert main(["pipeline", "run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "input 'data/not_here.jsonl' does not exist, and no earlier stage makes it" in out
    pipeline = _pipeline(tmp_path, tiny_model, sft_file)
    assert main(["pipeline", "run", pipeline]) == 0
    assert f"report: {tmp_path / 'run' / 'report' / 'report.html'}" in capsys.readouterr().out


def test_stage_banners_count_the_stages_and_estimate_the_time_left_from_the_last_run(tmp_path, tiny_model, sft_file):
    from vietnamese_ai.pipeline import load_pipeline, run_pipeline

    path = _pipeline(tmp_path, tiny_model, sft_file)
    first: list[str] = []
    run_pipeline(load_pipeline(path), log=first.append)
    banners = [line for line in first if ": run, " in line]
    assert [b.split(":")[0] for b in banners] == ["[pipeline] stage 1/3", "[pipeline] stage 2/3", "[pipeline] stage 3/3"]
    assert "left" not in banners[0]   # never run: nothing to estimate from
    state = _state(tmp_path)
    second: list[str] = []
    run_pipeline(load_pipeline(path), start="sft", log=second.append)
    banner = next(line for line in second if line.startswith("[pipeline] stage 1/3"))
    expected = sum(state[name]["seconds"] for name in ("sft", "dpo", "report"))
    assert banner.endswith(f"about {expected:.0f}s left") or banner.endswith(f"about {expected / 60:.0f} min left")
