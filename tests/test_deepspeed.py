"""DeepSpeed ZeRO-2/3 on CPU (DS_ACCELERATOR=cpu, gloo, 2 processes), the engine driven by the loop.

2 processes under ZeRO must train as DDP does and as one process with doubled accumulation: losses
and the clipped gradient's norm to 1e-6 (relative), final weights to 1e-7 (absolute; the reductions
add the same numbers in another order). Accumulation inside ZeRO equals the loop's accumulation by hand; a run
killed inside a checkpoint write resumes bit for bit. deepspeed is an optional extra: without it these
tests skip, and the run asking for it is refused in one line (tested here too)."""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import check_killed_checkpoint_write_resumes, run_result
from vietnamese_ai.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "fsdp_worker.py")


def _env(stage=None, **extra):
    zero = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": str(stage)} if stage else {}
    return dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMP_NUM_THREADS="1", **zero, **extra)


def _torchrun(port, *args, stage=None, **env):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), *args], capture_output=True, text=True, timeout=300, env=_env(stage, **env))


def _result(run, out):
    return run_result(run, os.path.join(out, "result.json"))


def _engine(out):
    with open(os.path.join(out, "run.json")) as f:
        return json.load(f)["distributed"]


def _same_weights(a_dir, b_dir, name="model.safetensors", atol=1e-7):
    a, b = load_file(os.path.join(a_dir, "final", name)), load_file(os.path.join(b_dir, "final", name))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0)


needs_deepspeed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("deepspeed") is None,
    reason="DeepSpeed is an optional extra: pip install 'vietnamese-ai[deepspeed]' (its CPU ops need a C++ compiler)")


@needs_deepspeed
@pytest.mark.parametrize("stage, extra, port", [(3, [], 29741), (2, [], 29742), (3, ["lora", "merge"], 29743)],
                         ids=["zero3", "zero2", "zero3-lora-merged"])
def test_zero_two_processes_equal_ddp_and_one_process(tmp_path, tiny_model, sft_file, stage, extra, port):
    """The command a user types, `accelerate launch --use_deepspeed --zero_stage N`: on CPU accelerate itself
    would not set DeepSpeed up; here it runs, and equals DDP and one process with doubled accumulation."""
    zero = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--use_deepspeed", "--zero_stage",
                           str(stage), "--num_processes", "2", "--main_process_port", str(port), WORKER, tiny_model,
                           sft_file, str(tmp_path / "zero"), "2", "2", *extra],
                          capture_output=True, text=True, timeout=300, env=_env(HF_HOME=str(tmp_path / "hf")))
    ddp = _torchrun(port + 20, WORKER, tiny_model, sft_file, str(tmp_path / "ddp"), "2", "2", *extra)
    single = subprocess.run([sys.executable, WORKER, tiny_model, sft_file, str(tmp_path / "single"), "2", "4", *extra],
                            capture_output=True, text=True, timeout=300, env=_env())
    a, b, c = _result(zero, tmp_path / "zero"), _result(ddp, tmp_path / "ddp"), _result(single, tmp_path / "single")
    assert _engine(tmp_path / "zero") == {"engine": f"deepspeed-zero{stage}", "world_size": 2}
    assert _engine(tmp_path / "ddp") == {"engine": "ddp", "world_size": 2}
    # ZeRO-3 partitions every parameter across the processes (DeepSpeed marks each); ZeRO-2 keeps them whole.
    with open(tmp_path / "zero" / "sharded_0.json") as f:
        assert json.load(f) is (stage == 3)
    assert len(a["loss"]) == 3
    for other in (b, c):
        assert a["loss"] == pytest.approx(other["loss"], rel=1e-6)
        assert a["grad_norm"] == pytest.approx(other["grad_norm"], rel=1e-6)   # the whole gradient's norm
    assert max(c["grad_norm"]) > 0.5 or extra   # (with max_grad_norm=0.5: clipped, but for the small LoRA gradients)
    _same_weights(tmp_path / "zero", tmp_path / "ddp")
    _same_weights(tmp_path / "zero", tmp_path / "single")
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "zero" / "final")   # a whole Hugging Face model


@needs_deepspeed
def test_accumulation_inside_zero3_equals_accumulation_by_hand(tmp_path, tiny_model, sft_file):
    """Batch 1 x accumulation 4 under ZeRO-3 = the same under DDP, whose loop accumulates by hand (no_sync
    until the last micro-batch): DeepSpeed reduces the gradients once per optimizer step, at the boundary
    the loop marks, and does not divide the loss by its accumulation again (which would shrink every
    update by 4)."""
    zero = _torchrun(29745, WORKER, tiny_model, sft_file, str(tmp_path / "zero"), "1", "4", stage=3)
    ddp = _torchrun(29746, WORKER, tiny_model, sft_file, str(tmp_path / "ddp"), "1", "4")
    a, b = _result(zero, tmp_path / "zero"), _result(ddp, tmp_path / "ddp")
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-6)
    _same_weights(tmp_path / "zero", tmp_path / "ddp")


