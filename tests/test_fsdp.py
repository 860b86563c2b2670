"""FSDP2: the engine accelerate launch asks for is the one that runs, and it trains as one process does.

The two-process runs get the environment `accelerate launch --use_fsdp` gives its processes
(ACCELERATE_USE_FSDP=true, FSDP_VERSION); on CPU accelerate itself would run DDP, so the loop shards
the model with FSDP2 (fully_shard, gloo). 2 processes x batch 2 x accumulation 2 must equal 1 process
x batch 2 x accumulation 4: losses and the clipped gradient's norm to 1e-6 (relative), final weights
to 1e-7 (absolute): the reductions add the same numbers in another order, so the last bits may differ.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import check_killed_checkpoint_write_resumes, run_result
from vietnamese_ai.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "fsdp_worker.py")


def _env(**extra):
    return dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMP_NUM_THREADS="1", **extra)


def _result(run, out):
    """What the worker's rank 0 wrote to OUT/result.json."""
    return run_result(run, os.path.join(out, "result.json"))


def _sharded(out, processes):
    """Whether each process's trained parameters were all DTensors (fsdp_worker.py's files)."""
    flags = []
    for rank in range(processes):
        with open(os.path.join(out, f"sharded_{rank}.json")) as f:
            flags.append(json.load(f))
    return flags


def _run_info(out):
    with open(os.path.join(out, "run.json")) as f:
        return json.load(f)["distributed"]


@pytest.mark.parametrize("extra, fsdp_version, port", [
    ([], None, 29621),
    (["lora"], "2", 29622),
    (["lora", "merge"], "2", 29626),     # merge_lora: merged from the gathered weights, on the main process
    (["score"], "2", 29627),             # a score head beside the model, saved from the gathered weights
    (["dpo"], "2", 29628),
], ids=["sft", "lora", "lora-merged", "score-sft", "dpo"])
def test_fsdp2_two_processes_equal_one_process(tmp_path, tiny_model, sft_file, extra, fsdp_version, port):
    # Without --fsdp_version, accelerate launch exports FSDP_VERSION=1: the run says it shards with FSDP2.
    launch = {"ACCELERATE_USE_FSDP": "true", **({"FSDP_VERSION": fsdp_version} if fsdp_version else {})}
    fsdp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), WORKER, tiny_model, sft_file, str(tmp_path / "fsdp"), "2", "2", *extra],
                          capture_output=True, text=True, timeout=300,
                          env=_env(**launch, VIETNAMESE_AI_CACHE=str(tmp_path / "cache-fsdp")))
    if fsdp.returncode != 0 and "gloo" in fsdp.stderr.lower() and "not available" in fsdp.stderr.lower():
        pytest.skip("torch.distributed gloo backend not available")
    single = subprocess.run([sys.executable, WORKER, tiny_model, sft_file, str(tmp_path / "single"), "2", "4", *extra],
                            capture_output=True, text=True, timeout=300,
                            env=_env(VIETNAMESE_AI_CACHE=str(tmp_path / "cache-single")))   # (DPO's reference)
    sharded, alone = _result(fsdp, tmp_path / "fsdp"), _result(single, tmp_path / "single")

    assert _sharded(tmp_path / "fsdp", 2) == [True, True]   # every parameter a DTensor in both: not DDP
    assert _sharded(tmp_path / "single", 1) == [False]
    assert _run_info(tmp_path / "fsdp") == {"engine": "fsdp2", "world_size": 2}
    assert _run_info(tmp_path / "single") == {"engine": "none", "world_size": 1}
    assert ("asked for FSDP version 1" in fsdp.stderr) == (fsdp_version is None)
    assert len(sharded["loss"]) == 3
    assert sharded["loss"] == pytest.approx(alone["loss"], rel=1e-6)
    # The norm is that of the whole gradient, not of a shard; with max_grad_norm=0.5 it was clipped.
    assert sharded["grad_norm"] == pytest.approx(alone["grad_norm"], rel=1e-6)
    assert max(alone["grad_norm"]) > 0.5
    adapter = extra == ["lora"]
    names = ["adapter_model.safetensors" if adapter else "model.safetensors"]
    names += ["score_head.safetensors"] if "score" in extra else []
    for name in names:
        a, b = load_file(tmp_path / "fsdp" / "final" / name), load_file(tmp_path / "single" / "final" / name)
        assert a.keys() == b.keys()            # a tied lm_head is written once, as by one process
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-7, rtol=0)
    if not adapter:   # final/ is a whole Hugging Face model, gathered from the shards
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "final")
        reference = load_file(tmp_path / "fsdp" / "final" / "model.safetensors")
        assert torch.equal(model.get_input_embeddings().weight, reference["model.embed_tokens.weight"])


