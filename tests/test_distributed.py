"""Data parallelism: 2 processes x batch 2 x accumulation 2 equal 1 process x batch 2 x accumulation 4.

The loss is normalised by the item count of the whole step across ranks, so the gradient (and with
adam_epsilon=1, the update) must not depend on how the step's examples are split between processes.
A 2-process run with dropout, crashed and resumed, equals the uninterrupted one bit for bit: each
rank's random generators are checkpointed, not only rank 0's.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))


def test_two_process_ddp_equals_single_process(tmp_path, tiny_model, sft_file):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMP_NUM_THREADS="1")
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                          os.path.join(HERE, "ddp_worker.py"), tiny_model, sft_file, str(tmp_path / "ddp"), "2", "2"],
                         capture_output=True, text=True, env=env, timeout=300)
    if ddp.returncode != 0 and "gloo" in ddp.stderr.lower() and "not available" in ddp.stderr.lower():
        pytest.skip("torch.distributed gloo backend not available")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, os.path.join(HERE, "ddp_worker.py"), tiny_model, sft_file,
                             str(tmp_path / "single"), "2", "4"], capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp_losses = json.loads(ddp.stdout.strip().splitlines()[-1])
    single_losses = json.loads(single.stdout.strip().splitlines()[-1])
    assert ddp_losses == pytest.approx(single_losses, abs=1e-6)
    for name, engine in (("ddp", {"engine": "ddp", "world_size": 2}), ("single", {"engine": "none", "world_size": 1})):
        assert json.loads((tmp_path / name / "run.json").read_text())["distributed"] == engine
    a = load_file(os.path.join(tmp_path, "ddp", "final", "model.safetensors"))
    b = load_file(os.path.join(tmp_path, "single", "final", "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-7, rtol=0)


def _torchrun(port, *args, env):
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(port), os.path.join(HERE, "ddp_worker.py"), *args],
                         capture_output=True, text=True, env=env, timeout=300)
    if run.returncode != 0 and "gloo" in run.stderr.lower() and "not available" in run.stderr.lower():
        pytest.skip("torch.distributed gloo backend not available")
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_two_process_resume_with_dropout_equals_the_uninterrupted_run(tmp_path, tiny_dropout_model, sft_file):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMP_NUM_THREADS="1")
    run = _torchrun(29534, "resume", tiny_dropout_model, sft_file, str(tmp_path), env=env)
    losses = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(losses["full"]) == 4
    assert losses["resumed"] == losses["full"]   # steps 1-2 read back from metrics.jsonl, 3-4 computed: exactly
    checkpoint = tmp_path / "resumed" / "checkpoints" / "step-000002"
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(os.listdir(checkpoint))
    a = load_file(os.path.join(tmp_path, "full", "final", "model.safetensors"))
    b = load_file(os.path.join(tmp_path, "resumed", "final", "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
