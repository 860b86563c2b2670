"""report_to: the trackers get every metrics.jsonl line (same names, values, steps), continue the same
run on resume, never see a secret, and a missing package or unknown name is one line before a model loads."""

from __future__ import annotations

import glob
import importlib.util
import json
import os

import numpy as np
import pytest
import yaml

from tests.conftest import read_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.recipes.sft import SFTConfig, run_sft

pytest.importorskip("tensorboard", reason="report_to=tensorboard needs the tensorboard package (the dev extra)")


def _config(tmp_path, tiny_model, sft_file, name="run", **overrides):
    values = dict(model_name_or_path=tiny_model, dataset=sft_file, output_dir=str(tmp_path / name), learning_rate=1e-3,
                  per_device_train_batch_size=4, logging_steps=1, save_steps=0, max_steps=3, seed=3, disable_tqdm=True,
                  report_to="tensorboard")
    values.update(overrides)
    return SFTConfig(**values)


def _scalars(log_dir, tag):
    """(step, value) of every `tag` event, read back with TensorBoard's own reader (which applies purge_step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(log_dir)
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def _expected(out, key):
    """metrics.jsonl's values as TensorBoard stores them (float32)."""
    return [(r["step"], float(np.float32(r[key]))) for r in read_jsonl(os.path.join(out, "metrics.jsonl"))]


def test_tensorboard_gets_every_metrics_line_at_its_step(tmp_path, tiny_model, sft_file):
    config = _config(tmp_path, tiny_model, sft_file, logging_steps=2, max_steps=5)   # lines at steps 2, 4 and 5
    run_sft(config)
    log_dir = os.path.join(config.output_dir, "runs", "run")   # run_name defaults to the output_dir's name
    assert [step for step, _ in _expected(config.output_dir, "loss")] == [2, 4, 5]
    for key in ("loss", "learning_rate", "epoch", "tokens_per_second"):
        assert _scalars(log_dir, key) == _expected(config.output_dir, key), key
    state = json.loads(open(os.path.join(config.output_dir, "trackers.json"), encoding="utf-8").read())
    assert state == {"tensorboard": {"log_dir": log_dir}}


def test_resume_continues_the_same_event_directory_from_the_resumed_step(tmp_path, tiny_model, sft_file):
    # The first run logs steps 1-3 with a checkpoint at 2; the resumed run (a longer schedule, so its step 3
    # differs) logs 3-5 into the same directory, and readers drop the first run's step 3 (purge_step).
    first = _config(tmp_path, tiny_model, sft_file, save_steps=2, run_name="exp")
    run_sft(first)
    log_dir = os.path.join(first.output_dir, "runs", "exp")
    first_loss = _scalars(log_dir, "loss")
    first_lr = dict(_scalars(log_dir, "learning_rate"))
    run_sft(_config(tmp_path, tiny_model, sft_file, save_steps=2, run_name="exp", max_steps=5,
                    resume_from_checkpoint="latest"))
    assert os.listdir(os.path.join(first.output_dir, "runs")) == ["exp"]
    assert len(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))) == 2
    loss = _scalars(log_dir, "loss")
    assert [step for step, _ in loss] == [1, 2, 3, 4, 5]
    assert loss == _expected(first.output_dir, "loss") and loss[:2] == first_loss[:2]
    lr = dict(_scalars(log_dir, "learning_rate"))
    assert lr[3] != first_lr[3] and list(lr.items()) == _expected(first.output_dir, "learning_rate")


class ConfigWithSecrets(SFTConfig):
    hub_token: str = "hf_NEVER_SENT_1"
    judge_api_key: str = "sk_NEVER_SENT_2"
    wandb_password: str = "NEVER_SENT_3"


