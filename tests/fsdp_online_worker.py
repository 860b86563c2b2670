"""Run by tests/test_fsdp_online.py, under `torchrun --nproc_per_node 2` with the environment
`accelerate launch --use_fsdp --fsdp_version 2` sets, or as one process.

    fsdp_online_worker.py sample MODEL OUT
        The sampler on an FSDP2-sharded model, with uneven ends: process 0 has one prompt whose two
        completions both sample EOS first (the EOS id is chosen so, from the unsharded model), process 1
        two prompts (two batches of one) whose completions never end. Each process writes
        OUT/sample-RANK.json: its completions from the sharded model and from its unsharded copy
        (sampled first, alone).
    fsdp_online_worker.py grpo|grpo-lora|rloo|ppo|ppo-head MODEL PROMPTS REWARD OUT ACCUMULATION [VALUE_MODEL]
        A few GRPO (full or LoRA), RLOO or PPO steps. Every process writes the token ids it sampled
        (the real sampler, spied on), and whether all its model's parameters (value model included) were
        DTensors, to OUT/sampled-RANK.json; rank 0 writes the logged rewards and losses to OUT/result.json.
Results go to files, not stdout or a closing collective (see tests/test_fsdp_online.py's EXIT_RACE).
"""

import faulthandler
import json
import os
import sys

import torch

from vietnamese_ai.models import sampling

MAX_NEW = 8


def sample(model_path: str, out: str) -> None:
    from transformers import AutoModelForCausalLM

    from vietnamese_ai.training.distributed import shard_fsdp2

    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    prompt_a, prompt_b, prompt_c = [5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]
    # EOS := process 0's first sampled token (seed 1); its second completion's seed is one whose first
    # token is the same. Found on the unsharded model, identically in both processes.
    never = -1
    eos = sampling.sample_completions(model, [prompt_a], 1, [1], 1, never, 0)[0].token_ids[0]
    second = next(s for s in range(2, 5000)
                  if sampling.sample_completions(model, [prompt_a], 1, [s], 1, never, 0)[0].token_ids[0] == eos)
    work = {0: ([prompt_a], [1, second]), 1: ([prompt_b, prompt_c], [21, 22, 23, 24])}[rank]
    alone = sampling.sample_completions(model, work[0], 2, work[1], MAX_NEW, eos, 0, batch_size=1)
    model = shard_fsdp2(model, 2)
    sharded = sampling.sample_completions(model, work[0], 2, work[1], MAX_NEW, eos, 0, batch_size=1)
    mine = {"rank": rank, "eos": eos, "lockstep": sampling.sharded_across_processes(model),
            "sharded": [c.token_ids for c in sharded], "alone": [c.token_ids for c in alone]}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"sample-{rank}.json"), "w") as f:
        json.dump(mine, f)


def train(method: str, model: str, prompts: str, reward: str, out: str, accumulation: str, value: str | None) -> None:
    sampled: list[list[int]] = []
    real = sampling.SamplerBackend.generate

    def spy(self, prompts, group, seeds):
        completions = real(self, prompts, group, seeds)
        sampled.extend(c.token_ids for c in completions)
        return completions

    sampling.SamplerBackend.generate = spy
    common = dict(model_name_or_path=model, dataset=prompts, reward=reward, output_dir=out,
                  per_device_train_batch_size=4, gradient_accumulation_steps=int(accumulation),
                  max_completion_length=MAX_NEW, learning_rate=1e-2, adam_epsilon=1.0, max_grad_norm=1e9,
                  logging_steps=1, save_steps=0, seed=3, disable_tqdm=True, log_completions=False)
    if method in ("ppo", "ppo-head"):   # a separate value model (VALUE_MODEL), or a value head on the policy
        from vietnamese_ai.recipes.ppo import PPOConfig, run_ppo

        result = run_ppo(PPOConfig(**common, value_model_name_or_path=value, num_ppo_epochs=2, max_steps=4,
                                   kl_coef=0.05))
    elif method == "rloo":
        from vietnamese_ai.recipes.rloo import RLOOConfig, run_rloo

        result = run_rloo(RLOOConfig(**common, num_generations=4, max_steps=2, beta=0.05))
    else:   # grpo, or grpo-lora: LoRA adapters, the reference being the policy with them off
        from vietnamese_ai.recipes.grpo import GRPOConfig, run_grpo

        lora = dict(use_lora=True, lora_r=4, lora_dropout=0.0) if method == "grpo-lora" else {}
        result = run_grpo(GRPOConfig(**common, **lora, num_generations=4, max_steps=2, beta=0.05))
    rank = os.environ.get("RANK", "0")
    from torch.distributed.tensor import DTensor

    with open(os.path.join(out, f"sampled-{rank}.json"), "w") as f:   # and whether every parameter was sharded
        json.dump({"ids": sampled, "sharded": all(isinstance(p, DTensor) or hasattr(p, "ds_id")   # FSDP2, ZeRO-3
                                                 for p in result.model.parameters())}, f)
    if rank == "0":
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"reward": result.series("reward"), "loss": result.series("loss")}, f)


if __name__ == "__main__":
    # A worker left waiting in a collective (a hang) prints where, and exits: the test then fails.
    faulthandler.dump_traceback_later(60, exit=True)
    if sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3])
    else:
        train(sys.argv[1], *sys.argv[2:7], sys.argv[7] if len(sys.argv) > 7 else None)
