"""TRL 0.28's experimental PPOTrainer on the PPO benchmark workload; prints one JSON line.

TRL's PPO takes a reward model and a separate value model (both sequence classifiers; the value model
starts as a copy of the reward model, as TRL's examples do). Phases are timed by wrapping the module's
`batch_generation` (sampling) and `get_reward` (scoring, and the value model's rollout pass, which
TRL computes with the same function); training is the rest of trainer.train().
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import peak_memory_mib  # noqa: E402


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
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    import trl.experimental.ppo.ppo_trainer as module
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    torch.set_num_threads(args["threads"])
    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    policy = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(args["reward_model"], num_labels=1, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(args["reward_model"], num_labels=1, dtype=torch.float32)
    for model in (policy, reference, reward, value):   # ours switches dropout off too
        model.config.attention_dropout = 0.0
    dataset = load_dataset("json", data_files=args["data"], split="train")
    dataset = dataset.map(lambda row: {"input_ids": tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True,
                                                                                 tokenize=True, return_dict=False)},
                          remove_columns=dataset.column_names)
    # TRL's rollout is per_device_train_batch_size x gradient_accumulation_steps completions, and its
    # optimizer steps every gradient_accumulation_steps micro-batches: one mini-batch (the whole
    # rollout) per optimizer step, num_ppo_epochs steps per rollout.
    rollout, micro = args["batch_size"], args["micro_batch_size"]
    config = PPOConfig(output_dir=args["output_dir"], per_device_train_batch_size=micro,
                       gradient_accumulation_steps=rollout // micro, num_mini_batches=1,
                       num_ppo_epochs=args["ppo_epochs"], learning_rate=args["lr"],
                       total_episodes=rollout * args["rollouts"], response_length=args["max_completion_length"],
                       stop_token="eos", temperature=1.0, kl_coef=args["kl_coef"], local_rollout_forward_batch_size=rollout,
                       num_sample_generations=0, report_to="none", save_strategy="no", logging_steps=1,
                       seed=args["seed"], use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False,
                       lr_scheduler_type="linear", disable_tqdm=True, dataloader_num_workers=0)
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=reference, reward_model=reward,
                         value_model=value, train_dataset=dataset)
    # accelerate forces a gradient sync (and so an optimizer step) on every micro-batch while its
    # dataloader sits at the end of an epoch, which TRL's PPO loop leaves it doing during every second
    # rollout here (64 prompts, 32 per rollout): 16 steps instead of 4. Off, so that both sides take
    # num_ppo_epochs steps per rollout; the count is printed to check.
    trainer.accelerator.gradient_state.plugin_kwargs["sync_with_dataloader"] = False
    inner = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    steps = {"n": 0}
    step = inner.step

    def counted_step(*a, **k):
        steps["n"] += 1
        return step(*a, **k)

    inner.step = counted_step
    phases: dict = {}
    timed(module, "batch_generation", phases, "generation")
    timed(module, "get_reward", phases, "scoring")
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    history = [h for h in trainer.state.log_history if "objective/scores" in h]
    print(json.dumps({"rewards": [h["objective/scores"] for h in history], "kl": [h["objective/kl"] for h in history],
                      "train_seconds": seconds, "rollouts": len(history), "phases": phases,
                      "optimizer_steps": steps["n"], **peak_memory_mib()}))


if __name__ == "__main__":
    main()
