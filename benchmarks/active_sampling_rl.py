"""Does active sampling in online RL buy a better policy for the same number of steps?

    python benchmarks/active_sampling_rl.py [--seeds 0 1 2] [--steps 15]

On the alignment demo's data, from its SFT model (prepared by benchmarks/active_sampling.py into
benchmarks/_work/active/demo; run that first): GRPO on the demo's 379 training prompts, rewarded by the
default constitution's rules (the demo's feedback scorer), G = 4, 8 prompts per step, up to 48 new
tokens, for `--steps` optimizer steps: fewer than an epoch (47 steps), so the order of the prompts
decides which ones the budget is spent on. Once with a uniform shuffle (active_sampling=none) and once
with active_sampling=variance (the pass of the starting policy scores 4 completions of every prompt
first, which costs about one epoch of sampling and is not counted in the step budget). Then one
`evaluate` run per seed samples the SFT model and both GRPO models on the 66 held-out prompts (4
answers each, the demo's eval_dpo settings, seed = the seed). Reported per variant: the held-out score
gain over SFT, the change in toxic rate and the win rate, mean and sample std over seeds, and
variance minus none paired by seed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from active_sampling import DEMO, ROOT, log, mean_std, record_changes, run_command  # noqa: E402

from vietnamese_ai.pipeline import load_pipeline  # noqa: E402
from vietnamese_ai.recipes.common import quiet_transformers  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/active_sampling_rl.py")
    parser.add_argument("--out", default=os.path.join("benchmarks", "_work", "active"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    os.chdir(ROOT)
    quiet_transformers()
    pipeline = load_pipeline(DEMO, [f"output_dir={os.path.join(args.out, 'demo')}"])
    sft = pipeline.stage("sft").output("final")
    corpus = pipeline.stage("corpus").directory
    if not os.path.isfile(os.path.join(sft, "config.json")):
        raise SystemExit(f"no SFT model at {sft}: run benchmarks/active_sampling.py first")
    evaluate = dict(pipeline.stage("eval_dpo").values)
    variants = ("none", "variance")
    per_seed = {v: {"gain": [], "toxic": [], "win": []} for v in variants}
    started = time.perf_counter()
    for seed in args.seeds:
        finals = []
        for variant in variants:
            directory = os.path.join(args.out, f"rl_seed{seed}", f"grpo_{variant}")
            t = time.perf_counter()
            run_command("grpo", {"model_name_or_path": sft, "dataset": os.path.join(corpus, "train_prompts.jsonl"),
                                 "reward": "constitution", "num_generations": 4, "per_device_train_batch_size": 32,
                                 "max_completion_length": 48, "learning_rate": 2e-4, "beta": 0.0,
                                 "max_steps": args.steps, "logging_steps": 5, "save_steps": 0, "seed": seed,
                                 "disable_tqdm": True, "log_completions": False, "active_sampling": variant,
                                 "output_dir": directory, "overwrite_output_dir": True})
            finals.append(os.path.join(directory, "final"))
            log(f"seed {seed}: grpo {variant} in {time.perf_counter() - t:.0f}s")
        directory = os.path.join(args.out, f"rl_seed{seed}", "eval")
        run_command("evaluate", {**evaluate, "models": [sft, *finals], "names": ["sft", *variants], "seed": seed,
                                 "output_dir": directory, "suites": []})
        record_changes(per_seed, directory, variants)
    print(f"GRPO from the demo's SFT model, {args.steps} steps of 8 prompts x 4 completions, seeds {args.seeds} "
          f"({time.perf_counter() - started:.0f}s)")
    print(f"{'variant':<10}{'score gain':>22}{'toxic rate change':>22}{'win rate':>22}")
    for variant in variants:
        cells = "".join(f"{'%+.3f (std %.3f)' % mean_std(per_seed[variant][k]):>22}" for k in ("gain", "toxic", "win"))
        print(f"{variant:<10}{cells}")
    for key, label in (("gain", "score gain"), ("toxic", "toxic rate change"), ("win", "win rate")):
        diffs = [a - b for a, b in zip(per_seed["variance"][key], per_seed["none"][key])]
        print(f"variance - none, {label}: per seed {' '.join('%+.3f' % d for d in diffs)}, mean "
              f"{statistics.fmean(diffs):+.3f} (std {statistics.stdev(diffs) if len(diffs) > 1 else 0.0:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
