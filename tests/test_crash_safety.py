"""Crashes lose nothing: killed writes, pruning, damaged checkpoints, torn metrics lines, signals, a
full disk, changed settings on resume, finished runs. Each test is named after what it pins and was
seen to fail before the fix it pins."""

import errno
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import read_jsonl
from vietnamese_ai.errors import ConfigError, Interrupted, TrainingError
from vietnamese_ai.files import atomic_directory, sweep
from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
from vietnamese_ai.recipes.sft import SFTConfig, run_sft, sft_collate, sft_loss
from vietnamese_ai.training.checkpoint import check_checkpoint, checkpoint_dirs
from vietnamese_ai.training.loop import train
from vietnamese_ai.data.loading import load_records
from vietnamese_ai.data.tokenize import prepare_sft

# 12 examples, batch 2, accumulation 2: 3 steps per epoch. Dropout on, warmup on.
RUN = dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=7, warmup_ratio=0.3,
           weight_decay=0.1, learning_rate=1e-3, seed=3, disable_tqdm=True)


def _config(tmp_path, name, model, data, **overrides):
    values = dict(model_name_or_path=model, dataset=data, output_dir=str(tmp_path / name), **RUN)
    values.update(overrides)
    return SFTConfig(**values)


def _train(config, loss_fn=sft_loss):
    tokenizer = load_tokenizer(config.model_name_or_path)
    examples, _ = prepare_sft(load_records(config.dataset), tokenizer, 64, vocab_size=None)
    model = load_causal_lm(config.model_name_or_path)
    return train(model, tokenizer, config, examples, sft_collate(True, tokenizer.pad_token_id), loss_fn)


class FailAtCall:
    """A loss function whose n-th call (1-based) runs `action` first, like a process dying mid-step."""

    def __init__(self, n, action):
        self.n, self.calls, self.action = n, 0, action

    def __call__(self, model, batch):
        self.calls += 1
        if self.calls == self.n:
            self.action()
        return sft_loss(model, batch)


def _crash():
    raise RuntimeError("simulated crash")


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))]


def _same_weights(a, b):
    wa, wb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    return all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_dropout_model, sft_file_module):
    """The reference run: logging every 3 steps, so checkpoints every 2 steps fall inside log windows."""
    tmp = tmp_path_factory.mktemp("full")
    return _train(_config(tmp, "full", tiny_dropout_model, sft_file_module, logging_steps=3, save_steps=2))


