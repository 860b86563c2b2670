"""Does active sampling in `feedback label` buy a better DPO model for the same labelling budget?

    python benchmarks/active_sampling.py [--seeds 0 1 2] [--budget-fraction 0.5] [--gap-control] [--dpo-epochs N]

On the alignment demo's data (vietnamese_ai/demo/demo.yaml): its stages corpus -> init -> base -> sft ->
candidates run once, with the demo's own settings, into benchmarks/_work/active/demo (skipped when done
and unchanged, as a pipeline re-run skips them). Then the candidates are labelled by the demo's
feedback settings (scorer=constitution, min_margin=0.15) with the same label_budget (a fraction of the
pairs there are, half by default) under each active_sampling: none (the first pairs by prompt index:
the same budget, no choice), variance and disagreement. For every seed, each pair set trains a DPO
model with the demo's dpo stage settings (seed = the seed), and one `evaluate` run with the demo's
eval_dpo settings (seed = the seed) samples the SFT model and the DPO models on the held-out prompts.
Evaluating them in one run is the same as one run per DPO model: every model samples with the same
seeds, and each is compared with the first (SFT) only.

--gap-control adds a control that is no toolkit option: the budget's pairs with the largest score gap.
A prompt's score variance grows with its best-worst gap, so 'variance' may win by picking larger
margins rather than contested prompts; the control tells the two apart.

Per variant: the held-out score gain (DPO minus SFT mean constitution score), the change in toxic rate
(rules) and the win rate of DPO over SFT, mean and sample std over seeds; then active minus none,
paired by seed. Everything lands in benchmarks/_work/active/results.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from vietnamese_ai.demo.run import DEMO  # noqa: E402
from vietnamese_ai.pipeline import load_pipeline  # noqa: E402
from vietnamese_ai.pipeline.run import execute  # noqa: E402
from vietnamese_ai.pipeline.spec import validate  # noqa: E402
from vietnamese_ai.recipes.commands import METHODS  # noqa: E402
from vietnamese_ai.recipes.common import quiet_transformers  # noqa: E402

PREP = ("corpus", "init", "base", "sft", "candidates")   # the demo stages the comparison needs
METRICS = (("gain", "score gain"), ("toxic", "toxic rate change"), ("win", "win rate"))


def log(message: str) -> None:
    print(f"[active] {message}", file=sys.stderr, flush=True)


def run_command(command: str, values: dict) -> object:
    """A toolkit command from Python: the same config and recipe function as the CLI and pipelines."""
    module, _, run_name, _ = METHODS[command]
    config = validate(f"benchmark {command}", command, values)
    return getattr(importlib.import_module(module), run_name)(config)


def count_lines(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def prompts_of(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.dumps(json.loads(line)["prompt"], ensure_ascii=False) for line in f if line.strip()]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def record_changes(per_seed: dict, directory: str, variants: list[str]) -> None:
    """Append each variant's change against the SFT model (score gain, toxic-rate change, win rate) from
    the evaluation in `directory` to `per_seed[variant]`."""
    with open(os.path.join(directory, "eval.json"), encoding="utf-8") as f:
        report = json.load(f)
    before = report["models"]["sft"]
    for variant in variants:
        after = report["models"][variant]
        per_seed[variant]["gain"].append(after["score_mean"] - before["score_mean"])
        per_seed[variant]["toxic"].append(after["toxic_rate"] - before["toxic_rate"])
        per_seed[variant]["win"].append(report["pairs"][f"{variant}_vs_sft"]["win_rate"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/active_sampling.py")
    parser.add_argument("--out", default=os.path.join("benchmarks", "_work", "active"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--measures", nargs="+", default=["variance", "disagreement"])
    parser.add_argument("--budget-fraction", type=float, default=0.5, help="label_budget = this share of the pairs")
    parser.add_argument("--dpo-epochs", type=float, default=None, help="override the demo's dpo num_train_epochs")
    parser.add_argument("--gap-control", action="store_true",
                        help="also train on the budget's largest-gap pairs (a control for 'variance')")
    parser.add_argument("--eval-samples", type=int, default=None, help="override the demo's eval_dpo samples")
    args = parser.parse_args(argv)
    os.chdir(ROOT)   # the demo's paths are relative, and a pipeline re-run skips a stage only if its keys match
    quiet_transformers()
    started = time.perf_counter()

    pipeline = load_pipeline(DEMO, [f"output_dir={os.path.join(args.out, 'demo')}"])
    for name in PREP:
        # Our own marker rather than the pipeline's state: that state re-runs every stage when the demo's
        # code changes (its python stages' sources are inputs), and this comparison needs one fixed SFT model.
        stage = pipeline.stage(name)
        marker = os.path.join(stage.directory, ".active_sampling_done")
        if not os.path.exists(marker):
            t = time.perf_counter()
            execute(stage)
            with open(marker, "w", encoding="utf-8") as f:
                f.write(f"{time.perf_counter() - t:.1f}\n")
            log(f"demo stage {name} in {time.perf_counter() - t:.0f}s")
    prep_seconds = time.perf_counter() - started
    log(f"demo stages {', '.join(PREP)} ready in {prep_seconds:.0f}s")

    feedback, dpo, evaluate = (dict(pipeline.stage(name).values) for name in ("feedback", "dpo", "eval_dpo"))
    sft = pipeline.stage("sft").output("final")
    labels = os.path.join(args.out, "labels")
    os.makedirs(labels, exist_ok=True)
    everything = os.path.join(labels, "all.jsonl")
    run_command("feedback label", {**feedback, "output": everything, "unpaired_output": None})
    available = count_lines(everything)
    budget = max(1, round(args.budget_fraction * available))
    variants = ["none", *args.measures]
    pair_files = {}
    for variant in variants:
        pair_files[variant] = os.path.join(labels, f"{variant}.jsonl")
        result = run_command("feedback label", {**feedback, "output": pair_files[variant], "unpaired_output": None,
                                                "active_sampling": variant, "label_budget": budget})
        log(f"label {variant}: {result.summary()}")
    if args.gap_control:
        # A control that is not a toolkit option: the budget's pairs with the largest score gap (ties by
        # prompt index). The variance of a prompt's scores grows with its best-worst gap, so a gain of
        # 'variance' may come from larger margins rather than from contested prompts; this separates them.
        with open(everything, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        pair_files["gap"] = os.path.join(labels, "gap.jsonl")
        with open(pair_files["gap"], "w", encoding="utf-8") as f:
            for row in sorted(rows, key=lambda r: -r["score_gap"])[:budget]:   # stable: ties keep index order
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        variants.append("gap")
    chosen = {v: set(prompts_of(pair_files[v])) for v in variants}
    overlap = {v: len(chosen[v] & chosen["none"]) for v in variants[1:]}
    gaps = {v: statistics.fmean(json.loads(line)["score_gap"] for line in open(pair_files[v], encoding="utf-8"))
            for v in variants}

    per_seed: dict[str, dict[str, list[float]]] = {v: {k: [] for k, _ in METRICS} for v in variants}
    for seed in args.seeds:
        finals = []
        for variant in variants:
            directory = os.path.join(args.out, f"seed{seed}", f"dpo_{variant}")
            values = {**dpo, "dataset": pair_files[variant], "seed": seed, "output_dir": directory,
                      "overwrite_output_dir": True}
            if args.dpo_epochs is not None:
                values["num_train_epochs"] = args.dpo_epochs
            finals.append(os.path.join(directory, "final"))
            key = json.dumps(values, sort_keys=True) + open(pair_files[variant], encoding="utf-8").read()
            marker = os.path.join(directory, ".active_sampling_done")
            if os.path.exists(marker) and open(marker, encoding="utf-8").read() == key:
                log(f"seed {seed}: dpo on {variant} pairs done before with these keys and pairs")
                continue
            t = time.perf_counter()
            run_command("dpo", values)
            with open(marker, "w", encoding="utf-8") as f:
                f.write(key)
            log(f"seed {seed}: dpo on {variant} pairs in {time.perf_counter() - t:.0f}s")
        directory = os.path.join(args.out, f"seed{seed}", "eval")
        values = {**evaluate, "models": [sft, *finals], "names": ["sft", *variants], "seed": seed,
                  "output_dir": directory, "suites": []}   # the held-out prompts only: no safety suites
        if args.eval_samples is not None:
            values["samples"] = args.eval_samples
        t = time.perf_counter()
        run_command("evaluate", values)
        log(f"seed {seed}: evaluate in {time.perf_counter() - t:.0f}s")
        record_changes(per_seed, directory, variants)

    seconds = time.perf_counter() - started
    results = {"available_pairs": available, "label_budget": budget, "seeds": args.seeds,
               "overlap_with_none": overlap, "mean_score_gap": gaps, "per_seed": per_seed, "prep_seconds": round(prep_seconds, 1),
               "seconds": round(seconds, 1), "dpo_epochs": args.dpo_epochs or dpo["num_train_epochs"],
               "eval_samples": args.eval_samples or evaluate["samples"]}
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(table(results, variants))
    return 0


def table(results: dict, variants: list[str]) -> str:
    per_seed, n = results["per_seed"], len(results["seeds"])
    lines = [f"label_budget {results['label_budget']} of {results['available_pairs']} pairs; seeds "
             f"{', '.join(map(str, results['seeds']))}; DPO epochs {results['dpo_epochs']}; eval samples "
             f"{results['eval_samples']} per held-out prompt; mean ± sample std over {n} seeds",
             "",
             f"| active_sampling | prompts shared with none | mean gap | {' | '.join(name for _, name in METRICS)} |",
             "|---|---|---|" + "---|" * len(METRICS)]
    for variant in variants:
        shared = "—" if variant == "none" else f"{results['overlap_with_none'][variant]}/{results['label_budget']}"
        cells = ["{:+.4f} ± {:.4f}".format(*mean_std(per_seed[variant][k])) if k != "win" else
                 "{:.3f} ± {:.3f}".format(*mean_std(per_seed[variant][k])) for k, _ in METRICS]
        lines.append(f"| {variant} | {shared} | {results['mean_score_gap'][variant]:.3f} | {' | '.join(cells)} |")
    contrasts = [(v, "none") for v in variants[1:]] + ([("variance", "gap")] if {"variance", "gap"} <= set(variants) else [])
    for variant, baseline in contrasts:
        diffs = {k: [a - b for a, b in zip(per_seed[variant][k], per_seed[baseline][k])] for k, _ in METRICS}
        cells = ["{:+.4f} ± {:.4f}".format(*mean_std(diffs[k])) for k, _ in METRICS]
        lines.append(f"| {variant} − {baseline} (paired by seed) | | | {' | '.join(cells)} |")
    lines.append("")
    lines.append(f"{results['seconds']:.0f}s in all ({results['prep_seconds']:.0f}s of it the demo stages, cached "
                 f"after the first run)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
