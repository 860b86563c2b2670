"""Peak memory of this process (GPU if used, else resident set size), in MiB."""

import resource


def peak_memory_mib() -> dict:
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        import torch

        if torch.cuda.is_available():
            out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return out


def time_training_loop(recipe_module) -> dict:
    """Wrap the training loop as the recipe module sees it; the dict gets "seconds" once it has run.
    Only the loop is timed, as the TRL drivers time trainer.train()."""
    import time

    from vietnamese_ai.training import loop

    timing: dict = {}
    original = loop.train

    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = original(*args, **kwargs)
        timing["seconds"] = time.perf_counter() - start
        return result

    recipe_module.train = timed
    return timing


def trl_training_args(args: dict) -> dict:
    """The TrainingArguments every TRL driver shares: the benchmark's schedule, in fp32 without
    gradient checkpointing (TRL's defaults turn both on), no saving, no logging integrations."""
    import torch

    return dict(output_dir=args["output_dir"], per_device_train_batch_size=args["batch_size"],
                gradient_accumulation_steps=args.get("accumulation", 1), learning_rate=args["lr"],
                max_steps=args.get("max_steps", -1), num_train_epochs=args.get("epochs", 1),
                logging_steps=args["logging_steps"], lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                max_grad_norm=1.0, seed=0, gradient_checkpointing=False, bf16=False, fp16=False, save_strategy="no",
                report_to="none", dataloader_num_workers=0, disable_tqdm=True, use_cpu=not torch.cuda.is_available())


def step_clock() -> list:
    """Record the time of every optimizer step's end (a global torch hook, so the same clock on either
    side: ours and TRL's trainers both call torch.optim.Optimizer.step). Returns the list it fills."""
    import time

    from torch.optim.optimizer import register_optimizer_step_post_hook

    ends: list = []
    register_optimizer_step_post_hook(lambda *a, **k: ends.append(time.perf_counter()))
    return ends


def step_seconds(ends: list) -> list:
    """Seconds between consecutive optimizer-step ends (one fewer than the steps: the first has no start)."""
    return [b - a for a, b in zip(ends, ends[1:])]


def train_and_report(trainer, examples: int, args: dict) -> None:
    """Time trainer.train() and print the driver's JSON line (with each step's seconds)."""
    import json
    import time

    ends = step_clock()
    start = time.perf_counter()
    trainer.train()
    print(json.dumps({**trl_summary(trainer, time.perf_counter() - start, examples, args), "step_seconds": step_seconds(ends)}))


def trl_summary(trainer, seconds: float, examples: int, args: dict) -> dict:
    """The JSON line a TRL driver prints: first logged record, losses, timing, memory."""
    history = [dict(h) for h in trainer.state.log_history if "loss" in h]
    epochs = args.get("epochs", 1) if args.get("max_steps", -1) <= 0 else 1
    return {"first": history[0], "losses": [h["loss"] for h in history], "train_seconds": seconds,
            "pairs": examples * epochs, "steps": trainer.state.global_step, **peak_memory_mib()}
