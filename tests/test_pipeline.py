"""YAML pipelines on the tiny model: a stage that is done and unchanged is skipped; changing a stage
re-runs it and everything after it, nothing before; a stage killed mid-run resumes from its own
checkpoint; bad pipeline files fail in one line before anything runs."""

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
