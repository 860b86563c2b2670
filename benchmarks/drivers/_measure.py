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


def trl_summary(trainer, seconds: float, examples: int, args: dict) -> dict:
    """The JSON line a TRL driver prints: first logged record, losses, timing, memory."""
    history = [dict(h) for h in trainer.state.log_history if "loss" in h]
    epochs = args.get("epochs", 1) if args.get("max_steps", -1) <= 0 else 1
    return {"first": history[0], "losses": [h["loss"] for h in history], "train_seconds": seconds,
            "pairs": examples * epochs, "steps": trainer.state.global_step, **peak_memory_mib()}