def test_secrets_never_reach_a_tracker(tmp_path, tiny_model, sft_file):
    config = ConfigWithSecrets(**_config(tmp_path, tiny_model, sft_file, max_steps=1).model_dump())
    run_sft(config)
    (hparams,) = glob.glob(os.path.join(config.output_dir, "runs", "run", "*", "hparams.yml"))
    sent = yaml.safe_load(open(hparams, encoding="utf-8"))
    assert sent["learning_rate"] == 1e-3 and sent["run_name"] == "run" and sent["tokenizer_name_or_path"] is None
    assert not {"hub_token", "judge_api_key", "wandb_password"} & set(sent)
    for path in glob.glob(os.path.join(config.output_dir, "runs", "**", "*"), recursive=True):
        if os.path.isfile(path):
            assert b"NEVER_SENT" not in open(path, "rb").read(), path   # nor in the event files' hparams


@pytest.fixture
def without(monkeypatch):
    """Make packages look uninstalled to importlib.util.find_spec."""
    real = importlib.util.find_spec

    def hide(*names):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, **k: None if name in names else real(name, *a, **k))
    return hide


@pytest.fixture
def no_model_load(monkeypatch):
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


def test_a_missing_package_is_one_line_before_a_model_loads(tmp_path, tiny_model, sft_file, capsys, without,
                                                           no_model_load):
    without("tensorboard")
    code = main(["sft", f"model_name_or_path={tiny_model}", f"dataset={sft_file}", f"output_dir={tmp_path / 'r'}",
                 "report_to=[wandb, tensorboard]" if importlib.util.find_spec("wandb") else "report_to=tensorboard"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "report_to" in err and "tensorboard needs the tensorboard package: pip install 'vietnamese-ai[tensorboard]'" in err
    assert not os.path.exists(tmp_path / "r")
    without("wandb")
    with pytest.raises(ConfigError, match=r"wandb needs the wandb package: pip install 'vietnamese-ai\[wandb\]'"):
        _config(tmp_path, tiny_model, sft_file, report_to="wandb")


def test_an_unknown_tracker_is_one_line_listing_the_known_ones(tmp_path, tiny_model, sft_file, capsys, no_model_load):
    code = main(["sft", f"model_name_or_path={tiny_model}", f"dataset={sft_file}", "report_to=tensorbord"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "report_to" in err and "unknown tracker 'tensorbord'; known: none, tensorboard, wandb, mlflow, trackio" in err


def test_report_to_accepts_one_name_a_list_or_none(tmp_path, tiny_model, sft_file):
    assert _config(tmp_path, tiny_model, sft_file, report_to="none").report_to == "none"
    assert _config(tmp_path, tiny_model, sft_file, report_to=["TensorBoard"]).report_to == "tensorboard"
    with pytest.raises(ConfigError, match="named twice"):
        _config(tmp_path, tiny_model, sft_file, report_to="tensorboard,tensorboard")


def test_wandb_offline_run_is_continued_on_resume(tmp_path, tiny_model, sft_file, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'vietnamese-ai[wandb]')")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
                       "WANDB_PROJECT": "tests"}.items():
        monkeypatch.setenv(key, value)
    first = _config(tmp_path, tiny_model, sft_file, report_to="wandb", save_steps=2)
    run_sft(first)
    state_file = os.path.join(first.output_dir, "trackers.json")
    run_id = json.loads(open(state_file, encoding="utf-8").read())["wandb"]["id"]
    runs = glob.glob(os.path.join(tmp_path, "wandb", f"offline-run-*-{run_id}"))
    assert len(runs) == 1 and glob.glob(os.path.join(runs[0], f"run-{run_id}.wandb"))
    run_sft(_config(tmp_path, tiny_model, sft_file, report_to="wandb", save_steps=2, max_steps=5,
                    resume_from_checkpoint="latest"))
    assert json.loads(open(state_file, encoding="utf-8").read())["wandb"]["id"] == run_id
    assert len(glob.glob(os.path.join(tmp_path, "wandb", f"offline-run-*-{run_id}"))) == 2   # the same run, resumed


def test_trackers_end_when_a_run_fails_without_hiding_the_failure():
    from vietnamese_ai.training.trackers import Trackers

    class Tracker:
        name, finished = "fake", False

        def finish(self):
            self.finished = True
            raise OSError("the tracker's server is gone")

    tracker = Tracker()
    with pytest.raises(RuntimeError, match="the run failed"):
        with Trackers() as trackers:
            trackers.active.append(tracker)
            raise RuntimeError("the run failed")
    assert tracker.finished
