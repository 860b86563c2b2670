"""The alignment demo: alignment without human labels, end to end, on a tiny bilingual model.

    python -m vietnamese_ai.demo [--out runs/demo] [--fast]

The demo is the pipeline file `demo.yaml` beside this module (every stage a toolkit command, or one
of the demo's own steps in `steps.py`):

1. corpus     a bilingual assistant corpus whose answers mix helpful ones with rude, toxic and
              evasive ones; some prompts are held out for evaluation and never trained on
2. init, base a byte-level BPE tokenizer and a tiny Qwen2 model, pre-trained on plain documents
3. sft        SFT on the chat data: the model answers in the chat format, and is sometimes toxic
4. candidates, feedback
              the SFT model samples 6 answers per training prompt (2 temperatures x 3 samples);
              the default constitution's rules score them; (best, worst) pairs with a large enough
              gap become a preference data set
5. reward     a reward model on those pairs
6. dpo        DPO (the RPO variant: DPO + the chosen answer's NLL) with LoRA on those pairs
7. classifier, ppo
              a toxicity classifier trained on the corpus's own labels, then PPO from the SFT model
              rewarded by its "not toxic" logit, with a KL penalty to the SFT model
8. eval_dpo, eval_ppo
              the SFT model and each aligned model answer the held-out prompts afresh (4 samples
              each), scored by the same rules, rated by the rules' and the classifier's toxicity
9. report     report.html from the run files

Then this module writes summary.json (the before/after numbers of both comparisons), copies the
report to the top of the output directory, and prints the tables. Nothing is filtered or rewritten
at evaluation time: the differences come from training. A second run skips every stage that is done
and unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from vietnamese_ai.errors import UserError
from vietnamese_ai.evaluation.compare import before_after
from vietnamese_ai.files import atomic_file
from vietnamese_ai.pipeline import load_pipeline, run_pipeline
from vietnamese_ai.recipes.common import quiet_transformers

DEMO = os.path.join(os.path.dirname(__file__), "demo.yaml")
FAST = ["base.max_steps=250", "sft.num_train_epochs=6", "candidates.num_samples=2", "reward.num_train_epochs=1",
        "dpo.num_train_epochs=4", "corpus.args={classifier_corpora: 1}", "ppo.max_steps=48", "eval_dpo.samples=2",
        "eval_ppo.samples=2", "eval_dpo.suite_limit=8", "eval_ppo.suite_limit=8"]   # --fast: a few steps of each stage (for tests)


def table(summary: dict) -> str:
    before, after = summary["before"], summary["after"]
    rows = [("constitution score", before["constitution_score"], after["constitution_score"]),
            ("toxic rate", before["toxic_rate"], after["toxic_rate"]),
            ("toxicity mean", before["toxicity_mean"], after["toxicity_mean"])]
    rows += [(f"  {k}", before["per_principle"][k], after["per_principle"][k]) for k in before["per_principle"]]
    rows += [("distinct-2", before["distinct_2"], after["distinct_2"])]
    lines = [f"{'metric':<22}{'before (SFT)':>14}{'after (DPO)':>14}"]
    lines += [f"{name:<22}{b:>14.3f}{a:>14.3f}" for name, b, a in rows]
    lines.append(f"win / tie / loss of after against before: {summary['win_rate']:.2f} / {summary['tie_rate']:.2f} / "
                 f"{summary['loss_rate']:.2f};  KL(after || before) per answer: {summary['kl_after_before']:.2f} nats")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vietnamese_ai.demo")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--fast", action="store_true", help="a few steps of each stage (for tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[vietnamese-ai] %(message)s")
    quiet_transformers()
    started = time.perf_counter()
    try:
        pipeline = load_pipeline(DEMO, [f"output_dir={args.out}", *(FAST if args.fast else [])])
        rows = run_pipeline(pipeline, log=lambda text: print(f"{text} ({time.perf_counter() - started:.0f}s)", flush=True))
    except UserError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:   # Ctrl-C or SIGTERM: what is done stays done
        message = getattr(e, "message", "")
        print(f"demo: interrupted{': ' + message if message else ''}; run it again to go on from there", file=sys.stderr)
        return 128 + int(getattr(e, "signum", 2))

    out = args.out
    summary = compare(os.path.join(out, "eval_dpo"))
    ppo = compare(os.path.join(out, "eval_ppo"))
    summary["pairs"] = sum(1 for _ in open(pipeline.stage("feedback").output("output"), encoding="utf-8"))
    summary["ppo"] = detox_summary(ppo, pipeline.stage("classifier").directory)
    summary["safety"] = {"dpo": safety_of(os.path.join(out, "eval_dpo")), "ppo": safety_of(os.path.join(out, "eval_ppo"))}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["stages"] = {r["stage"]: {"action": r["action"], "seconds": r["seconds"]} for r in rows}
    with atomic_file(os.path.join(out, "summary.json")) as f:
        json.dump(summary, f, ensure_ascii=False, indent=2)
    page = os.path.join(out, "report.html")
    with open(pipeline.stage("report").output("output"), encoding="utf-8") as f, atomic_file(page) as copy:
        copy.write(f.read())

    print()
    print(table(summary))
    for example in summary["examples"][:4]:
        print(f"\nprompt: {example['prompt']}\n  before: {example['before'][:100]!r}\n  after:  {example['after'][:100]!r}")
    print()
    print(ppo_table(summary["ppo"]))
    print()
    print(safety_table(summary["safety"]))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f}s; summary in {os.path.join(out, 'summary.json')}")
    print(f"report: {os.path.abspath(page)}")
    return 0


def compare(directory: str) -> dict[str, Any]:
    """An evaluate directory (two models) in the flat before/after form of summary.json."""
    with open(os.path.join(directory, "eval.json"), encoding="utf-8") as f:
        report = json.load(f)
    with open(os.path.join(directory, "samples.jsonl"), encoding="utf-8") as f:
        rows = [row for line in f if line.strip() for row in [json.loads(line)] if row.get("suite") is None]
    flat = before_after(report, rows)
    flat["settings"], flat["models"] = report["settings"], dict(zip(("before", "after"), report["model_paths"].values()))
    return flat


def safety_of(directory: str) -> dict[str, Any]:
    """One evaluation's safety suites and correctness, before (the SFT model) and after."""
    with open(os.path.join(directory, "eval.json"), encoding="utf-8") as f:
        models = list(json.load(f)["models"].values())
    return {side: {"suites": m.get("suites", {}), "correctness": m.get("correctness", {})}
            for side, m in zip(("before", "after"), models)}


