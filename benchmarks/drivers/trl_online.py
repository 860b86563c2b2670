"""TRL's GRPOTrainer or RLOOTrainer on the benchmark workload; prints one JSON line.

Rollout phases are timed by wrapping the trainer's own methods: `_generate` (sampling),
`_calculate_rewards` (scoring) and `_generate_and_score_completions` (the whole rollout, which adds
the log-prob passes); training is the rest of trainer.train().
"""

import importlib.util
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import peak_memory_mib, step_clock, step_seconds  # noqa: E402


def timed(owner, name: str, totals: dict, key: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start

    setattr(owner, name, wrapper)


def main() -> None:
    args = json.loads(sys.argv[1])
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.get("threads", torch.get_num_threads()))
    ends = step_clock()
    spec = importlib.util.spec_from_file_location("bench_rewards", args["reward_file"])
    rewards = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rewards)
    if args["method"] == "grpo":
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer

        extra = {"loss_type": "dapo", "scale_rewards": "group"}
    else:
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer

        extra = {}
    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    dataset = load_dataset("json", data_files=args["data"], split="train")
    config = Config(output_dir=args["output_dir"], num_generations=args["num_generations"],
                    per_device_train_batch_size=args["batch_size"], gradient_accumulation_steps=args["accumulation"],
                    max_completion_length=args["max_completion_length"], learning_rate=args["lr"], max_steps=args["steps"],
                    beta=args["beta"], temperature=1.0, logging_steps=1, save_strategy="no", seed=args.get("seed", 0),
                    report_to="none", disable_tqdm=True, bf16=False, fp16=False, gradient_checkpointing=False,
                    lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0, use_cpu=not torch.cuda.is_available(),
                    dataloader_num_workers=0, **extra)
    trainer = Trainer(model=model, reward_funcs=[rewards.token_parity], args=config, train_dataset=dataset,
                      processing_class=tokenizer)
    phases: dict = {}
    timed(trainer, "_generate", phases, "generation")
    timed(trainer, "_calculate_rewards", phases, "scoring")
    timed(trainer, "_generate_and_score_completions", phases, "rollout")
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    history = [h for h in trainer.state.log_history if "reward" in h]
    phases["logps"] = phases.pop("rollout", 0.0) - phases.get("generation", 0.0) - phases.get("scoring", 0.0)
    print(json.dumps({"rewards": [h["reward"] for h in history], "losses": [h["loss"] for h in history if "loss" in h],
                      "train_seconds": seconds, "steps": trainer.state.global_step, "phases": phases,
                      "step_seconds": step_seconds(ends),
                      "completion_lengths": [h.get("completions/mean_length") for h in history], **peak_memory_mib()}))


if __name__ == "__main__":
    main()
