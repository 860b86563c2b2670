"""vietnamese-ai GRPO or RLOO on the benchmark workload; prints one JSON line."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import peak_memory_mib, step_clock, step_seconds, time_training_loop  # noqa: E402


def main() -> None:
    args = json.loads(sys.argv[1])
    import torch

    from vietnamese_ai.recipes import grpo, rloo
    from vietnamese_ai.recipes.online import engine

    torch.set_num_threads(args.get("threads", torch.get_num_threads()))
    ends = step_clock()
    recipe = grpo if args["method"] == "grpo" else rloo
    timing = time_training_loop(engine)   # run_online calls the loop
    if args.get("sampler") == "generate":  # the ablation: transformers' generate instead of our decoding loop
        import vietnamese_ai.models.sampling as sampling

        def refuse(*a, **k):
            raise NotImplementedError("benchmark: model.generate requested")

        sampling._decode_loop = refuse
    config_class = recipe.GRPOConfig if args["method"] == "grpo" else recipe.RLOOConfig
    extra = {"loss_type": "dapo", "scale_rewards": "group"} if args["method"] == "grpo" else {}
    config = config_class(
        model_name_or_path=args["model"], dataset=args["data"], reward=f"python:{args['reward_file']}:token_parity",
        output_dir=args["output_dir"], overwrite_output_dir=True, num_generations=args["num_generations"],
        per_device_train_batch_size=args["batch_size"], gradient_accumulation_steps=args["accumulation"],
        max_completion_length=args["max_completion_length"], learning_rate=args["lr"], max_steps=args["steps"],
        beta=args["beta"], temperature=1.0, logging_steps=1, save_steps=0, seed=args.get("seed", 0), disable_tqdm=True,
        lr_scheduler_type="linear", max_grad_norm=1.0, log_completions=False, prefix_sharing=args.get("prefix_sharing", True),
        packing=args.get("packing", True), prompt_cache=args.get("prompt_cache", True), dtype="float32", **extra)
    start = time.perf_counter()
    result = recipe.__dict__[f"run_{args['method']}"](config)
    seconds = time.perf_counter() - start
    phases = {k: sum(r.get(f"time/{k}", 0.0) for r in result.history) for k in ("generation", "scoring", "logps")}
    print(json.dumps({"rewards": result.series("reward"), "losses": result.series("loss"),
                      "train_seconds": timing["seconds"], "recipe_seconds": seconds, "steps": result.global_step,
                      "phases": phases, "step_seconds": step_seconds(ends), **peak_memory_mib()}))


if __name__ == "__main__":
    main()
