"""Run by tests/test_fsdp.py, under `torchrun --nproc_per_node 2` with the environment `accelerate launch
--use_fsdp --fsdp_version 2` sets (or as one process): SFT on CPU, full or LoRA.

    fsdp_worker.py MODEL DATA OUT BATCH ACCUMULATION [lora]

Rank 0 prints one JSON line: the logged losses and gradient norms, and whether the trained model's
parameters were DTensors (sharded) in every process.
"""

import json
import os
import sys

import torch

from vietnamese_ai.recipes.sft import SFTConfig, run_sft


def main() -> None:
    model, data, out, batch, accumulation = sys.argv[1:6]
    lora = sys.argv[6:] == ["lora"]
    result = run_sft(SFTConfig(model_name_or_path=model, dataset=data, output_dir=out, learning_rate=1e-2,
                               per_device_train_batch_size=int(batch), gradient_accumulation_steps=int(accumulation),
                               max_steps=3, logging_steps=1, save_steps=0, seed=3, adam_epsilon=1.0,
                               max_grad_norm=0.5, disable_tqdm=True, use_lora=lora, lora_r=4, lora_dropout=0.0))
    from torch.distributed.tensor import DTensor

    sharded = all(isinstance(p, DTensor) for p in result.model.parameters())
    if torch.distributed.is_initialized():
        flags = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(flags, sharded)
        sharded = all(flags)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"loss": result.series("loss"), "grad_norm": result.series("grad_norm"), "sharded": sharded}))


if __name__ == "__main__":
    main()
