"""vietnamese-ai PPO on the PPO benchmark workload; prints one JSON line."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import peak_memory_mib, time_training_loop  # noqa: E402


def main() -> None:
    args = json.loads(sys.argv[1])
    import torch

    from vietnamese_ai.recipes import ppo
    from vietnamese_ai.recipes.online import engine

    torch.set_num_threads(args["threads"])
    timing = time_training_loop(engine)   # run_online calls the loop
    # The whole rollout is one mini-batch, accumulated over micro-batches, as the TRL side runs it.
    rollout, micro = args["batch_size"], args["micro_batch_size"]
    config = ppo.PPOConfig(
        model_name_or_path=args["model"], dataset=args["data"], reward=f"reward_model:{args['reward_model']}",
        output_dir=args["output_dir"], overwrite_output_dir=True, batch_size=rollout, mini_batch_size=rollout,
        gradient_accumulation_steps=rollout // micro, ppo_epochs=args["ppo_epochs"],
        max_completion_length=args["max_completion_length"], learning_rate=args["lr"],
        max_steps=args["rollouts"] * args["ppo_epochs"], kl_coef=args["kl_coef"], temperature=1.0,
        logging_steps=args["ppo_epochs"], save_steps=0, seed=args["seed"], disable_tqdm=True,
        lr_scheduler_type="linear", log_completions=False, prompt_cache=args.get("prompt_cache", True),
        prefix_sharing=args.get("prefix_sharing", True), vf_coef=args.get("vf_coef", 0.1), dtype="float32",
        value_model_name_or_path=args["reward_model"] if args.get("value_model") else None,
        max_grad_norm=args.get("max_grad_norm", 1.0))
    start = time.perf_counter()
    result = ppo.run_ppo(config)
    seconds = time.perf_counter() - start
    history = [r for r in result.history if "reward" in r]
    # one logged record per rollout, so each record's phase times are that rollout's
    phases = {k: sum(r.get(f"time/{k}", 0.0) for r in history) for k in ("generation", "scoring", "logps")}
    print(json.dumps({"rewards": [r["reward"] for r in history], "kl": [r["objective/kl"] for r in history],
                      "train_seconds": timing["seconds"], "recipe_seconds": seconds, "rollouts": len(history),
                      "phases": phases, **peak_memory_mib()}))


if __name__ == "__main__":
    main()
