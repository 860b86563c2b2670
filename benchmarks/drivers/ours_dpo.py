"""vietnamese-ai DPO on the benchmark workload; prints one JSON line."""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import peak_memory_mib, step_clock, step_seconds, time_training_loop  # noqa: E402


def main() -> None:
    args = json.loads(sys.argv[1])
    # A fresh cache: every timed run computes its reference log-probs, nothing is reused between runs.
    os.environ["VIETNAMESE_AI_CACHE"] = tempfile.mkdtemp(prefix="bench-cache-")
    import torch

    from vietnamese_ai.recipes import dpo as dpo_recipe
    
    torch.set_num_threads(args.get("threads", torch.get_num_threads()))
    ends = step_clock()
    timing = time_training_loop(dpo_recipe)
    start = time.perf_counter()
    config = dpo_recipe.DPOConfig(
        model_name_or_path=args["model"], ref_model_name_or_path=args["ref_model"], dataset=args["data"],
        output_dir=args["output_dir"], overwrite_output_dir=True, per_device_train_batch_size=args["batch_size"],
        gradient_accumulation_steps=args.get("accumulation", 1),
        learning_rate=args["lr"], max_steps=args.get("max_steps", -1), num_train_epochs=args.get("epochs", 1),
        logging_steps=args["logging_steps"], save_steps=0, seed=0, max_length=None, disable_tqdm=True,
        beta=args["beta"], loss_type=args["loss_type"], label_smoothing=args.get("label_smoothing", 0.0),
        prefix_sharing=args.get("prefix_sharing", True), packing=args.get("packing", True),
        precompute_ref_log_probs=args.get("precompute", True),
    )
    result = dpo_recipe.run_dpo(config)
    recipe_seconds = time.perf_counter() - start  # data, reference precompute and training
    rows = json.load(open(args["data"])) if args["data"].endswith(".json") else None
    pairs = sum(1 for _ in open(args["data"])) if rows is None else len(rows)
    print(json.dumps({"first": result.history[0], "losses": result.series("loss"), "train_seconds": timing["seconds"],
                      "recipe_seconds": recipe_seconds,
                      "pairs": pairs * (args.get("epochs", 1) if args.get("max_steps", -1) <= 0 else 1),
                      "steps": result.global_step, "step_seconds": step_seconds(ends), **peak_memory_mib()}))


if __name__ == "__main__":
    main()
