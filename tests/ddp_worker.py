"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2`: SFT with DDP on CPU (gloo).

    ddp_worker.py MODEL DATA OUT BATCH ACCUMULATION   one run; rank 0 prints its losses
    ddp_worker.py resume MODEL DATA OUT               three runs in OUT/full, OUT/resumed: uninterrupted,
                                                      crashed inside step 3 (every rank), resumed from
                                                      its step-2 checkpoint; rank 0 prints both runs' losses
                                                      and writes them to OUT/result.json
    ddp_worker.py kill PHASE MODEL DATA OUT           one run of 6 steps, checkpoints every 2, in OUT/full
                                                      (PHASE full) or OUT/killed: every process SIGKILLed
                                                      inside its step-4 checkpoint write, after writing its
                                                      shard (PHASE killed), then resumed (PHASE resumed);
                                                      rank 0 writes the run's losses to OUT/PHASE.json
    ddp_worker.py reference MODEL PAIRS OUT           DPO's reference log-prob precompute, twice (computed,
                                                      then from the cache), stopped before training: each
                                                      process writes OUT/table_RANK.json: the table it holds
                                                      and the records its reference passes covered per run
"""

import json
import os
import sys

from vietnamese_ai.recipes.sft import SFTConfig, run_sft


def one_run() -> None:
    model, data, out, batch, accumulation = sys.argv[1:6]
    result = run_sft(SFTConfig(model_name_or_path=model, dataset=data, output_dir=out, learning_rate=1e-3,
                               per_device_train_batch_size=int(batch), gradient_accumulation_steps=int(accumulation),
                               max_steps=2, logging_steps=1, save_steps=0, seed=3, adam_epsilon=1.0,
                               max_grad_norm=1e9, disable_tqdm=True))
    if os.environ.get("RANK", "0") == "0":  # every rank holds the same (reduced) losses; one prints
        print(json.dumps(result.series("loss")))


def resume_runs() -> None:
    from vietnamese_ai.data.loading import load_records
    from vietnamese_ai.data.tokenize import prepare_sft
    from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
    from vietnamese_ai.recipes.sft import sft_collate, sft_loss
    from vietnamese_ai.training.loop import train

    model_path, data, out = sys.argv[2:5]
    tokenizer = load_tokenizer(model_path)
    examples, _ = prepare_sft(load_records(data), tokenizer, 64, vocab_size=None)

    def run(name, loss_fn=sft_loss, **overrides):
        config = SFTConfig(model_name_or_path=model_path, dataset=data, output_dir=os.path.join(out, name),
                           per_device_train_batch_size=2, max_steps=4, save_steps=2, logging_steps=1,
                           learning_rate=1e-3, seed=3, disable_tqdm=True, **overrides)
        return train(load_causal_lm(model_path), tokenizer, config, examples,
                     sft_collate(True, tokenizer.pad_token_id), loss_fn)

    calls = {"n": 0}

    def crash_in_step_3(model, batch):   # one micro-batch per step: the third call is step 3, on every rank
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return sft_loss(model, batch)

    full = run("full")
    try:
        run("resumed", crash_in_step_3)
    except RuntimeError as e:
        assert "simulated crash" in str(e)
    else:
        raise AssertionError("the crash did not happen")
    resumed = run("resumed", resume_from_checkpoint="latest")
    if os.environ.get("RANK", "0") == "0":
        losses = {"full": full.series("loss"), "resumed": resumed.series("loss")}
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(losses, f)
        print(json.dumps(losses))


def killed_run() -> None:
    import signal

    from vietnamese_ai.training import deepspeed, loop

    phase, model_path, data, out = sys.argv[2:6]
    if phase == "killed":
        saves = {"n": 0}

        def killed_while_saving(write_shards):
            def write(*args):
                write_shards(*args)
                saves["n"] += 1
                if saves["n"] == 2:   # step 4's checkpoint: shards on disk, the manifest and the rename not yet
                    os.kill(os.getpid(), signal.SIGKILL)
            return write

        loop.save_sharded_state = killed_while_saving(loop.save_sharded_state)      # FSDP2
        deepspeed.save_state = killed_while_saving(deepspeed.save_state)            # DeepSpeed ZeRO
    result = run_sft(SFTConfig(model_name_or_path=model_path, dataset=data,
                               output_dir=os.path.join(out, "full" if phase == "full" else "killed"),
                               per_device_train_batch_size=2, max_steps=6, save_steps=2, logging_steps=1,
                               learning_rate=1e-3, seed=3, disable_tqdm=True,
                               resume_from_checkpoint="latest" if phase == "resumed" else None))
    if os.environ.get("RANK", "0") == "0":
        with open(os.path.join(out, f"{phase}.json"), "w") as f:
            json.dump(result.series("loss"), f)


def reference_tables() -> None:
    import torch.distributed

    from vietnamese_ai.models.reference import FrozenReference
    from vietnamese_ai.recipes import dpo

    model_path, data, out = sys.argv[2:5]
    rank = os.environ.get("RANK", "0")
    counted = {"records": 0}
    tables = []
    reference_pass = FrozenReference.logps

    def counting_pass(self, batch):
        counted["records"] += batch.num_groups // 2      # two responses (chosen, rejected) per record
        return reference_pass(self, batch)

    def stop_before_training(model, tokenizer, config, train_set, *rest):
        tables.append({"table": [list(p.ref_logps) for p in train_set], "records": counted["records"]})
        counted["records"] = 0

    FrozenReference.logps = counting_pass
    dpo.train = stop_before_training
    for _ in range(2):
        dpo.run_dpo(dpo.DPOConfig(model_name_or_path=model_path, dataset=data, output_dir=os.path.join(out, rank),
                                  per_device_eval_batch_size=2, disable_tqdm=True))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"table_{rank}.json"), "w") as f:
        json.dump(tables, f)
    if torch.distributed.is_initialized():   # the last call was a collective: close gloo before the interpreter exits
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    {"resume": resume_runs, "kill": killed_run, "reference": reference_tables}.get(sys.argv[1], one_run)()
    # gloo's worker threads may still hold a finished job when the interpreter exits, which aborts the
    # process (exit -6) after its results are written; closing the group first waits for them.
    import torch.distributed

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
