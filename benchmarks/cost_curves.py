"""Cost curves: time per optimizer step and MFU against model size and sequence length, ours vs TRL.

    python benchmarks/cost_curves.py [--methods sft,dpo,grpo] [--sweeps size,length] [--steps 6] [--only 512,1024]

Points (layers fixed at 4, 8 query / 4 key-value heads, Qwen2 architecture, fp32, vocabulary 4096 asked
for; the tokenizer trained on the benchmark's word list has 512 entries):
  size sweep:   hidden 128, 256, 512, 1024 at 256 tokens per sequence;
  length sweep: 128, 512, 1024, 2048 tokens per sequence at hidden 256 (the 256-token point is shared).
Data: evenly sized records built from common.sentence, each part trimmed to its token target with the
model's tokenizer (special tokens not counted). SFT: prompt and completion L/2 tokens each (a sequence
of L). DPO: prompt, chosen and rejected L/2 each (each of the two sequences is L tokens); both sides
compute the reference in every step (no precomputation). GRPO: a prompt of L - 64 tokens, G=8
completions of up to 64 tokens, 2 prompts per step. The batch (BATCH) is the same on both sides.

What is timed: each side runs `1 + --steps` optimizer steps in its own process; a global
torch.optim step hook records each optimizer step's end (the same clock on both sides), and the point's
time per step is the median of the `--steps` intervals between consecutive step ends (so the first
step, with its allocations, is left out; data loading between steps is in). One run per point.

MFU: model FLOPs per step over time per step over this machine's fp32 matmul peak, measured once at the
start of the sweep (flops.measure_matmul_flops, 2048^2). SFT and DPO: the FLOPs per step of eq. (1) in
vietnamese_ai/training/flops.py for the records trained (model_flops_per_step), the same number for both
sides since both train the same tokens; DPO counts the prompt once (our prefix-shared layout) and only
the policy's training pass, so TRL's second prompt pass and both sides' reference forward are work
not credited. GRPO: the FLOPs our run logged for its policy update (mfu x peak x seconds per line), on
both sides; the step's time includes sampling, so GRPO's MFU is the share of the machine spent on
policy updates (not comparable with SFT's and DPO's).

Writes benchmarks/_work/cost_curves.json (after each point, so an interrupted sweep keeps its points),
prints the tables, and writes docs/img/cost_<method>_<sweep>.svg and docs/img/mfu_<method>_<sweep>.svg.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, WORK, ensure_trl_venv, log, run_driver, sentence, table, write_jsonl  # noqa: E402

SIZES = (128, 256, 512, 1024)
LENGTHS = (128, 256, 512, 1024, 2048)
BASE_HIDDEN, BASE_LENGTH, LAYERS = 256, 256, 4
# (method, sweep) -> {value: batch}, the same on both sides: the size sweep keeps the batch; the length
# sweep keeps the tokens per step (~2k for SFT, ~1k per answer set for DPO; 2048-token DPO: 1 pair).
BATCH = {
    ("sft", "size"): {128: 8, 256: 8, 512: 8, 1024: 8},
    ("sft", "length"): {128: 16, 256: 8, 512: 4, 1024: 2, 2048: 1},
    ("dpo", "size"): {128: 4, 256: 4, 512: 4, 1024: 4},
    ("dpo", "length"): {128: 8, 256: 4, 512: 2, 1024: 1, 2048: 1},
}
# GRPO: G=8 completions of up to 64 tokens for each of 2 prompts per step (16 completions), so a step
# samples, scores and trains on 16 sequences of the prompt + up to 64 tokens; beta 0 (no reference).
BATCH[("grpo", "size")] = {h: 16 for h in SIZES}
BATCH[("grpo", "length")] = {n: 16 for n in LENGTHS}
GRPO_COMPLETION, GRPO_G = 64, 8
IMG = os.path.join(ROOT, "docs", "img")
RESULTS = os.path.join(WORK, "cost_curves.json")


# ---------------------------------------------------------------------------------------------- workload

def model_path(hidden: int) -> str:
    path = os.path.join(WORK, f"cost-h{hidden}-l{LAYERS}")
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    from vietnamese_ai.models.tiny import build_tiny_model

    rng = random.Random(0)  # the same corpus for every size, so every model has the same tokenizer
    corpus = [sentence(rng, 40) for _ in range(2000)]
    log(f"building {path}")
    return build_tiny_model(path, corpus, vocab_size=4096, hidden_size=hidden, num_layers=LAYERS, num_heads=8,
                            num_kv_heads=4, max_position_embeddings=4096)


def fitted(tokenizer, rng: random.Random, target: int, before: str = "", after: str = "") -> str:
    """`before` + words + `after` with `target` tokens (or one fewer, where a word is two tokens)."""
    def count(n: int) -> tuple[str, int]:
        text = before + sentence(rng_words, n) + after
        return text, len(tokenizer(text, add_special_tokens=False)["input_ids"])

    seed = rng.random()
    n = max(1, target)
    for _ in range(20):
        rng_words = random.Random(seed)
        text, tokens = count(n)
        if tokens == target or (tokens < target and count(n + 1)[1] > target):
            return text
        n = max(1, n + (target - tokens if abs(target - tokens) > 1 else (1 if tokens < target else -1)))
    return text


def workload(method: str, length: int, hidden: int, examples: int) -> tuple[str, str]:
    from transformers import AutoTokenizer

    model = model_path(hidden)
    path = os.path.join(WORK, f"cost_{method}_L{length}.jsonl")
    if not os.path.isfile(path):
        tokenizer = AutoTokenizer.from_pretrained(model)
        rng = random.Random(length)
        half = length // 2
        rows = []
        for i in range(examples):
            if method == "grpo":  # the prompt is the sequence less the completion budget
                rows.append({"prompt": fitted(tokenizer, rng, length - GRPO_COMPLETION, f"Câu hỏi {i}: ", "?")})
                continue
            prompt = fitted(tokenizer, rng, half, f"Câu hỏi {i}: ", "?")
            if method == "sft":
                rows.append({"prompt": prompt, "completion": fitted(tokenizer, rng, half, " ", ".")})
            else:
                rows.append({"prompt": prompt, "chosen": fitted(tokenizer, rng, half, " ", "."),
                             "rejected": fitted(tokenizer, rng, half, " ", ".")})
        write_jsonl(path, rows)
    return model, path


# ---------------------------------------------------------------------------------------------- one point

def model_flops_per_step(method: str, model: str, data: str, batch: int, sft_tokens: float | None) -> float:
    """Eq. (1) of vietnamese_ai/training/flops.py for one step of `batch` records of this (evenly sized)
    data set, as our layouts run it: SFT a plain sequence per record, the output layer at the completion's
    positions; DPO the prompt once and each answer as a branch after it (prefix sharing), so TRL is
    credited with the same FLOPs and not with the prompt it computes twice. Means over the records."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from vietnamese_ai.training.flops import model_shape, training_flops

    tokenizer = AutoTokenizer.from_pretrained(model)
    shape = model_shape(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)))
    rows = [json.loads(line) for line in open(data)]

    def n(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    total = 0.0
    for row in rows:
        p = n(row["prompt"])
        if method == "sft":
            t = sft_tokens if sft_tokens else p + n(row["completion"]) + 1  # + EOS
            total += training_flops(shape, round(t), round(t) - p, round(t) * (round(t) + 1) // 2)
        else:
            branches = [n(row["chosen"]) + 1, n(row["rejected"]) + 1]  # + EOS
            keys = p * (p + 1) // 2 + sum(c * p + c * (c + 1) // 2 for c in branches)
            total += training_flops(shape, p + sum(branches), sum(branches), keys)
    return total / len(rows) * batch


def measured_peak(threads: int) -> float:
    """This machine's fp32 matmul rate now (best of 2048^2 matmuls over 1 s), for both sides' MFU."""
    import torch

    from vietnamese_ai.training.flops import measure_matmul_flops

    torch.set_num_threads(threads)
    return measure_matmul_flops(torch.device("cpu"), torch.float32, 2048, budget_s=1.0)


def measure(method: str, sweep: str, value: int, steps: int, threads: int, trl_python: str, peak: float,
            ablation: bool = False) -> dict:
    hidden, length = (value, BASE_LENGTH) if sweep == "size" else (BASE_HIDDEN, value)
    batch = BATCH[(method, sweep)][value]
    model, data = workload(method, length, hidden, examples=max(16, batch * (steps + 1)))
    if method == "grpo":
        return measure_grpo(model, data, sweep, value, hidden, length, batch, steps, threads, trl_python, peak)
    common = {"model": model, "data": data, "batch_size": batch, "lr": 1e-5, "max_steps": steps + 1,  # steps + 1 step ends: `steps` intervals
              "logging_steps": 1, "threads": threads}
    if method == "sft":
        common["max_length"] = length + 64  # no truncation
    else:
        # Both sides compute the reference in each step (no precomputation before the loop).
        common.update(ref_model=model, beta=0.1, loss_type="sigmoid", precompute=False)
    out = {}
    for side, python, driver in (("ours", sys.executable, f"ours_{method}.py"), ("trl", trl_python, f"trl_{method}.py")):
        output_dir = os.path.join(WORK, f"cost-{side}-{method}")
        result = run_driver(python, driver, {**common, "output_dir": output_dir})
        seconds = result["step_seconds"]
        out[side] = {"step_s": statistics.median(seconds), "steps_s": [round(x, 4) for x in seconds],
                     "train_seconds": result["train_seconds"], "process_seconds": result["process_seconds"],
                     "peak_rss_mib": result.get("peak_rss_mib")}
        if side == "ours" and method == "sft":
            examples = sum(1 for _ in open(data))
            out[side]["tokens_per_record"] = result["tokens"] / examples
    flops_per_step = model_flops_per_step(method, model, data, batch, out["ours"].get("tokens_per_record"))
    if method == "dpo" and ablation:  # ours without prefix sharing or packing: one plain sequence per row
        result = run_driver(sys.executable, "ours_dpo.py", {**common, "prefix_sharing": False, "packing": False,
                                                            "output_dir": os.path.join(WORK, "cost-ours-dpo")})
        out["ours_unshared"] = {"step_s": statistics.median(result["step_seconds"]),
                                "steps_s": [round(x, 4) for x in result["step_seconds"]]}
    for side in out:
        out[side]["mfu"] = flops_per_step / out[side]["step_s"] / peak
    return {"method": method, "sweep": sweep, "value": value, "hidden": hidden, "length": length, "batch": batch,
            "flops_per_step": flops_per_step, "peak_flops": peak, **out,
            "ratio": out["trl"]["step_s"] / out["ours"]["step_s"]}


def measure_grpo(model: str, data: str, sweep: str, value: int, hidden: int, length: int, batch: int, steps: int,
                 threads: int, trl_python: str, peak: float) -> dict:
    """GRPO: the step includes sampling, scoring and the log-prob passes. Model FLOPs are those our run
    logged for its policy update (metrics.jsonl mfu x run.json peak x the step's seconds, mean over the
    timed steps); TRL is credited with the same FLOPs per step, though its completions (sampled with its
    own generator) differ in length: both sides' mean completion lengths are kept."""
    common = {"model": model, "data": data, "reward_file": os.path.join(os.path.dirname(__file__), "rewards.py"),
              "num_generations": GRPO_G, "batch_size": batch, "accumulation": 1,
              "max_completion_length": GRPO_COMPLETION, "lr": 1e-5, "steps": steps + 1, "beta": 0.0,
              "threads": threads, "seed": 0, "method": "grpo"}
    out = {}
    for side, python, driver in (("ours", sys.executable, "ours_online.py"), ("trl", trl_python, "trl_online.py")):
        output_dir = os.path.join(WORK, f"cost-{side}-grpo")
        result = run_driver(python, driver, {**common, "output_dir": output_dir})
        seconds = result["step_seconds"]
        out[side] = {"step_s": statistics.median(seconds), "steps_s": [round(x, 4) for x in seconds],
                     "train_seconds": result["train_seconds"], "process_seconds": result["process_seconds"],
                     "peak_rss_mib": result.get("peak_rss_mib"),
                     # seconds per step in sampling, scoring and log-prob passes (all steps, first included)
                     "phases_per_step": {k: v / max(result["steps"], 1) for k, v in result.get("phases", {}).items()}}
        if side == "ours":
            run = json.load(open(os.path.join(output_dir, "run.json")))
            run_peak = run["peak_flops"]["value"] if isinstance(run["peak_flops"], dict) else run["peak_flops"]
            lines = [json.loads(line) for line in open(os.path.join(output_dir, "metrics.jsonl"))]
            lines = [r for r in lines if "mfu" in r]
            flops = [r["mfu"] * run_peak * s for r, s in zip(lines[1:], seconds)]
            out[side]["completion_length"] = statistics.mean(r.get("completions/mean_length", 0) for r in lines[1:])
        else:
            out[side]["completion_length"] = statistics.mean(x for x in result["completion_lengths"][1:] if x is not None)
    flops_per_step = statistics.mean(flops)
    for side in ("ours", "trl"):
        out[side]["mfu"] = flops_per_step / out[side]["step_s"] / peak
    return {"method": "grpo", "sweep": sweep, "value": value, "hidden": hidden, "length": length, "batch": batch,
            "flops_per_step": flops_per_step, "peak_flops": peak, **out,
            "ratio": out["trl"]["step_s"] / out["ours"]["step_s"]}


# ---------------------------------------------------------------------------------------------- plots

def svg_chart(path: str, title: str, xlabel: str, ylabel: str, series: dict[str, list[tuple[float, float]]],
              log_y: bool = False) -> None:
    """A tiny line chart: x on a log2 axis, one polyline with markers per series, labelled axes, legend."""
    width, height, left, right, top, bottom = 560, 340, 70, 20, 40, 50
    points = [p for s in series.values() for p in s]
    xs = sorted({x for x, _ in points})
    x0, x1 = math.log2(min(xs)), math.log2(max(xs))
    ty = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    ys = [ty(y) for _, y in points]
    y0, y1 = (min(ys), max(ys)) if log_y else (0.0, max(ys))
    if log_y:
        y0, y1 = math.floor(y0), math.ceil(y1)
    y1 = y1 if y1 > y0 else y0 + 1

    def px(x: float) -> float:
        return left + (math.log2(x) - x0) / max(x1 - x0, 1e-9) * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - (ty(y) - y0) / (y1 - y0) * (height - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>']
    for x in xs:
        out.append(f'<line x1="{px(x):.1f}" y1="{height - bottom}" x2="{px(x):.1f}" y2="{height - bottom + 5}" stroke="black"/>')
        out.append(f'<text x="{px(x):.1f}" y="{height - bottom + 18}" text-anchor="middle">{x:g}</text>')
    ticks = ([10 ** k for k in range(int(y0), int(y1) + 1)] if log_y else [y0 + (y1 - y0) * i / 5 for i in range(6)])
    for t in ticks:
        y = py(t)
        out.append(f'<line x1="{left - 5}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{t:.3g}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">{xlabel}</text>')
    out.append(f'<text x="16" y="{(top + height - bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(top + height - bottom) / 2})">{ylabel}</text>')
    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    for i, (name, pts) in enumerate(series.items()):
        colour, pts = colours[i % len(colours)], sorted(pts)
        path_d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path_d}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}"/>' for x, y in pts]
        ly = top + 8 + 16 * i
        out.append(f'<line x1="{left + 12}" y1="{ly}" x2="{left + 36}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{left + 42}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def report(points: list[dict]) -> None:
    """Tables and plots. The peak measured at the start of a sweep varies between sweeps (1.2e11 to 4.3e11
    FLOP/s seen on this 2-core machine), so every point's MFU is taken against one peak: the highest
    measured over the sweeps in the results file (the conservative choice)."""
    os.makedirs(IMG, exist_ok=True)
    peak = max(p["peak_flops"] for p in points)
    for p in points:
        for side in ("ours", "trl", "ours_unshared"):
            if side in p:
                p[side]["mfu"] = p["flops_per_step"] / p[side]["step_s"] / peak
    print(f"MFU against a peak of {peak:.3g} FLOP/s (fp32 matmul, the highest measured)")
    for method in ("sft", "dpo", "grpo"):
        for sweep, xlabel in (("size", "hidden size (4 layers, 256 tokens)"), ("length", "tokens per sequence (hidden 256)")):
            rows = sorted((p for p in points if p["method"] == method and p["sweep"] == sweep), key=lambda p: p["value"])
            if not rows:
                continue
            print(f"\n{method.upper()}, {sweep} sweep\n")
            extra_head, extra = (), (lambda p: ())
            if method == "dpo" and all("ours_unshared" in p for p in rows):
                extra_head = ("ours unshared s/step",)
                extra = lambda p: (f"{p['ours_unshared']['step_s']:.3f}",)  # noqa: E731
            if method == "grpo":
                extra_head = ("completion tokens ours / TRL",)
                extra = lambda p: (f"{p['ours']['completion_length']:.0f} / {p['trl']['completion_length']:.0f}",)  # noqa: E731
            print(table([(p["value"], p["batch"], f"{p['ours']['step_s']:.3f}", f"{p['trl']['step_s']:.3f}",
                          f"{p['ratio']:.2f}x", f"{p['ours']['mfu']:.3f}", f"{p['trl']['mfu']:.3f}",
                          f"{p['flops_per_step'] / 1e9:.1f}", *extra(p)) for p in rows],
                        ("hidden" if sweep == "size" else "tokens", "batch", "ours s/step", "TRL s/step",
                         "TRL/ours", "ours MFU", "TRL MFU", "GFLOP/step", *extra_head)))
            name = f"{method.upper()}, {'model size' if sweep == 'size' else 'sequence length'}"
            svg_chart(os.path.join(IMG, f"cost_{method}_{sweep}.svg"), f"{name}: time per step", xlabel, "seconds per step (log)",
                      {"vietnamese-ai": [(p["value"], p["ours"]["step_s"]) for p in rows],
                       "TRL 1.16": [(p["value"], p["trl"]["step_s"]) for p in rows],
                       **({"vietnamese-ai, prefix_sharing=False packing=False":
                           [(p["value"], p["ours_unshared"]["step_s"]) for p in rows]} if extra_head and method == "dpo" else {})},
                      log_y=True)
            svg_chart(os.path.join(IMG, f"mfu_{method}_{sweep}.svg"), f"{name}: MFU", xlabel, "MFU (fp32 CPU peak)",
                      {"vietnamese-ai": [(p["value"], p["ours"]["mfu"]) for p in rows],
                       "TRL 1.16": [(p["value"], p["trl"]["mfu"]) for p in rows]})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="sft,dpo")
    parser.add_argument("--sweeps", default="size,length")
    parser.add_argument("--steps", type=int, default=6, help="timed steps after the first")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--only", default="", help="comma-separated values to run (default: all of the sweep)")
    parser.add_argument("--dpo-ablation", action="store_true",
                        help="DPO: also time ours with prefix_sharing=False and packing=False (plain causal rows)")
    parser.add_argument("--fresh", action="store_true", help="forget earlier points in the results file")
    parser.add_argument("--report", action="store_true", help="only print tables and write plots from the results file")
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    points = [] if args.fresh or not os.path.isfile(RESULTS) else json.load(open(RESULTS))
    if not args.report:
        trl_python = ensure_trl_venv()
        peak = measured_peak(args.threads)
        log(f"peak {peak:.3g} FLOP/s (fp32 matmul, {args.threads} threads)")
        only = {int(v) for v in args.only.split(",") if v}
        start = time.perf_counter()
        for method in args.methods.split(","):
            for sweep in args.sweeps.split(","):
                values = SIZES if sweep == "size" else tuple(v for v in LENGTHS if v != BASE_LENGTH)
                for value in values:
                    if only and value not in only:
                        continue
                    t = time.perf_counter()
                    point = measure(method, sweep, value, args.steps, args.threads, trl_python, peak, args.dpo_ablation)
                    point["point_seconds"] = time.perf_counter() - t
                    log(f"{method} {sweep}={value}: ours {point['ours']['step_s']:.3f} s/step, TRL "
                        f"{point['trl']['step_s']:.3f} s/step ({point['ratio']:.2f}x), {point['point_seconds']:.0f} s")
                    points = [p for p in points if (p["method"], p["sweep"], p["value"]) != (method, sweep, value)]
                    points.append(point)
                    if sweep == "size" and value == BASE_HIDDEN:  # the shared point of the length sweep
                        points = [p for p in points if (p["method"], p["sweep"], p["value"]) != (method, "length", BASE_LENGTH)]
                        points.append({**point, "sweep": "length", "value": BASE_LENGTH,
                                       "batch": point["batch"]})
                    with open(RESULTS, "w") as f:
                        json.dump(points, f, indent=1)
        log(f"sweep took {time.perf_counter() - start:.0f} s")
    report(points)


if __name__ == "__main__":
    main()