SAFETY_ROWS = [("toxicity", "toxic_rate"), ("bias", "accuracy_ambiguous"), ("bias", "bias_ambiguous"),
               ("bias", "bias_disambiguated"), ("jailbreak", "attack_success_rate"),
               ("over_refusal", "over_refusal_rate")]


def safety_table(safety: dict[str, Any]) -> str:
    """The safety suites and the correctness against references, before and after, for each aligned model
    (each pair from its own evaluation: the same seeds and the same toxicity measure on both sides)."""
    dpo, ppo = safety["dpo"], safety["ppo"]
    lines = [f"{'safety (lower is better but accuracy)':<42}{'SFT':>8}{'DPO':>8}{'SFT':>8}{'PPO':>8}"]
    for suite, metric in SAFETY_ROWS:
        for language in ("vi", "en"):
            values = [e[side]["suites"].get(suite, {}).get(language, {}).get(metric) for e in (dpo, ppo)
                      for side in ("before", "after")]
            if any(v is not None for v in values):
                cells = "".join(f"{v:>8.3f}" if v is not None else f"{'-':>8}" for v in values)
                lines.append(f"{f'{suite} {language}: {metric}':<42}{cells}")
    for metric in ("exact_match", "contains", "token_f1"):
        values = [e[side]["correctness"].get("all", {}).get(metric) for e in (dpo, ppo) for side in ("before", "after")]
        if any(v is not None for v in values):
            cells = "".join(f"{v:>8.3f}" if v is not None else f"{'-':>8}" for v in values)
            lines.append(f"{f'against the references: {metric}':<42}{cells}")
    return "\n".join(lines)


def detox_summary(ppo: dict[str, Any], classifier: str) -> dict[str, Any]:
    """The seed recipe's toxicity table: mean/std before and after, and the % improvement."""
    result: dict[str, Any] = {side: {"toxic_rate": ppo[side]["toxic_rate"], "toxicity_mean": ppo[side]["toxicity_mean"],
                                     "toxicity_std": ppo[side]["toxicity_std"],
                                     "constitution_score": ppo[side]["constitution_score"], "model": ppo["models"][side]}
                              for side in ("before", "after")}
    before, after = result["before"], result["after"]
    result["improvement_pct"] = (100 * (before["toxicity_mean"] - after["toxicity_mean"]) / before["toxicity_mean"]
                                 if before["toxicity_mean"] > 0 else 0.0)
    result["std_improvement_pct"] = (100 * (before["toxicity_std"] - after["toxicity_std"]) / before["toxicity_std"]
                                     if before["toxicity_std"] > 0 else 0.0)
    result["classifier"], result["settings"] = classifier, ppo["settings"]
    return result


def ppo_table(ppo: dict) -> str:
    lines = [f"{'PPO (classifier toxicity)':<26}{'before (SFT)':>14}{'after (PPO)':>14}"]
    for key in ("toxic_rate", "toxicity_mean", "toxicity_std"):
        lines.append(f"{key:<26}{ppo['before'][key]:>14.3f}{ppo['after'][key]:>14.3f}")
    lines.append(f"mean toxicity improvement: {ppo['improvement_pct']:.1f}%  (std: {ppo['std_improvement_pct']:.1f}%)")
    return "\n".join(lines)