def test_fsdp_asked_with_one_process_says_it_runs_a_single_process(tmp_path, monkeypatch, caplog, tiny_model, sft_file):
    from vietnamese_ai.recipes.sft import SFTConfig, run_sft

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="vietnamese_ai"):
        run_sft(SFTConfig(model_name_or_path=tiny_model, dataset=sft_file, output_dir=str(out), max_steps=1,
                          save_steps=0, disable_tqdm=True))
    assert "FSDP with one process: there is nothing to shard" in caplog.text
    assert _run_info(out) == {"engine": "none", "world_size": 1}


def test_fsdp2_resumed_run_equals_the_uninterrupted_run(tmp_path, monkeypatch, tiny_dropout_model, sft_file):
    """tests/ddp_worker.py's resume runs (with dropout: each rank's generators matter), under FSDP2:
    crashed inside step 3 on every rank, resumed from the sharded step-2 checkpoint."""
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29623", os.path.join(HERE, "ddp_worker.py"), "resume", tiny_dropout_model, sft_file,
                          str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env=_env(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2"))
    losses = _result(run, tmp_path)
    assert len(losses["full"]) == 4
    assert losses["resumed"] == losses["full"]
    a = load_file(tmp_path / "full" / "final" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    # The checkpoint holds each rank's shard of the weights and of Adam's moments, under the manifest;
    # no rank gathered the whole model to write it.
    checkpoint = tmp_path / "resumed" / "checkpoints" / "step-000002"
    with open(checkpoint / "trainer_state.json") as f:
        manifest = json.load(f)["files"]
    assert {"distributed/__0_0.distcp", "distributed/__1_0.distcp", "distributed/.metadata",
            "rng_state_0.pth", "rng_state_1.pth"} <= set(manifest)
    assert not {"model.safetensors", "optimizer.pt"} & set(os.listdir(checkpoint))
    from torch.distributed.checkpoint import FileSystemReader

    saved = FileSystemReader(str(checkpoint / "distributed")).read_metadata().state_dict_metadata
    weights = [k.removeprefix("model.") for k in saved if k.startswith("model.")]
    assert set(a) <= set(weights)   # (and the tied lm_head under its own name too)
    assert all(f"optimizer.state.{k}.exp_avg_sq" in saved for k in a)

    # One process cannot read it: refused in one line before any model loads.
    from vietnamese_ai.recipes import sft
    from vietnamese_ai.recipes.sft import SFTConfig, run_sft

    def loaded(*args, **kwargs):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(sft, "load_policy", loaded)
    with pytest.raises(ConfigError) as refused:
        run_sft(SFTConfig(model_name_or_path=tiny_dropout_model, dataset=sft_file, output_dir=str(tmp_path / "one"),
                          resume_from_checkpoint=str(checkpoint), disable_tqdm=True))
    assert str(refused.value) == (f"resume_from_checkpoint: '{checkpoint}' holds the sharded state of a fsdp2 run of 2 "
                                  f"processes, which this none run of 1 cannot read; resume it as it was saved: "
                                  f"accelerate launch --use_fsdp --fsdp_version 2 --num_processes 2")


def test_a_sharded_run_refuses_a_checkpoint_whose_weights_were_not_sharded(tmp_path):
    from vietnamese_ai.training.checkpoint import TrainerState, check_resumable

    checkpoint = tmp_path / "step-000002"
    checkpoint.mkdir()
    (checkpoint / "optimizer.pt").write_bytes(b"")
    (checkpoint / "trainer_state.json").write_text(TrainerState(settings={"num_processes": 2, "engine": "ddp"}).to_json())
    check_resumable(str(checkpoint), "ddp", 2)
    with pytest.raises(ConfigError, match="was saved by a run whose parameters were not sharded, which this fsdp2 run "
                                          "cannot resume"):
        check_resumable(str(checkpoint), "fsdp2", 2)


def test_accelerate_launch_use_fsdp_on_cpu_runs_fsdp2(tmp_path, tiny_model, sft_file):
    """The command a user types. On CPU accelerate itself would run DDP under --use_fsdp."""
    launch = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--num_processes", "2",
                             "--main_process_port", "29624", WORKER, tiny_model, sft_file, str(tmp_path / "fsdp"), "2", "2"],
                            capture_output=True, text=True, timeout=300,
                            env=_env(HF_HOME=str(tmp_path / "hf")))   # no accelerate config of this machine's user
    single = subprocess.run([sys.executable, WORKER, tiny_model, sft_file, str(tmp_path / "single"), "2", "4"],
                            capture_output=True, text=True, env=_env(), timeout=300)
    sharded = _result(launch, tmp_path / "fsdp")
    assert _sharded(tmp_path / "fsdp", 2) == [True, True]
    assert _run_info(tmp_path / "fsdp") == {"engine": "fsdp2", "world_size": 2}
    assert "accelerate launch asked for FSDP version 1 (accelerate's default)" in launch.stderr
    assert sharded["loss"] == pytest.approx(_result(single, tmp_path / "single")["loss"], rel=1e-6)


