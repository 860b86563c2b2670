"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2`: SFT with DDP on CPU (gloo)."""

import json
import os
import sys

from vietnamese_ai.recipes.sft import SFTConfig, run_sft


def main() -> None:
    model, data, out, batch, accumulation = sys.argv[1:6]
    result = run_sft(SFTConfig(model_name_or_path=model, dataset=data, output_dir=out, learning_rate=1e-3,
                               per_device_train_batch_size=int(batch), gradient_accumulation_steps=int(accumulation),
                               max_steps=2, logging_steps=1, save_steps=0, seed=3, adam_epsilon=1.0,
                               max_grad_norm=1e9, disable_tqdm=True))
    if os.environ.get("RANK", "0") == "0":  # every rank holds the same (reduced) losses; one prints
        print(json.dumps(result.series("loss")))


if __name__ == "__main__":
    main()