@pytest.fixture(scope="module")
def sft_file_module(tmp_path_factory):
    from tests.conftest import write_jsonl

    rows = [{"prompt": f"Câu hỏi số {i}: thủ đô của Việt Nam là gì?", "completion": " Thủ đô là Hà Nội." + " nhé" * (i % 4)}
            for i in range(12)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", rows)


def test_resume_logs_the_same_loss_when_save_steps_is_not_a_multiple_of_logging_steps(tmp_path, tiny_dropout_model,
                                                                                      sft_file_module, uninterrupted):
    config = _config(tmp_path, "run", tiny_dropout_model, sft_file_module, logging_steps=3, save_steps=2)
    with pytest.raises(RuntimeError):
        _train(config, FailAtCall(2 * 5 + 1, _crash))   # dies inside step 6; checkpoint 4 holds step 4 of window 4-6
    resumed = _train(config.model_copy(update={"resume_from_checkpoint": "latest"}))
    assert _losses(resumed.output_dir) == _losses(uninterrupted.output_dir)
    assert _same_weights(resumed.final_dir, uninterrupted.final_dir)


def test_sigterm_checkpoints_the_last_completed_step_and_resumes_exactly(tmp_path, tiny_dropout_model, sft_file_module,
                                                                         uninterrupted):
    config = _config(tmp_path, "run", tiny_dropout_model, sft_file_module, logging_steps=3, save_steps=2)
    # SIGTERM arrives during the second micro-batch of step 6: step 5 is the last completed one.
    with pytest.raises(Interrupted) as stop:
        _train(config, FailAtCall(2 * 5 + 2, lambda: os.kill(os.getpid(), signal.SIGTERM)))
    assert stop.value.signum == signal.SIGTERM
    assert "SIGTERM at step 5" in stop.value.message and "step-000005" in stop.value.message
    names = sorted(os.listdir(os.path.join(config.output_dir, "checkpoints")))
    assert names == ["step-000002", "step-000004", "step-000005"]   # no temporary directory left behind
    assert check_checkpoint(checkpoint_dirs(config.output_dir)[-1]) is None
    resumed = _train(config.model_copy(update={"resume_from_checkpoint": "latest"}))
    assert _losses(resumed.output_dir) == _losses(uninterrupted.output_dir)
    assert _same_weights(resumed.final_dir, uninterrupted.final_dir)


def test_sigterm_during_a_periodic_save_waits_for_it_and_leaves_no_temporary_directory(
        tmp_path, tiny_dropout_model, sft_file_module, uninterrupted, monkeypatch):
    """The signal arrives while checkpoint 4 is being written (the race a CLI trial once hit): the
    save finishes, the run stops on it without a second save, and nothing half-written is left."""
    import vietnamese_ai.training.loop as loop

    config = _config(tmp_path, "run", tiny_dropout_model, sft_file_module, logging_steps=3, save_steps=2)
    real = loop.write_training_state

    def signalled(path, *args, **kwargs):
        if "step-000004" in os.path.basename(path) or "step-000004" in path:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(loop, "write_training_state", signalled)
    with pytest.raises(Interrupted) as stop:
        _train(config)
    assert "SIGTERM at step 4" in stop.value.message and "is checkpointed in" in stop.value.message
    assert sorted(os.listdir(os.path.join(config.output_dir, "checkpoints"))) == ["step-000002", "step-000004"]
    assert check_checkpoint(checkpoint_dirs(config.output_dir)[-1]) is None
    monkeypatch.setattr(loop, "write_training_state", real)
    resumed = _train(config.model_copy(update={"resume_from_checkpoint": "latest"}))
    assert _losses(resumed.output_dir) == _losses(uninterrupted.output_dir)


def test_resume_latest_falls_back_from_a_damaged_checkpoint(tmp_path, tiny_dropout_model, sft_file_module,
                                                            uninterrupted, caplog):
    config = _config(tmp_path, "run", tiny_dropout_model, sft_file_module, logging_steps=3, save_steps=2)
    with pytest.raises(RuntimeError):
        _train(config, FailAtCall(2 * 5 + 1, _crash))
    newest = checkpoint_dirs(config.output_dir)[-1]
    with open(os.path.join(newest, "optimizer.pt"), "r+b") as f:   # cut short, as by a failing disk
        f.truncate(100)
    assert "optimizer.pt" in check_checkpoint(newest)
    resumed = _train(config.model_copy(update={"resume_from_checkpoint": "latest"}))
    assert "step-000004 is incomplete" in caplog.text
    assert _losses(resumed.output_dir) == _losses(uninterrupted.output_dir)


def test_a_checkpoint_with_the_former_single_random_state_still_resumes_exactly(tmp_path, tiny_dropout_model,
                                                                                 sft_file_module, uninterrupted):
    """Checkpoints written before each process's generators were kept (rng_state_RANK.pth) hold one
    state, in rng.safetensors and python_rng.json: a single-process run still resumes from them
    exactly. A checkpoint lacking the state of one of its processes fails its check."""
    import shutil

    from safetensors.torch import save_file

    from vietnamese_ai.training.checkpoint import STATE_FILE, RandomState

    config = _config(tmp_path, "run", tiny_dropout_model, sft_file_module, logging_steps=3, save_steps=2)
    with pytest.raises(RuntimeError):
        _train(config, FailAtCall(2 * 5 + 1, _crash))
    newest = checkpoint_dirs(config.output_dir)[-1]
    state_path = os.path.join(newest, STATE_FILE)
    state = json.load(open(state_path))

    two = str(tmp_path / "two")
    shutil.copytree(newest, two)
    json.dump({**state, "settings": {**state["settings"], "num_processes": 2}}, open(os.path.join(two, STATE_FILE), "w"))
    assert check_checkpoint(two) == "no rng_state_1.pth (the random state of process 1)"

    saved = RandomState.from_file(os.path.join(newest, "rng_state_0.pth"))
    os.remove(os.path.join(newest, "rng_state_0.pth"))
    save_file(saved.torch_state, os.path.join(newest, "rng.safetensors"))
    json.dump(saved.python_state, open(os.path.join(newest, "python_rng.json"), "w"))
    del state["files"]["rng_state_0.pth"]
    for name in ("rng.safetensors", "python_rng.json"):
        state["files"][name] = os.path.getsize(os.path.join(newest, name))
    json.dump(state, open(state_path, "w"))
    assert check_checkpoint(newest) is None
    resumed = _train(config.model_copy(update={"resume_from_checkpoint": "latest"}))
    assert _losses(resumed.output_dir) == _losses(uninterrupted.output_dir)
    assert _same_weights(resumed.final_dir, uninterrupted.final_dir)


def test_a_torn_last_metrics_line_does_not_stop_a_resume(tmp_path, tiny_dropout_model, sft_file_module, uninterrupted):
    config = _config(tmp_path, "run", tiny_dropout_model, sft_file_module, logging_steps=3, save_steps=2)
    with pytest.raises(RuntimeError):
        _train(config, FailAtCall(2 * 5 + 1, _crash))
    with open(os.path.join(config.output_dir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 6, "lo')   # killed in the middle of a write
    resumed = _train(config.model_copy(update={"resume_from_checkpoint": "latest"}))
    assert _losses(resumed.output_dir) == _losses(uninterrupted.output_dir)


def test_pruning_never_leaves_a_half_deleted_checkpoint_under_a_valid_name(tmp_path, tiny_model, sft_file_module,
                                                                           monkeypatch):
    import shutil

    import vietnamese_ai.files as files

    real_rmtree = shutil.rmtree

    def killed_while_deleting(path, *args, **kwargs):
        os.remove(os.path.join(path, "model.safetensors"))   # part of the directory is gone...
        raise KeyboardInterrupt                               # ...when the kill arrives

    config = _config(tmp_path, "run", tiny_model, sft_file_module, save_steps=1, save_total_limit=1, max_steps=3,
                     logging_steps=1)
    monkeypatch.setattr(files.shutil, "rmtree", killed_while_deleting)
    with pytest.raises(KeyboardInterrupt):
        _train(config)
    monkeypatch.setattr(files.shutil, "rmtree", real_rmtree)
    for path in checkpoint_dirs(config.output_dir):
        assert check_checkpoint(path) is None, path   # every checkpoint under a valid name is complete
    leftovers = [n for n in os.listdir(os.path.join(config.output_dir, "checkpoints")) if n.startswith(".")]
    assert leftovers and all(n.startswith(".trash-step-") for n in leftovers)
    _train(config.model_copy(update={"resume_from_checkpoint": "latest"}))
    assert not [n for n in os.listdir(os.path.join(config.output_dir, "checkpoints")) if n.startswith(".")]


def test_temporary_directories_of_killed_writes_are_swept_on_start(tmp_path, tiny_model, sft_file_module):
    config = _config(tmp_path, "run", tiny_model, sft_file_module, save_steps=2, max_steps=4, logging_steps=1)
    _train(config.model_copy(update={"max_steps": 3}))   # leaves checkpoint 2 and final/
    ckpts = os.path.join(config.output_dir, "checkpoints")
    os.makedirs(os.path.join(ckpts, ".tmp-step-000004-0123abcd"))        # a checkpoint write killed mid-way
    os.makedirs(os.path.join(config.output_dir, ".tmp-final-89abcdef"))   # a final/ write killed mid-way
    _train(config.model_copy(update={"resume_from_checkpoint": "latest"}))
    assert not [n for n in os.listdir(ckpts) if n.startswith(".")]
    assert not [n for n in os.listdir(config.output_dir) if n.startswith(".")]


def test_a_kill_between_the_two_renames_restores_the_previous_version(tmp_path):
    target = tmp_path / "final"
    with atomic_directory(str(target)) as tmp:
        open(os.path.join(tmp, "weights"), "w").write("good")
    os.rename(target, tmp_path / ".old-final-0badc0de")    # moved aside, the new version never renamed in
    os.makedirs(tmp_path / ".tmp-final-12345678")
    sweep(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["final"] and open(target / "weights").read() == "good"


def test_atomic_writes_fsync_the_files_and_the_directory(tmp_path, monkeypatch):
    import vietnamese_ai.files as files

    synced = []
    real_open = os.open
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    monkeypatch.setattr(files.os, "open", real_open)
    with atomic_directory(str(tmp_path / "ckpt")) as tmp:
        open(os.path.join(tmp, "a.bin"), "w").write("x")
    assert any(p.endswith("a.bin") for p in synced)            # the file, before the rename
    assert str(tmp_path) in synced                             # the parent directory, after it


def test_disk_full_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, tiny_model, sft_file_module, monkeypatch):
    import vietnamese_ai.training.loop as loop

    real_save, calls = loop.save_model, {"n": 0}

    def full_disk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop, "save_model", full_disk)
    config = _config(tmp_path, "run", tiny_model, sft_file_module, save_steps=1, max_steps=3, logging_steps=1)
    with pytest.raises(TrainingError) as err:
        _train(config)
    message = str(err.value)
    assert "No space left on device" in message and "step-000001 is intact" in message and "\n" not in message
    assert [os.path.basename(p) for p in checkpoint_dirs(config.output_dir)] == ["step-000001"]
    assert check_checkpoint(checkpoint_dirs(config.output_dir)[0]) is None
    assert not [n for n in os.listdir(os.path.join(config.output_dir, "checkpoints")) if n.startswith(".")]


def test_a_changed_learning_rate_on_resume_is_applied_and_said(tmp_path, tiny_model, sft_file_module, caplog):
    config = _config(tmp_path, "run", tiny_model, sft_file_module, save_steps=2, max_steps=4, logging_steps=1,
                     lr_scheduler_type="constant", warmup_ratio=0.0)
    with pytest.raises(RuntimeError):
        _train(config, FailAtCall(2 * 2 + 1, _crash))    # dies inside step 3
    resumed = _train(config.model_copy(update={"resume_from_checkpoint": "latest", "learning_rate": 5e-4}))
    rates = {r["step"]: r["learning_rate"] for r in read_jsonl(os.path.join(resumed.output_dir, "metrics.jsonl"))}
    assert rates == {1: 1e-3, 2: 1e-3, 3: 5e-4, 4: 5e-4}
    assert "learning_rate 0.001 -> 0.0005" in caplog.text


def test_a_changed_batch_size_on_resume_is_refused(tmp_path, tiny_model, sft_file_module):
    config = _config(tmp_path, "run", tiny_model, sft_file_module, save_steps=2, max_steps=4, logging_steps=1)
    with pytest.raises(RuntimeError):
        _train(config, FailAtCall(2 * 2 + 1, _crash))
    with pytest.raises(ConfigError, match="per_device_train_batch_size was 2 .* is 4 now"):
        _train(config.model_copy(update={"resume_from_checkpoint": "latest", "per_device_train_batch_size": 4}))


def test_a_finished_run_is_not_silently_overwritten(tmp_path, tiny_model, sft_file_module):
    config = _config(tmp_path, "run", tiny_model, sft_file_module, save_steps=0, max_steps=1)
    run_sft(config)
    with pytest.raises(ConfigError, match="holds a finished run"):
        run_sft(config)
    with pytest.raises(ConfigError, match="holds a finished run"):   # nothing to resume is no licence either
        run_sft(config.model_copy(update={"resume_from_checkpoint": "latest"}))
    run_sft(config.model_copy(update={"overwrite_output_dir": True}))


def test_sigterm_from_the_cli_is_one_line_and_leaves_a_resumable_checkpoint(tmp_path, tiny_model, sft_file_module):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "vietnamese_ai.cli", "sft", f"model_name_or_path={tiny_model}",
               f"dataset={sft_file_module}", f"output_dir={out}", "max_steps=100000", "save_steps=3",
               "per_device_train_batch_size=2", "logging_steps=1", "disable_tqdm=true"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.getcwd()})
    metrics = out / "metrics.jsonl"
    import time

    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("vietnamese-ai: interrupted: SIGTERM at step") and "resume_from_checkpoint=latest" in last
    assert "Traceback" not in stderr
    newest = checkpoint_dirs(str(out))[-1]
    assert check_checkpoint(newest) is None
    step = json.load(open(os.path.join(newest, "trainer_state.json")))["global_step"]
    assert f"step {step}" in last
    assert not [n for n in os.listdir(out / "checkpoints") if n.startswith(".")]