def test_fsdp2_evaluates_three_examples_on_two_processes_without_hanging(tmp_path, tiny_model, sft_file):
    """Process 0 holds two of the three evaluation examples, process 1 one: under FSDP2 every forward
    gathers the weights from every process, so both must run the same number of forward passes."""
    held_out = os.path.join(tmp_path, "eval.jsonl")
    with open(sft_file, encoding="utf-8") as f, open(held_out, "w", encoding="utf-8") as out:
        out.writelines(f.readlines()[:3])
    launch = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                               "29625", WORKER, tiny_model, sft_file, str(tmp_path / "fsdp"), "2", "1",
                               f"eval={held_out}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2"))
    try:
        stdout, stderr = launch.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        launch.send_signal(signal.SIGTERM)   # torchrun passes it on to the processes it started
        launch.communicate(timeout=60)
        pytest.fail("the evaluation hung")
    fsdp = subprocess.CompletedProcess(launch.args, launch.returncode, stdout, stderr)
    single = subprocess.run([sys.executable, WORKER, tiny_model, sft_file, str(tmp_path / "single"), "2", "2",
                             f"eval={held_out}"], capture_output=True, text=True, env=_env(), timeout=300)
    sharded, alone = _result(fsdp, tmp_path / "fsdp"), _result(single, tmp_path / "single")
    assert len(sharded["eval_loss"]) == 1
    assert sharded["eval_loss"] == pytest.approx(alone["eval_loss"], rel=1e-6)   # each example counted once


def test_fsdp2_killed_inside_a_checkpoint_write_resumes_as_the_uninterrupted_run(tmp_path, tiny_dropout_model, sft_file):
    """Every process SIGKILLed inside the step-4 checkpoint, after writing its shard and before the
    manifest and the rename: the half-written checkpoint never appears under its name, the run resumes
    from step 2 and ends as the uninterrupted one, bit for bit."""
    env = _env(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2")

    def phase(name):
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                               "29629", os.path.join(HERE, "ddp_worker.py"), "kill", name, tiny_dropout_model, sft_file,
                               str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)

    check_killed_checkpoint_write_resumes(tmp_path, phase)
    assert sorted(os.listdir(tmp_path / "killed" / "checkpoints")) == ["step-000002", "step-000004"]


@pytest.mark.parametrize("ranks, port", [("1", 29630), ("0,1", 29631)], ids=["one-process", "every-process"])
def test_fsdp2_full_disk_in_a_sharded_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, tiny_model, sft_file,
                                                                                       ranks, port):
    """The step-4 checkpoint's shard cannot be written (ENOSPC) on one process or on both: every
    process stops with the one line a single process gives and the command's exit code 2, none waits
    for the other, the temporary directory is gone and the step-2 checkpoint is intact. The two
    processes are started here (the environment torchrun gives them), so that each one's exit code and
    output are its own: torchrun would end the second one as soon as the first has failed."""
    out = tmp_path / "run"
    env = _env(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    processes = [subprocess.Popen([sys.executable, WORKER, "full-disk", ranks, tiny_model, sft_file, str(out)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)))
                 for rank in (0, 1)]
    try:
        stderrs = [p.communicate(timeout=120)[1] for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
            p.communicate()
        pytest.fail("a process waited for the other after the failed checkpoint write")
    checkpoints = out / "checkpoints"
    expected = (f"vietnamese-ai: error: model directory '{checkpoints / 'step-000004'}' could not be written: No space "
                f"left on device; the checkpoint {checkpoints / 'step-000002'} is intact")
    for p, stderr in zip(processes, stderrs):
        lines = stderr.rstrip().splitlines()
        # (the command ends with os._exit, where gloo's exit race, EXIT_RACE, cannot abort it)
        assert lines[-1] == expected, stderr[-3000:]
        assert "Traceback" not in stderr and "CheckpointException" not in stderr, stderr[-3000:]
        assert p.returncode == 2, stderr[-3000:]
    assert sorted(os.listdir(checkpoints)) == ["step-000002"]   # no temporary directory left
    from vietnamese_ai.training.checkpoint import check_checkpoint

    assert check_checkpoint(str(checkpoints / "step-000002")) is None
