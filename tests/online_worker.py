"""Run by tests/test_online_rl.py, under `torchrun --nproc_per_node 2` or alone: a few GRPO steps."""

import json
import os
import sys

from vietnamese_ai.recipes.grpo import GRPOConfig, run_grpo


def main() -> None:
    model, prompts, reward, out, accumulation = sys.argv[1:6]
    result = run_grpo(GRPOConfig(model_name_or_path=model, dataset=prompts, reward=reward, output_dir=out,
                                 num_generations=4, per_device_train_batch_size=4,
                                 gradient_accumulation_steps=int(accumulation), max_completion_length=8,
                                 learning_rate=1e-2, adam_epsilon=1.0, max_grad_norm=1e9, max_steps=2, logging_steps=1,
                                 save_steps=0, seed=3, disable_tqdm=True, log_completions=False, beta=0.05))
    if os.environ.get("RANK", "0") == "0":
        last = result.history[-1]
        print(json.dumps({"reward": last["reward"], "loss": last["loss"]}))


if __name__ == "__main__":
    main()
