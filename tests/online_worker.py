"""Run by tests/test_online_rl.py and tests/test_ppo.py, under `torchrun --nproc_per_node 2` or alone:
a few GRPO steps (with active sampling when ACTIVE_SAMPLING=variance), or PPO steps with a separate
value model (a 6th argument: its path)."""

import json
import os
import sys

from vietnamese_ai.recipes.grpo import GRPOConfig, run_grpo


def main() -> None:
    model, prompts, reward, out, accumulation = sys.argv[1:6]
    if len(sys.argv) > 6:
        from vietnamese_ai.recipes.ppo import PPOConfig, run_ppo

        result = run_ppo(PPOConfig(model_name_or_path=model, dataset=prompts, reward=reward, output_dir=out,
                                   value_model_name_or_path=sys.argv[6], per_device_train_batch_size=4,
                                   gradient_accumulation_steps=int(accumulation), num_ppo_epochs=2,
                                   max_completion_length=8, learning_rate=1e-2, adam_epsilon=1.0, max_grad_norm=1e9,
                                   max_steps=4, logging_steps=1, save_steps=0, seed=3, disable_tqdm=True,
                                   log_completions=False, kl_coef=0.05))
        return report(result)
    result = run_grpo(GRPOConfig(model_name_or_path=model, dataset=prompts, reward=reward, output_dir=out,
                                 num_generations=4, per_device_train_batch_size=4,
                                 gradient_accumulation_steps=int(accumulation), max_completion_length=8,
                                 learning_rate=1e-2, adam_epsilon=1.0, max_grad_norm=1e9, max_steps=2, logging_steps=1,
                                 save_steps=0, seed=3, disable_tqdm=True, log_completions=False, beta=0.05,
                                 active_sampling=os.environ.get("ACTIVE_SAMPLING", "none")))
    report(result)


def report(result) -> None:
    if os.environ.get("RANK", "0") == "0":
        rollouts = [r for r in result.history if "reward" in r]   # PPO logs the reward once per rollout
        print(json.dumps({"reward": rollouts[-1]["reward"], "loss": result.history[-1]["loss"]}))


if __name__ == "__main__":
    main()
    # gloo's worker threads may still hold a finished job when the interpreter exits, which aborts the
    # process (exit -6) after its results are written; closing the group first waits for them.
    import torch.distributed

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
