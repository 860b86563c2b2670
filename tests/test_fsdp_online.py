"""Online RL under FSDP2 (2 CPU processes, gloo, the environment `accelerate launch --use_fsdp
--fsdp_version 2` gives): the sampler decodes in lockstep, so processes whose completions end at
different steps neither hang nor sample anything but what one process samples; GRPO trains as one
process with twice the accumulation does. Every run has a timeout: a hang fails the test."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "fsdp_online_worker.py")
FSDP = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
ZERO3 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}   # accelerate launch --use_deepspeed
ENGINES = {"fsdp2": FSDP, "deepspeed-zero3": ZERO3}
# torch's gloo backend may abort a process while the interpreter shuts down, after its run has finished
# and written its files (tests/test_fsdp.py says why): that exit is accepted once the results are
# written; any other failure is not.
EXIT_RACE = "terminate called without an active exception"


def _env(**extra):
    return dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMP_NUM_THREADS="1", **extra)


def _two_processes(tmp_path, port, results, *args, **env):
    """The worker under torchrun. A hung worker ends itself after 60 seconds (the worker's watchdog,
    printing where it hung); torchrun is killed, with its session, after 90."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               WORKER, *args]
    out, err = tmp_path / f"stdout-{port}", tmp_path / f"stderr-{port}"
    with open(out, "w") as stdout, open(err, "w") as stderr:   # files: an orphaned worker holds no pipe open
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, env=_env(**env),
                                   start_new_session=True)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail("the two processes hung (no result in 90 seconds): " + err.read_text()[-2000:])
    stdout, stderr = out.read_text(), err.read_text()
    run = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if run.returncode != 0 and "gloo" in run.stderr.lower() and "not available" in run.stderr.lower():
        pytest.skip("torch.distributed gloo backend not available")
    assert run.returncode == 0 or (EXIT_RACE in run.stderr and all(os.path.isfile(r) for r in results)), \
        run.stderr[-3000:]
    return run


def test_the_sampler_decodes_in_lockstep_under_fsdp2(tmp_path, tiny_model):
    """Process 0's two completions are EOS at the first step; process 1 decodes two batches of 8
    steps. Without lockstep process 0 stops after one prefill forward and process 1 waits in the next
    layer's all-gather (the worker then fails, or hangs)."""
    out = tmp_path / "sample"
    files = [out / f"sample-{rank}.json" for rank in (0, 1)]
    _two_processes(tmp_path, 29711, files, "sample", tiny_model, str(out))
    lines = [json.loads(f.read_text()) for f in files]
    by_rank = {line["rank"]: line for line in lines}
    assert sorted(by_rank) == [0, 1] and all(line["lockstep"] for line in lines)
    eos = by_rank[0]["eos"]
    assert by_rank[0]["sharded"] == [[eos], [eos]]                  # ended at the first step
    assert [len(ids) for ids in by_rank[1]["sharded"]] == [8] * 4   # never ended
    assert all(eos not in ids for ids in by_rank[1]["sharded"])
    for line in lines:   # what the unsharded model samples alone, with the same seeds
        assert line["sharded"] == line["alone"]


def _eos_often(tiny_model, path):
    """The tiny model with EOS made likely (most completions end at the first step, a few run to the limit) along the direction of its typical
    final hidden state, so that completions end at different steps in different processes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = torch.tensor([tokenizer.encode("Xin chào, tôi có thể giúp gì cho bạn? The capital of Vietnam")])
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].mean(0)
        model.get_output_embeddings().weight[tokenizer.eos_token_id] += 18.0 * hidden / hidden.norm() ** 2
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("method, engine, port", [
    # GRPO with a sharded reference model under FSDP2 is PPO's case here (ppo-fsdp2); GRPO's own under ZeRO-3
    ("ppo", "fsdp2", 29713), ("rloo", "fsdp2", 29714), ("grpo-lora", "fsdp2", 29715),
    ("ppo-head", "fsdp2", 29716), ("grpo", "deepspeed-zero3", 29717), ("ppo", "deepspeed-zero3", 29718)])
def test_online_rl_sharded_equals_one_process_with_doubled_accumulation(tmp_path, tiny_model, prompts_file,
                                                                        rewards_file, method, engine, port):
    """2 processes x accumulation 1 under FSDP2 or DeepSpeed ZeRO-3 = 1 process x accumulation 2, for GRPO (a reference
    model, or with LoRA the adapters-off policy; beta 0.05), RLOO and PPO (a separate value model,
    sharded with the policy whose auxiliary module it is, or a value head): the same completions
    (token for token, the union of both processes' against the single run's), rewards to 1e-6,
    losses to 1e-5, final weights (model or adapter, value model or value head) to 1e-6 (absolute;
    the reductions add in another order). The completions end at different steps in the two
    processes, so the sampler's lockstep is exercised."""
    model = _eos_often(tiny_model, tmp_path / "model")
    reward = f"python:{rewards_file}:even_tokens"
    value = [tiny_model] if method == "ppo" else []
    files = [tmp_path / "fsdp" / name for name in ("result.json", "sampled-0.json", "sampled-1.json")]
    if engine.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install 'vietnamese-ai[deepspeed]'")
    _two_processes(tmp_path, port, files, method, model, prompts_file, reward, str(tmp_path / "fsdp"), "1", *value,
                   **ENGINES[engine])
    single = subprocess.run([sys.executable, WORKER, method, model, prompts_file, reward, str(tmp_path / "single"), "2",
                             *value], capture_output=True, text=True, timeout=90, env=_env())
    assert single.returncode == 0, single.stderr[-3000:]
    with open(tmp_path / "fsdp" / "run.json") as f:
        assert json.load(f)["distributed"] == {"engine": engine, "world_size": 2}
    a, b = (json.loads((tmp_path / run / "result.json").read_text()) for run in ("fsdp", "single"))
    shards = [json.loads((tmp_path / "fsdp" / f"sampled-{r}.json").read_text()) for r in (0, 1)]
    one = json.loads((tmp_path / "single" / "sampled-0.json").read_text())
    # Every parameter sharded in both processes, PPO's value model included (an auxiliary module of the policy).
    assert [s["sharded"] for s in shards] == [True, True] and one["sharded"] is False
    sampled, alone = [s["ids"] for s in shards], one["ids"]
    assert sorted(sampled[0] + sampled[1]) == sorted(alone)
    # Uneven ends: per rollout (16 completions a process), the processes' longest completions differ.
    longest = [[max(len(c) for c in s[i:i + 16]) for i in range(0, len(s), 16)] for s in sampled]
    assert longest[0] != longest[1], longest
    assert a["reward"] == pytest.approx(b["reward"], abs=1e-6)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    files = ["adapter_model.safetensors" if method == "grpo-lora" else "model.safetensors"]
    files += {"ppo": ["value_model/model.safetensors"], "ppo-head": ["value_head.safetensors"]}.get(method, [])
    for name in files:
        wa, wb = load_file(tmp_path / "fsdp" / "final" / name), load_file(tmp_path / "single" / "final" / name)
        assert wa.keys() == wb.keys()
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=0)