@needs_deepspeed
@pytest.mark.parametrize("stage, port", [(3, 29747), (2, 29748)], ids=["zero3", "zero2"])
def test_zero_killed_inside_a_checkpoint_write_resumes_as_the_uninterrupted_run(tmp_path, tiny_dropout_model, sft_file,
                                                                                 stage, port):
    """Both processes SIGKILLed inside the step-4 checkpoint, after DeepSpeed wrote every partition and
    before the manifest and the rename: the run resumes from step 2 and ends as the uninterrupted one,
    bit for bit (dropout on: each process's random generators are restored too)."""
    def phase(name):
        return _torchrun(port, os.path.join(HERE, "ddp_worker.py"), "kill", name, tiny_dropout_model, sft_file,
                         str(tmp_path), stage=stage)

    check_killed_checkpoint_write_resumes(tmp_path, phase)
    saved = os.listdir(tmp_path / "killed" / "checkpoints" / "step-000002" / "distributed" / "zero")
    assert sorted(n for n in saved if "optim_states" in n) == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"
                                                              for r in (0, 1)]   # each rank's partition


def _one_line_error(capsys, argv):
    from vietnamese_ai.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_zero_stage_other_than_2_or_3_is_refused_in_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch,
                                                                                       sft_file):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "1")
    # a model path that does not exist would be the first complaint if anything tried to load it
    err = _one_line_error(capsys, ["sft", "model_name_or_path=/nonexistent/model", f"dataset={sft_file}",
                                   f"output_dir={tmp_path / 'out'}"])
    assert "asked for DeepSpeed ZeRO stage 1; this toolkit runs ZeRO-2 and ZeRO-3" in err
    assert not (tmp_path / "out").exists()


def test_deepspeed_missing_is_refused_in_one_line(tmp_path, capsys, monkeypatch, sft_file):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    monkeypatch.setitem(sys.modules, "deepspeed", None)   # import deepspeed raises ImportError
    err = _one_line_error(capsys, ["sft", "model_name_or_path=/nonexistent/model", f"dataset={sft_file}",
                                   f"output_dir={tmp_path / 'out'}"])
    assert "asked for DeepSpeed ZeRO-3, but deepspeed cannot be imported" in err
    assert "pip install 'vietnamese-ai[deepspeed]'" in err


def test_a_deepspeed_config_file_with_its_own_optimizer_is_refused(tmp_path, monkeypatch, caplog):
    pytest.importorskip("accelerate")
    from vietnamese_ai.training.config import TrainingConfig
    from vietnamese_ai.training.deepspeed import engine_config

    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3}, "optimizer": {"type": "AdamW"},
                                "train_micro_batch_size_per_gpu": "auto"}))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(path))
    config = TrainingConfig(output_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="the DeepSpeed config has an 'optimizer' section"):
        engine_config(config, 2, "no")
    path.write_text(json.dumps({"zero_optimization": {"stage": 3}, "gradient_accumulation_steps": "auto"}))
    settings = engine_config(config, 2, "no")   # the loop's values fill "auto" and the missing keys
    assert settings["zero_optimization"]["stage"] == 3
    assert settings["gradient_accumulation_steps"] == config.gradient_accumulation_steps
    assert settings["train_batch_size"] == (config.per_device_train_batch_size * config.gradient_accumulation_steps * 2)
    assert settings["gradient_clipping"] == config.max_grad_norm
    # A number the file sets that differs from the training config's: the training config's, with a warning.
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_accumulation_steps": 8,
                                "train_micro_batch_size_per_gpu": config.per_device_train_batch_size}))
    with caplog.at_level(logging.WARNING, logger="vietnamese_ai"):
        settings = engine_config(config, 2, "no")
    assert settings["gradient_accumulation_steps"] == config.gradient_accumulation_steps
    assert [r.getMessage() for r in caplog.records] == [
        f"the DeepSpeed config sets gradient_accumulation_steps; the training config's values are used "
        f"(gradient_accumulation_steps={config.gradient_accumulation_steps})"]


def test_an_unreadable_deepspeed_config_file_is_one_line(tmp_path, capsys, monkeypatch, sft_file):
    path = tmp_path / "ds.json"
    path.write_text("{not json")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(path))
    err = _one_line_error(capsys, ["sft", "model_name_or_path=/nonexistent/model", f"dataset={sft_file}",
                                   f"output_dir={tmp_path / 'out'}"])
    assert f"the DeepSpeed config file {path} (--deepspeed_config_file) cannot be read" in err


def test_a_sharded_checkpoint_of_another_engine_is_refused_before_any_weight_is_touched(tmp_path):
    from vietnamese_ai.training.checkpoint import TrainerState, check_resumable

    checkpoint = tmp_path / "step-000002"
    (checkpoint / "distributed").mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(
        TrainerState(settings={"num_processes": 2, "engine": "fsdp2"}).to_json())
    check_resumable(str(checkpoint), "fsdp2", 2)
    with pytest.raises(ConfigError) as refused:
        check_resumable(str(checkpoint), "deepspeed-zero3", 2)
    assert str(refused.value) == (f"resume_from_checkpoint: '{checkpoint}' holds the sharded state of a fsdp2 run of 2 "
                                  f"processes, which this deepspeed-zero3 run of 2 cannot read; resume it as it was "
                                  f"saved: accelerate launch --use_fsdp --fsdp_version 2 --num_processes 2")
    (checkpoint / "trainer_state.json").write_text(
        TrainerState(settings={"num_processes": 2, "engine": "deepspeed-zero2"}).to_json())
    with pytest.raises(ConfigError, match="resume it as it was saved: accelerate launch --use_deepspeed --zero_stage 2 "
                                          "--num_processes 2"):
        check_resumable(str(checkpoint), "deepspeed-zero3", 2)
