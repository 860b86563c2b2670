"""DPO: vietnamese-ai against TRL's DPOTrainer on the same tiny models and data.

    python benchmarks/dpo_vs_trl.py [--pairs 256] [--repeats 3] [--lengths lognormal|even]

Workload: prompt/chosen/rejected records with log-normal lengths (median 30 words each, sigma 0.8),
so the prompt is about half of each prompt+response sequence, as in chat data; or, with `--lengths
even`, evenly sized pairs (every prompt 30 words, each answer 30 to 60 words, uniform), where there is
little padding for packing to remove. The policy is a
Qwen2-architecture model (hidden 256, 4 layers, vocabulary 4096); the reference is a separate model
with the same tokenizer and re-initialised weights, so that rewards and margins are not trivially 0.

It prints:
  1. parity at learning_rate=0, one step over the whole data set against the separate reference:
     loss, rewards/* and logps/* of ours and TRL for sigmoid, hinge and sigmoid with
     label_smoothing=0.2. trl 1.16 dropped label smoothing from its sigmoid loss (it applies only
     to robust and EXO now), so cDPO is compared with trl 0.28.0, the last release whose sigmoid
     loss is cDPO; sigmoid and hinge are compared with both;
  2. speed over one epoch, timed as whole processes: pairs/s and peak memory, for our default and
     for each of our techniques switched off in turn, against TRL (default, and with its own
     precomputed reference log-probs).
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

TRL_OLD = "0.28.0"
METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
           "logps/chosen", "logps/rejected")


def workload(n: int, lengths: str = "lognormal", seed: int = 0) -> tuple[str, str, str]:
    rng = random.Random(seed)

    def words(part: str) -> int:
        if lengths == "even":
            return 30 if part == "prompt" else rng.randint(30, 60)
        return word_count(rng, "lognormal")

    rows = [{"prompt": f"Câu hỏi {i}: {sentence(rng, words('prompt'))}?",
             "chosen": " " + sentence(rng, words("answer")) + ".",
             "rejected": " " + sentence(rng, words("answer")) + "."} for i in range(n)]
    os.makedirs(WORK, exist_ok=True)
    data = write_jsonl(os.path.join(WORK, f"dpo_{n}{'' if lengths == 'lognormal' else '_' + lengths}.jsonl"), rows)
    corpus = [r["prompt"] + r["chosen"] + r["rejected"] for r in rows]
    policy = build_model(os.path.join(WORK, "model-h256-l4"), corpus)
    reference = os.path.join(WORK, "model-h256-l4-ref")
    if not os.path.isfile(os.path.join(reference, "config.json")):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        import torch

        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_config(AutoModelForCausalLM.from_pretrained(policy).config)
        model.save_pretrained(reference)
        AutoTokenizer.from_pretrained(policy).save_pretrained(reference)
    return policy, reference, data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--lengths", choices=("lognormal", "even"), default="lognormal")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-parity", action="store_true")
    args = parser.parse_args()
    policy, reference, data = workload(args.pairs, args.lengths)
    trl_new, trl_old = ensure_trl_venv(), ensure_trl_venv(TRL_OLD)
    common = {"model": policy, "ref_model": reference, "data": data, "threads": args.threads, "beta": 0.1}

    if not args.skip_parity:
        log("parity: learning_rate=0, one step over the whole data set, separate reference model")
        # One step over the whole data set as 8 equal micro-batches (a single batch of 256 pairs does not fit
        # TRL's full-vocabulary logits in 24 GiB); with equal micro-batches the averaged metrics are the global means.
        parity = {"lr": 0.0, "batch_size": args.pairs // 8, "accumulation": 8, "max_steps": 1, "logging_steps": 1, **common}
        rows = []
        for name, extra, peers in (("sigmoid", {"loss_type": "sigmoid"}, (("trl 1.16", trl_new), (f"trl {TRL_OLD}", trl_old))),
                                   ("hinge", {"loss_type": "hinge"}, (("trl 1.16", trl_new), (f"trl {TRL_OLD}", trl_old))),
                                   ("sigmoid, label_smoothing=0.2", {"loss_type": "sigmoid", "label_smoothing": 0.2},
                                    ((f"trl {TRL_OLD}", trl_old),))):
            ours = run_driver(sys.executable, "ours_dpo.py", {**parity, **extra, "output_dir": os.path.join(WORK, "dpo-parity")})["first"]
            for peer, python in peers:
                theirs = run_driver(python, "trl_dpo.py", {**parity, **extra, "output_dir": os.path.join(WORK, "dpo-parity-trl")})["first"]
                worst = max(abs(ours[m] - theirs[m]) for m in METRICS)
                rows.append((name, peer) + tuple(f"{ours[m]:.6f} / {theirs[m]:.6f}" for m in METRICS) + (f"{worst:.1e}",))
        print("\nParity (ours / TRL)\n")
        print(table(rows, ("loss type", "against") + METRICS + ("max |diff|",)))

    log("speed: one epoch, whole processes")
    speed = {"lr": 1e-6, "batch_size": args.batch_size, "epochs": 1, "logging_steps": 8, "loss_type": "sigmoid", **common}
    configs = {
        "vietnamese-ai (default: shared prefix, packed, precomputed ref)": (sys.executable, "ours_dpo.py", {}),
        "  without prefix sharing": (sys.executable, "ours_dpo.py", {"prefix_sharing": False}),
        "  without packing": (sys.executable, "ours_dpo.py", {"packing": False}),
        "  without precomputed reference": (sys.executable, "ours_dpo.py", {"precompute": False}),
        "  none of the three": (sys.executable, "ours_dpo.py", {"prefix_sharing": False, "packing": False, "precompute": False}),
        "TRL DPOTrainer (default)": (trl_new, "trl_dpo.py", {}),
        "TRL DPOTrainer precompute_ref_log_probs": (trl_new, "trl_dpo.py", {"precompute": True}),
    }
    runs = {}
    for i, (name, (python, driver, extra)) in enumerate(configs.items()):
        log(f"  {name.strip()}")
        runs[name] = median_run(python, driver, {**speed, **extra, "output_dir": os.path.join(WORK, f"dpo-{i}")}, args.repeats,
                                key="process_seconds")
    base = runs["TRL DPOTrainer (default)"]
    rows = []
    for name, r in runs.items():
        rows.append((name, f"{r['pairs'] / r['process_seconds']:.2f}", f"{base['process_seconds'] / r['process_seconds']:.2f}x",
                     f"{r['process_seconds']:.1f}", f"{r['train_seconds']:.1f}",
                     f"{r.get('peak_gpu_mib', r['peak_rss_mib']):,.0f}", f"{r['losses'][-1]:.4f}"))
    print(f"\nDPO speed: {args.pairs} pairs ({args.lengths} lengths), batch {args.batch_size}, 1 epoch, {args.threads} CPU threads, "
          f"median of {args.repeats} by whole-process time\n")
    print(table(rows, ("run", "pairs/s (process)", "vs TRL", "process s", "train loop s", "peak MiB", "last loss")))


if __name__ == "__main__":
    main()
