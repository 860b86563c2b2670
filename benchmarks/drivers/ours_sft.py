"""vietnamese-ai SFT on the benchmark workload; prints one JSON line."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import peak_memory_mib, step_clock, step_seconds  # noqa: E402


def main() -> None:
    args = json.loads(sys.argv[1])
    import torch

    from vietnamese_ai.recipes import sft as sft_recipe
    from vietnamese_ai.training import loop

    torch.set_num_threads(args.get("threads", torch.get_num_threads()))
    ends = step_clock()
    timing = {}
    original_train = loop.train

    def timed_train(model, tokenizer, config, train_data, *rest, **kw):
        timing["tokens"] = sum(len(e) for e in train_data)
        start = time.perf_counter()
        result = original_train(model, tokenizer, config, train_data, *rest, **kw)
        timing["seconds"] = time.perf_counter() - start
        return result

    sft_recipe.train = timed_train  # time the loop alone, as the TRL driver times trainer.train()
    config = sft_recipe.SFTConfig(
        model_name_or_path=args["model"], dataset=args["data"], output_dir=args["output_dir"], overwrite_output_dir=True,
        per_device_train_batch_size=args["batch_size"], learning_rate=args["lr"], max_steps=args.get("max_steps", -1),
        num_train_epochs=args.get("epochs", 1), logging_steps=args["logging_steps"], save_steps=0, seed=0,
        max_length=args["max_length"], packing=args.get("packing", True), disable_tqdm=True,
    )
    result = sft_recipe.run_sft(config)
    epochs = args.get("epochs", 1) if args.get("max_steps", -1) <= 0 else 1
    print(json.dumps({"losses": result.series("loss"), "train_seconds": timing["seconds"],
                      "tokens": timing["tokens"] * epochs, "steps": result.global_step, "step_seconds": step_seconds(ends), **peak_memory_mib()}))


if __name__ == "__main__":
    main()
