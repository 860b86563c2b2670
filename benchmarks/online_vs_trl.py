"""Online RL: vietnamese-ai's GRPO and RLOO against TRL's GRPOTrainer and RLOOTrainer.

    python benchmarks/online_vs_trl.py [--method grpo|rloo|both] [--steps 12] [--repeats 3]

Same tiny Qwen2-architecture model (hidden 256, 4 layers), same 64 chat prompts, same Python reward
(benchmarks/rewards.py: a synthetic, learnable target), the same G, completion length, batch, steps,
learning rate and beta=0 (RLOO: beta=0 too, so that neither side loads a reference). Each run is a
separate process. Reported: wall-clock per optimizer step of the training call (rollouts included),
its phases (sampling, scoring, log-prob passes, training), peak memory, and the reward curve: the
mean reward of the first and of the last three steps.

Our techniques are switched off one at a time: the prompt cache (each prompt computed once, its G
completions run on its KV cache) replaced by branches of one masked row; no prompt sharing at all
(each completion recomputes its prompt, as TRL does); and our decoding loop, replaced by transformers'
generate with the same seeded token choice. Both sides compute logits only at completion positions.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HERE, WORK, build_model, ensure_trl_venv, log, median_run, sentence, table, write_jsonl  # noqa: E402


def workload(n: int = 64, words: tuple[int, int] = (120, 240), seed: int = 0) -> tuple[str, str]:
    """Chat prompts: a system message of instructions and a question, `words` long in all."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = rng.randint(*words)
        rows.append({"prompt": [{"role": "system", "content": sentence(rng, length * 3 // 4)},
                                {"role": "user", "content": f"{sentence(rng, length - length * 3 // 4)}?"}]})
    os.makedirs(WORK, exist_ok=True)
    data = write_jsonl(os.path.join(WORK, f"online_prompts_{n}_{words[0]}-{words[1]}.jsonl"), rows)
    corpus = [m["content"] for r in rows for m in r["prompt"]] + [sentence(rng, 30) for _ in range(200)]
    return build_model(os.path.join(WORK, "model-h256-l4"), corpus), data


def curve(rewards: list[float]) -> str:
    return f"{rewards[0]:.3f} -> {statistics.fmean(rewards[-3:]):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="both", choices=("grpo", "rloo", "both"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--prompt-words", default="120-240", help="prompt length range in words (short: 8-40)")
    parser.add_argument("--gain-seeds", type=int, default=0,
                        help="instead of timing: the reward gain of ours and TRL's default over this many seeds")
    args = parser.parse_args()
    low, high = (int(x) for x in args.prompt_words.split("-"))
    model, data = workload(words=(low, high))
    trl = ensure_trl_venv()
    common = {"model": model, "data": data, "reward_file": os.path.join(HERE, "rewards.py"), "num_generations": 8,
              "batch_size": 16, "accumulation": 2, "max_completion_length": 64, "lr": 1e-3, "steps": args.steps,
              "beta": 0.0, "threads": args.threads, "seed": 0}
    methods = ("grpo", "rloo") if args.method == "both" else (args.method,)
    if args.gain_seeds:
        return reward_gains(methods, common, trl, args.gain_seeds)
    for method in methods:
        configs = {
            "vietnamese-ai (default: prompt cache)": (sys.executable, "ours_online.py", {}),
            "  prompts shared as branches instead": (sys.executable, "ours_online.py", {"prompt_cache": False}),
            "  prompts not shared": (sys.executable, "ours_online.py", {"prefix_sharing": False}),
            "  with transformers' generate": (sys.executable, "ours_online.py", {"sampler": "generate"}),
            f"TRL {method.upper()}Trainer": (trl, "trl_online.py", {}),
        }
        runs = {}
        for i, (name, (python, driver, extra)) in enumerate(configs.items()):
            log(f"{method}: {name.strip()}")
            runs[name] = median_run(python, driver, {**common, **extra, "method": method,
                                                     "output_dir": os.path.join(WORK, f"{method}-{i}")}, args.repeats)
        base = runs[f"TRL {method.upper()}Trainer"]
        rows = []
        for name, r in runs.items():
            per_step = r["train_seconds"] / r["steps"]
            phases = r["phases"]
            training = r["train_seconds"] - sum(phases.values())
            rows.append((name, f"{per_step:.2f}", f"{base['train_seconds'] / r['train_seconds']:.2f}x",
                         f"{phases['generation'] / r['steps']:.2f}", f"{phases['scoring'] / r['steps']:.3f}",
                         f"{phases['logps'] / r['steps']:.2f}", f"{training / r['steps']:.2f}",
                         f"{r.get('peak_gpu_mib', r['peak_rss_mib']):,.0f}", curve(r["rewards"])))
        print(f"\n{method.upper()}: {args.steps} steps of 32 completions (4 prompts x G=8, batch 16 x accumulation 2), "
              f"up to 64 tokens each, {args.threads} CPU threads, median of {args.repeats} by training time\n")
        print(table(rows, ("run", "s/step", "vs TRL", "sampling s", "scoring s", "log-prob s", "training s", "peak MiB",
                           "reward first -> last 3")))


def reward_gains(methods: tuple[str, ...], common: dict, trl: str, seeds: int) -> None:
    """One run per seed and side. The gain is the mean reward of the last three steps minus the first
    step's; the two sides sample different completions from the same seed, so one seed's gap is noise."""
    for method in methods:
        rows = []
        for name, python, driver in (("vietnamese-ai", sys.executable, "ours_online.py"),
                                     (f"TRL {method.upper()}Trainer", trl, "trl_online.py")):
            gains = []
            for seed in range(seeds):
                log(f"{method}: {name} seed {seed}")
                r = median_run(python, driver, {**common, "method": method, "seed": seed,
                                                "output_dir": os.path.join(WORK, f"{method}-gain")}, 1)
                gains.append(statistics.fmean(r["rewards"][-3:]) - r["rewards"][0])
            rows.append((name, " ".join(f"{g:+.3f}" for g in gains), f"{statistics.fmean(gains):+.3f}",
                         f"{statistics.stdev(gains):.3f}" if seeds > 1 else "-"))
        print(f"\n{method.upper()}: reward gain (last 3 steps minus first) over seeds 0..{seeds - 1}\n")
        print(table(rows, ("run", "per seed", "mean", "std")))


if __name__ == "__main__":
    main()
