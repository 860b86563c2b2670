"""SFT: vietnamese-ai against TRL's SFTTrainer on the same tiny model and data.

    python benchmarks/sft_vs_trl.py [--examples 512] [--threads N]

Workload: prompt-completion records whose prompts are about half the tokens. Prompt and completion
lengths are log-normal (median 30 words, sigma 0.8, 3 to 300 words), the long tail of chat data;
`--lengths uniform` draws them uniformly from 5 to 60 words instead. The model is a Qwen2-architecture
model (hidden 256, 4 layers, vocabulary 4096) built on the spot. Both sides train in fp32 with the same batch size, learning rate, schedule
and clipping; TRL's own defaults that would change the work (gradient checkpointing, bf16 autocast)
are switched off so that the same computation is timed.

It prints:
  1. loss parity: learning_rate=0, one step over the whole data set: the two logged losses and
     their difference (target <= 1e-4);
  2. speed: tokens/s of the training loop, the ratio to TRL, whole-process time, peak memory.
TRL is installed in benchmarks/.venv-trl on first use; it is not a dependency of vietnamese-ai.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    WORK, build_model, ensure_trl_venv, log, median_run, run_driver, sentence, table, word_count, write_jsonl,
)


def workload(n: int, lengths: str, seed: int = 0) -> tuple[str, str]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        # The prompt ends on punctuation and the completion starts with a space, so tokens cannot merge
        # across the boundary and joint and separate tokenisation agree (TRL tokenises jointly).
        prompt = f"Câu hỏi {i}: {sentence(rng, word_count(rng, lengths))}?"
        rows.append({"prompt": prompt, "completion": " " + sentence(rng, word_count(rng, lengths)) + "."})
    os.makedirs(WORK, exist_ok=True)
    data = write_jsonl(os.path.join(WORK, f"sft_{n}_{lengths}.jsonl"), rows)
    model = build_model(os.path.join(WORK, "model-h256-l4"), [r["prompt"] + r["completion"] for r in rows])
    return model, data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--lengths", choices=("lognormal", "uniform"), default="lognormal")
    parser.add_argument("--repeats", type=int, default=3, help="speed runs per configuration; the median is shown")
    args = parser.parse_args()
    model, data = workload(args.examples, args.lengths)
    trl_python = ensure_trl_venv()
    common = {"model": model, "data": data, "max_length": 1024, "threads": args.threads}

    log("loss parity (learning_rate=0, one step over the whole data set)")
    parity = {"lr": 0.0, "batch_size": args.examples, "max_steps": 1, "logging_steps": 1, **common}
    ours0 = run_driver(sys.executable, "ours_sft.py", {**parity, "output_dir": os.path.join(WORK, "ours-parity")})
    trl0 = run_driver(trl_python, "trl_sft.py", {**parity, "output_dir": os.path.join(WORK, "trl-parity")})
    diff = abs(ours0["losses"][0] - trl0["losses"][0])

    log("speed (one epoch)")
    speed = {"lr": 1e-4, "batch_size": args.batch_size, "epochs": 1, "logging_steps": 8, **common}
    configs = {
        "vietnamese-ai (packed, default)": (sys.executable, "ours_sft.py", {}),
        "vietnamese-ai (packing=false)": (sys.executable, "ours_sft.py", {"packing": False}),
        "TRL SFTTrainer": (trl_python, "trl_sft.py", {}),
        "TRL SFTTrainer padding_free": (trl_python, "trl_sft.py", {"padding_free": True}),
    }
    runs = {name: median_run(python, driver, {**speed, **extra, "output_dir": os.path.join(WORK, f"sft-{i}")}, args.repeats)
            for i, (name, (python, driver, extra)) in enumerate(configs.items())}
    base = runs["TRL SFTTrainer"]["tokens"] / runs["TRL SFTTrainer"]["train_seconds"]
    rows = []
    for name, r in runs.items():
        tps = r["tokens"] / r["train_seconds"]
        rows.append((name, f"{tps:,.0f}", f"{tps / base:.2f}x", f"{r['train_seconds']:.1f}", f"{r['process_seconds']:.1f}",
                     f"{r.get('peak_gpu_mib', r['peak_rss_mib']):,.0f}", f"{r['losses'][-1]:.4f}"))
    print(f"\nSFT, {args.examples} examples ({args.lengths} lengths), batch {args.batch_size}, 1 epoch, "
          f"{args.threads} CPU threads, median of {args.repeats}\n")
    print(f"loss parity at lr=0: ours {ours0['losses'][0]:.6f}, TRL {trl0['losses'][0]:.6f}, |diff| = {diff:.2e}\n")
    print(table(rows, ("run", "tokens/s", "vs TRL", "train s", "process s", "peak MiB", "last loss")))


if __name__ == "__main__":
    main()
