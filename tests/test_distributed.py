"""Data parallelism: 2 processes x batch 2 x accumulation 2 equal 1 process x batch 2 x accumulation 4.

The loss is normalised by the item count of the whole step across ranks, so the gradient (and with
adam_epsilon=1, the update) must not depend on how the step's examples are split between processes.
A 2-process run with dropout, crashed and resumed, equals the uninterrupted one bit for bit: each
rank's random generators are checkpointed, not only rank 0's. The reference log-prob precompute is
split between the processes and gathered into the one-process table.
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


def test_reference_precompute_is_split_across_processes(tmp_path, tiny_model):
    """Each process computes the reference log-probs of its share of the records only (whole batches of
    per_device_eval_batch_size, taken in turn), and every process ends up with the one-process table,
    bit for bit; the second run reads the table the main process cached, on every process."""
    from tests.conftest import write_jsonl
    from tests.test_dpo_family import separable_pairs

    data = write_jsonl(tmp_path / "pairs.jsonl", separable_pairs(11))   # batches of 2: 6, the last one short
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMP_NUM_THREADS="1")
    _torchrun(29535, "reference", tiny_model, data, str(tmp_path / "two"),
              env=dict(env, VIETNAMESE_AI_CACHE=str(tmp_path / "cache-two")))
    single = subprocess.run([sys.executable, os.path.join(HERE, "ddp_worker.py"), "reference", tiny_model, data,
                             str(tmp_path / "one")], capture_output=True, text=True, timeout=300,
                            env=dict(env, VIETNAMESE_AI_CACHE=str(tmp_path / "cache-one")))
    assert single.returncode == 0, single.stderr[-3000:]
    (alone, alone_cached), = [json.loads((tmp_path / "one" / "table_0.json").read_text())]
    assert alone["records"] == 11 and alone_cached["records"] == 0
    assert len(alone["table"]) == 11 and alone_cached["table"] == alone["table"]
    ranks = [json.loads((tmp_path / "two" / f"table_{rank}.json").read_text()) for rank in (0, 1)]
    # Batches [0,1] [4,5] [8,9] on rank 0, [2,3] [6,7] [10] on rank 1.
    assert [computed["records"] for computed, _ in ranks] == [6, 5]
    assert [cached["records"] for _, cached in ranks] == [0, 0]
    for computed, cached in ranks:
        assert computed["table"] == alone["table"]       # floats read back from JSON: bit for bit
        assert cached["table"] == alone["table"]
    # One file, of the same name (key) and bytes as one process's: either run's cache serves the other.
    two, one = tmp_path / "cache-two" / "ref_logps", tmp_path / "cache-one" / "ref_logps"
    assert len(os.listdir(two)) == 1 and os.listdir(two) == os.listdir(one)
    name = os.listdir(two)[0]
    assert (two / name).read_bytes() == (one / name).read_bytes()
