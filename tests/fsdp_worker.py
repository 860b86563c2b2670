"""Run by tests/test_fsdp.py, under `torchrun --nproc_per_node 2` with the environment `accelerate launch
--use_fsdp --fsdp_version 2` sets (or as one process): SFT on CPU, full or LoRA.

    fsdp_worker.py MODEL DATA OUT BATCH ACCUMULATION [lora] [merge] [eval=PATH] [score]

`score` trains score-regularised SFT (a scalar score head beside the model) on DATA with a score per
record (its position / 10); `merge` saves final/ with the LoRA adapters merged.

Rank 0 prints one JSON line: the logged losses, gradient norms and evaluation losses (PATH evaluated
at the end, one example per batch), and whether the trained model's parameters were DTensors
(sharded) in every process.
"""

import json
import os
import sys

import torch

from vietnamese_ai.recipes.score_sft import ScoreSFTConfig, run_score_sft
from vietnamese_ai.recipes.sft import SFTConfig, run_sft


def main() -> None:
    model, data, out, batch, accumulation = sys.argv[1:6]
    options = sys.argv[6:]
    lora = "lora" in options
    held_out = next((o.removeprefix("eval=") for o in options if o.startswith("eval=")), None)
    settings = dict(model_name_or_path=model, dataset=data, output_dir=out, learning_rate=1e-2,
                    per_device_train_batch_size=int(batch), gradient_accumulation_steps=int(accumulation),
                    max_steps=3, logging_steps=1, save_steps=0, seed=3, adam_epsilon=1.0, max_grad_norm=0.5,
                    disable_tqdm=True, use_lora=lora, lora_r=4, lora_dropout=0.0, merge_lora="merge" in options,
                    eval_dataset=held_out, per_device_eval_batch_size=1)
    if "score" in options:
        with open(data, encoding="utf-8") as f:
            records = [dict(json.loads(line), score=i / 10) for i, line in enumerate(f)]
        result = run_score_sft(ScoreSFTConfig(**settings, score_alpha=1.0), train_records=records)
    else:
        result = run_sft(SFTConfig(**settings))
    from torch.distributed.tensor import DTensor

    sharded = all(isinstance(p, DTensor) for p in result.model.parameters())
    if torch.distributed.is_initialized():
        flags = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(flags, sharded)
        sharded = all(flags)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"loss": result.series("loss"), "grad_norm": result.series("grad_norm"),
                          "eval_loss": result.series("eval/loss"), "sharded": sharded}))


if __name__ == "__main__":
    main()
