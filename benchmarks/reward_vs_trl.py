"""Reward models: vietnamese-ai against TRL's RewardTrainer on the same checkpoint and data.

    python benchmarks/reward_vs_trl.py [--pairs 256] [--repeats 3]

Workload: chosen/rejected records *without* a prompt field (the implicit prompt is their shared
prefix), log-normal lengths (median 30 words for the shared prefix and for each response). Both
sides start from the same sequence-classification checkpoint (the benchmark model with a saved,
seeded scalar head) and train in fp32 without gradient checkpointing.

It prints parity at learning_rate=0 (one step over the whole data set: loss and accuracy) and speed
over one epoch timed as whole processes, with our techniques switched off in turn.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import WORK, build_model, ensure_trl_venv, log, median_run, run_driver, sentence, table, word_count, write_jsonl  # noqa: E402


def workload(n: int, seed: int = 0) -> tuple[str, str]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prefix = f"Câu hỏi {i}: {sentence(rng, word_count(rng, 'lognormal'))}?"
        rows.append({"chosen": prefix + " " + sentence(rng, word_count(rng, "lognormal")) + ".",
                     "rejected": prefix + " " + sentence(rng, word_count(rng, "lognormal")) + "!"})
    os.makedirs(WORK, exist_ok=True)
    data = write_jsonl(os.path.join(WORK, f"reward_{n}.jsonl"), rows)
    policy = build_model(os.path.join(WORK, "model-h256-l4"), [r["chosen"] + r["rejected"] for r in rows])
    checkpoint = os.path.join(WORK, "model-h256-l4-rm")
    if not os.path.isfile(os.path.join(checkpoint, "config.json")):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1)
        model.config.pad_token_id = AutoTokenizer.from_pretrained(policy).pad_token_id
        model.save_pretrained(checkpoint)
        AutoTokenizer.from_pretrained(policy).save_pretrained(checkpoint)
    return checkpoint, data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    checkpoint, data = workload(args.pairs)
    trl = ensure_trl_venv()
    common = {"model": checkpoint, "data": data, "threads": args.threads}

    log("parity: learning_rate=0, one step over the whole data set")
    parity = {"lr": 0.0, "batch_size": args.pairs // 8, "accumulation": 8, "max_steps": 1, "logging_steps": 1, **common}
    ours = run_driver(sys.executable, "ours_reward.py", {**parity, "output_dir": os.path.join(WORK, "rm-parity")})["first"]
    theirs = run_driver(trl, "trl_reward.py", {**parity, "output_dir": os.path.join(WORK, "rm-parity-trl")})["first"]

    log("speed: one epoch, whole processes")
    speed = {"lr": 1e-5, "batch_size": args.batch_size, "epochs": 1, "logging_steps": 8, **common}
    configs = {
        "vietnamese-ai (default: shared prefix, packed)": (sys.executable, "ours_reward.py", {}),
        "  without prefix sharing": (sys.executable, "ours_reward.py", {"prefix_sharing": False}),
        "  without packing": (sys.executable, "ours_reward.py", {"packing": False}),
        "  neither": (sys.executable, "ours_reward.py", {"prefix_sharing": False, "packing": False}),
        "TRL RewardTrainer": (trl, "trl_reward.py", {}),
    }
    runs = {}
    for i, (name, (python, driver, extra)) in enumerate(configs.items()):
        log(f"  {name.strip()}")
        runs[name] = median_run(python, driver, {**speed, **extra, "output_dir": os.path.join(WORK, f"rm-{i}")},
                                args.repeats, key="process_seconds")
    base = runs["TRL RewardTrainer"]
    rows = [(name, f"{r['pairs'] / r['process_seconds']:.2f}", f"{base['process_seconds'] / r['process_seconds']:.2f}x",
             f"{r['process_seconds']:.1f}", f"{r['train_seconds']:.1f}", f"{r.get('peak_gpu_mib', r['peak_rss_mib']):,.0f}",
             f"{r['losses'][-1]:.4f}") for name, r in runs.items()]
    print(f"\nReward model, {args.pairs} pairs, batch {args.batch_size}, 1 epoch, {args.threads} CPU threads\n")
    print(f"parity at lr=0: loss ours {ours['loss']:.6f} / TRL {theirs['loss']:.6f} (|diff| {abs(ours['loss'] - theirs['loss']):.1e}); "
          f"accuracy ours {ours['accuracy']:.6f} / TRL {theirs['accuracy']:.6f}; "
          f"margin ours {ours['margin']:.6f} / TRL {theirs['margin']:.6f}\n")
    print(table(rows, ("run", "pairs/s (process)", "vs TRL", "process s", "train loop s", "peak MiB", "last loss")))


if __name__ == "__main__":
    main()