def test_a_signal_never_tears_an_update_and_a_second_one_skips_a_long_evaluation():
    from vietnamese_ai.training.signals import StopSignals

    with StopSignals() as signals:
        finished = []
        with pytest.raises(Interrupted):
            with signals.critical():             # the optimizer update: both signals wait for its end
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
                finished.append(True)
        assert finished == [True]
        reached = []
        with pytest.raises(Interrupted):
            with signals.critical(hard=False):   # logging and evaluation: a second signal stops at once
                os.kill(os.getpid(), signal.SIGINT)
                reached.append(1)
                os.kill(os.getpid(), signal.SIGINT)
                reached.append(2)
        assert reached == [1]


def test_sigkill_twice_then_resume_gives_the_uninterrupted_run(tmp_path, tiny_dropout_model, sft_file_module):
    """The real thing: a separate process killed with SIGKILL (no cleanup at all) at two points of its
    run, resumed each time with resume_from_checkpoint=latest, ends bit for bit where the uninterrupted
    run ends, with no debris left."""
    import time

    out, full = tmp_path / "run", tmp_path / "full"
    base = [sys.executable, "-m", "vietnamese_ai.cli", "sft", f"model_name_or_path={tiny_dropout_model}",
            f"dataset={sft_file_module}", "max_steps=7", "save_steps=2", "logging_steps=3",
            "per_device_train_batch_size=2", "gradient_accumulation_steps=2", "warmup_ratio=0.3", "weight_decay=0.1",
            "learning_rate=1e-3", "seed=3", "disable_tqdm=true", "max_length=64"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    assert subprocess.run(base + [f"output_dir={full}"], env=env, capture_output=True).returncode == 0
    base.append(f"output_dir={out}")

    def run_until_checkpoint(step, resume):
        process = subprocess.Popen(base + ["resume_from_checkpoint=latest"] * resume, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "checkpoints" / f"step-{step:06d}").exists():
            time.sleep(0.005)
        process.kill()   # SIGKILL: no handler, no cleanup
        process.wait()

    run_until_checkpoint(2, resume=False)
    assert not (out / "final").exists()   # really killed in the middle of the run
    run_until_checkpoint(4, resume=True)
    assert subprocess.run(base + ["resume_from_checkpoint=latest"], env=env, capture_output=True).returncode == 0
    assert _losses(out) == _losses(full)
    assert _same_weights(out / "final", full / "final")
    assert not [n for d in (out, out / "checkpoints") for n in os.listdir(d) if n.startswith(".")]
