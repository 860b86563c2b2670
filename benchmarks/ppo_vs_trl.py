"""PPO: vietnamese-ai's against TRL 0.28's experimental PPOTrainer (TRL 1.x has removed PPO).

    python benchmarks/ppo_vs_trl.py [--rollouts 10] [--repeats 3]

Same tiny Qwen2-architecture model (hidden 256, 4 layers) as policy and reference, the same reward
model (that model with a seeded scalar head of std 0.2: a sequence classifier, which TRL requires), the same 64
chat prompts, and the same settings: 32 completions per rollout, trained as one mini-batch accumulated over 4 micro-batches of 8,
4 PPO epochs (TRL's default), up to 64 new tokens, temperature 1, kl_coef 0.05 (k1), learning rate
1e-4 with linear decay. (TRL's PPOTrainer steps its optimizer once per gradient_accumulation_steps
micro-batches, so one optimizer step per mini-batch means one mini-batch per rollout.) Each run is a
separate process, timed over the training call.

Ours runs twice: with its default value head on the policy (read in the same forward pass as the
log-probs), and with a separate value model started from the reward model, as TRL's is (TRL keeps
four models: policy, reference, reward, value). Both sides score the token ids they sampled, a
finished completion at its EOS and one cut at max_completion_length at its last sampled token (our
default reward_cut_completions=as_sampled).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import WORK, build_model, ensure_trl_venv, log, median_run, sentence, table, write_jsonl  # noqa: E402

PEER = "0.28.0"


def workload(n: int = 64, words: tuple[int, int] = (20, 60), seed: int = 0) -> tuple[str, str, str]:
    rng = random.Random(seed)
    rows = [{"prompt": [{"role": "user", "content": f"{sentence(rng, rng.randint(*words))}?"}]} for _ in range(n)]
    os.makedirs(WORK, exist_ok=True)
    data = write_jsonl(os.path.join(WORK, f"ppo_prompts_{n}.jsonl"), rows)
    corpus = [r["prompt"][0]["content"] for r in rows] + [sentence(rng, 30) for _ in range(200)]
    policy = build_model(os.path.join(WORK, "model-h256-l4"), corpus)
    checkpoint = os.path.join(WORK, "model-h256-l4-rm-ppo")
    if not os.path.isfile(os.path.join(checkpoint, "config.json")):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1)
        # A head ten times the usual initial scale: scores spread over a few units, so that the reward,
        # not the KL penalty, dominates what the policy learns in a few rollouts.
        torch.nn.init.normal_(model.score.weight, std=0.2)
        model.config.pad_token_id = AutoTokenizer.from_pretrained(policy).pad_token_id
        model.save_pretrained(checkpoint)
        AutoTokenizer.from_pretrained(policy).save_pretrained(checkpoint)
    return policy, checkpoint, data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollouts", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--gain-seeds", type=int, default=0,
                        help="instead of timing: the score gain of each side over this many seeds")
    parser.add_argument("--sides", default="head,model,trl",
                        help="which runs: head (ours, value head), model (ours, value model), trl")
    parser.add_argument("--max-grad-norm", type=float, default=1.0,
                        help="our gradient clipping (0: none, as TRL's PPO loop)")
    args = parser.parse_args()
    model, reward_model, data = workload()
    trl = ensure_trl_venv(PEER)
    common = {"model": model, "reward_model": reward_model, "data": data, "batch_size": 32, "micro_batch_size": 8,
              "ppo_epochs": 4, "max_completion_length": 64, "lr": args.lr, "kl_coef": 0.05, "rollouts": args.rollouts,
              "threads": args.threads, "seed": 0, "max_grad_norm": args.max_grad_norm}
    if args.gain_seeds:
        return score_gains(common, trl, args.gain_seeds, args.sides.split(","))
    configs = {name: (python, driver, extra) for side, name, python, driver, extra in sides(trl)
               if side in args.sides.split(",")}
    runs = {}
    for i, (name, (python, driver, extra)) in enumerate(configs.items()):
        log(f"ppo: {name.strip()}")
        runs[name] = median_run(python, driver, {**common, **extra, "output_dir": os.path.join(WORK, f"ppo-{i}")},
                                args.repeats)
        if "optimizer_steps" in runs[name]:   # both sides must take ppo_epochs steps per rollout
            log(f"ppo: {name.strip()}: {runs[name]['optimizer_steps']} optimizer steps")
    base = runs[f"TRL {PEER} PPOTrainer"]
    rows = []
    for name, r in runs.items():
        phases = r["phases"]
        per = r["train_seconds"] / r["rollouts"]
        rest = r["train_seconds"] - sum(phases.values())
        rows.append((name, f"{per:.2f}", f"{base['train_seconds'] / r['train_seconds']:.2f}x",
                     f"{phases.get('generation', 0) / r['rollouts']:.2f}", f"{phases.get('scoring', 0) / r['rollouts']:.2f}",
                     f"{phases.get('logps', 0) / r['rollouts']:.2f}", f"{rest / r['rollouts']:.2f}",
                     f"{r.get('peak_gpu_mib', r['peak_rss_mib']):,.0f}",
                     f"{r['rewards'][0]:+.3f} -> {statistics.fmean(r['rewards'][-3:]):+.3f}",
                     f"{statistics.fmean(r['kl'][-3:]):.3f}"))
    print(f"\nPPO: {args.rollouts} rollouts of 32 completions (micro-batches of 8, 4 epochs of one optimizer step), "
          f"up to 64 tokens, lr {args.lr:g}, "
          f"{args.threads} CPU threads, median of {args.repeats} by training time\n")
    print(table(rows, ("run", "s/rollout", "vs TRL", "sampling s", "scoring s", "rollout passes s", "training s",
                       "peak MiB", "score first -> last 3", "KL last 3")))


def sides(trl: str) -> list[tuple[str, str, str, str, dict]]:
    return [("head", "vietnamese-ai, value head", sys.executable, "ours_ppo.py", {}),
            ("model", "vietnamese-ai, value model", sys.executable, "ours_ppo.py", {"value_model": True}),
            ("trl", f"TRL {PEER} PPOTrainer", trl, "trl_ppo.py", {})]


def score_gains(common: dict, trl: str, seeds: int, chosen: list[str]) -> None:
    """One run per seed and side: the mean score of the last three rollouts minus the first's."""
    rows = []
    for side, name, python, driver, extra in sides(trl):
        if side not in chosen:
            continue
        gains, kls = [], []
        for seed in range(seeds):
            log(f"ppo: {name} seed {seed}")
            r = median_run(python, driver, {**common, **extra, "seed": seed, "output_dir": os.path.join(WORK, "ppo-gain")}, 1)
            if "optimizer_steps" in r:
                log(f"ppo: {name} seed {seed}: {r['optimizer_steps']} optimizer steps")
            gains.append(statistics.fmean(r["rewards"][-3:]) - r["rewards"][0])
            kls.append(statistics.fmean(r["kl"][-3:]))
        rows.append((name, " ".join(f"{g:+.3f}" for g in gains), f"{statistics.fmean(gains):+.3f}",
                     f"{statistics.stdev(gains):.3f}" if seeds > 1 else "-", f"{statistics.fmean(kls):.2f}"))
    print(f"\nPPO: score gain (last 3 rollouts minus first) over seeds 0..{seeds - 1}, {common['rollouts']} rollouts\n")
    print(table(rows, ("run", "per seed", "mean", "std", "KL last 3, mean")))


if __name__ == "__main__":
    main()
