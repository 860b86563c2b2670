"""Run by tests/test_fsdp.py, under `torchrun --nproc_per_node 2` with the environment `accelerate launch
--use_fsdp --fsdp_version 2` sets (or as one process): SFT on CPU, full or LoRA.

    fsdp_worker.py MODEL DATA OUT BATCH ACCUMULATION [lora] [merge] [eval=PATH] [score | dpo]

`score` trains score-regularised SFT (a scalar score head beside the model) on DATA with a score per
record (its position / 10); `dpo` trains DPO on pairs made of DATA's completions (chosen) and one
refusal (rejected); `merge` saves final/ with the LoRA adapters merged.

    fsdp_worker.py full-disk RANKS MODEL DATA OUT

runs `vietnamese-ai sft` (5 steps, a checkpoint every 2) in which the shard file of the step-4
checkpoint cannot be written on the processes RANKS (comma-separated): its open fails with ENOSPC,
as on a full disk; it exits with the command's exit code.

Rank 0 writes OUT/result.json: the logged losses, gradient norms and evaluation losses (PATH
evaluated at the end, one example per batch); each process writes OUT/sharded_RANK.json: whether its trained
model's parameters were DTensors (FSDP2) or ZeRO-3 partitions. (No collective at the very end: gloo's worker thread may still be
releasing the last one's tensors while the interpreter shuts down, which aborts the process.)
"""

import json
import os
import sys

from vietnamese_ai.recipes.dpo import DPOConfig, run_dpo
from vietnamese_ai.recipes.score_sft import ScoreSFTConfig, run_score_sft
from vietnamese_ai.recipes.sft import SFTConfig, run_sft


def full_disk(ranks: str, model: str, data: str, out: str) -> int:
    import errno

    from torch.distributed.checkpoint import filesystem

    from vietnamese_ai.cli import main as cli

    rank = os.environ.get("RANK", "0")
    real_open = filesystem.FileSystem.create_stream

    def create_stream(self, path, mode):
        if rank in ranks.split(",") and "step-000004" in str(path) and str(path).endswith(".distcp"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(self, path, mode)

    filesystem.FileSystem.create_stream = create_stream
    return cli(["sft", f"model_name_or_path={model}", f"dataset={data}", f"output_dir={out}", "max_steps=5",
                "save_steps=2", "per_device_train_batch_size=2", "logging_steps=1", "disable_tqdm=true"])


def main() -> None:
    if sys.argv[1] == "full-disk":   # the command's own exit (vietnamese_ai.cli.entry)
        from vietnamese_ai.cli import exit_process

        exit_process(full_disk(*sys.argv[2:6]))
    model, data, out, batch, accumulation = sys.argv[1:6]
    options = sys.argv[6:]
    lora = "lora" in options
    held_out = next((o.removeprefix("eval=") for o in options if o.startswith("eval=")), None)
    settings = dict(model_name_or_path=model, dataset=data, output_dir=out, learning_rate=1e-2,
                    per_device_train_batch_size=int(batch), gradient_accumulation_steps=int(accumulation),
                    max_steps=3, logging_steps=1, save_steps=0, seed=3, adam_epsilon=1.0, max_grad_norm=0.5,
                    disable_tqdm=True, use_lora=lora, lora_r=4, lora_dropout=0.0, merge_lora="merge" in options,
                    eval_dataset=held_out, per_device_eval_batch_size=1)
    with open(data, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    if "score" in options:
        records = [dict(row, score=i / 10) for i, row in enumerate(rows)]
        result = run_score_sft(ScoreSFTConfig(**settings, score_alpha=1.0), train_records=records)
    elif "dpo" in options:
        pairs = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": " Không biết."} for r in rows]
        result = run_dpo(DPOConfig(**settings), train_records=pairs)
    else:
        result = run_sft(SFTConfig(**settings))
    from torch.distributed.tensor import DTensor

    rank = os.environ.get("RANK", "0")
    with open(os.path.join(out, f"sharded_{rank}.json"), "w") as f:
        json.dump(all(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in result.model.parameters()), f)   # FSDP2, ZeRO-3
    if rank == "0":
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"loss": result.series("loss"), "grad_norm": result.series("grad_norm"),
                       "eval_loss": result.series("eval/loss")}, f)


if __name__ == "__main__":
    main()
