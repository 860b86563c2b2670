"""vietnamese-ai reward-model training on the benchmark workload; prints one JSON line."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import peak_memory_mib, time_training_loop  # noqa: E402


def main() -> None:
    args = json.loads(sys.argv[1])
    import torch

    from vietnamese_ai.recipes import reward as reward_recipe

    torch.set_num_threads(args.get("threads", torch.get_num_threads()))
    timing = time_training_loop(reward_recipe)
    config = reward_recipe.RewardConfig(
        model_name_or_path=args["model"], dataset=args["data"], output_dir=args["output_dir"], overwrite_output_dir=True,
        per_device_train_batch_size=args["batch_size"], gradient_accumulation_steps=args.get("accumulation", 1),
        learning_rate=args["lr"], max_steps=args.get("max_steps", -1), num_train_epochs=args.get("epochs", 1),
        logging_steps=args["logging_steps"], save_steps=0, seed=0, max_length=None, disable_tqdm=True,
        prefix_sharing=args.get("prefix_sharing", True), packing=args.get("packing", True),
    )
    result = reward_recipe.run_reward(config)
    pairs = sum(1 for line in open(args["data"]) if line.strip())
    print(json.dumps({"first": result.history[0], "losses": result.series("loss"), "train_seconds": timing["seconds"],
                      "pairs": pairs * (args.get("epochs", 1) if args.get("max_steps", -1) <= 0 else 1),
                      **peak_memory_mib()}))


if __name__ == "__main__":
    main()
