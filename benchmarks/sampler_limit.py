"""The online-RL sampler against this machine's limit: how far each decoding step is from the time
the bytes it must read and the FLOPs it must do would take at the machine's measured rates.

    python benchmarks/sampler_limit.py [--threads 1] [--prompt-words 30-60] [--group 8] [--prompts 4]

A decoding step reads every weight once (the rows all share them) and, per row, the keys and values
of every position it attends to; it does 2 FLOPs per weight per row plus attention's
4 x heads x head_dim x context per row and layer. Its floor is the larger of bytes / read bandwidth
and FLOPs / matmul rate, both measured here on the threads used (a large read-only sum for the
bandwidth, the best large matmul for the rate). The sampler is the one online RL uses
(`sample_completions`: the prompt prefilled once, its cache repeated G times), on the benchmark
model and prompts of `online_vs_trl.py`. Reported: the measured step time, the floor, the floor with
the prompt's cache read once per group instead of G times (what shared-prefix attention would
read), and where the step's time goes (a torch profile: matmuls, attention, everything else).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import table  # noqa: E402
from online_vs_trl import workload  # noqa: E402


def read_bandwidth(torch, megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second of a read-only pass (a sum) over a buffer far larger than the caches: best of repeats."""
    x = torch.ones(megabytes * 2**20 // 4)
    x.sum()
    best = min(_timed(lambda: x.sum()) for _ in range(repeats))
    return x.numel() * 4 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-words", default="30-60")
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per call (x group rows)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    from vietnamese_ai.data.tokenize import prompt_ids
    from vietnamese_ai.data.types import Message
    from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
    from vietnamese_ai.models.sampling import sample_completions
    from vietnamese_ai.training.flops import measure_matmul_flops

    torch.set_num_threads(args.threads)
    low, high = (int(x) for x in args.prompt_words.split("-"))
    path, data = workload(words=(low, high))
    model, tokenizer = load_causal_lm(path).eval(), load_tokenizer(path)
    config = model.config
    rows_data = [json.loads(line) for line in open(data, encoding="utf-8")]
    prompts = [prompt_ids(tokenizer, [Message(m["role"], m["content"]) for m in r["prompt"]])
               for r in rows_data[:args.prompts]]
    rows = len(prompts) * args.group
    seeds = list(range(rows))

    def call():
        return sample_completions(model, prompts, args.group, seeds, args.max_new_tokens, tokenizer.eos_token_id,
                                  tokenizer.pad_token_id, batch_size=len(prompts))

    call()
    times = [_timed(call) for _ in range(args.repeats)]
    completions = call()
    lengths = [len(c.token_ids) for c in completions]
    steps = max(lengths)   # the loop runs until its last row ends

    bandwidth = read_bandwidth(torch)
    rate = measure_matmul_flops(torch.device("cpu"), torch.float32, 1024, budget_s=1.0)
    params = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    read_params = params if tied else params - embedding        # the input embedding reads only `rows` rows
    matmul_params = params - embedding if not tied else params - 0  # lm_head counted once either way
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4   # bytes, fp32
    prompt_width = max(len(p) for p in prompts)   # left-padded: every row attends over the padded width

    floor, floor_shared, bytes_total, flops_total = 0.0, 0.0, 0.0, 0.0
    for t in range(steps):
        context = prompt_width + t + 1
        weights = read_params * 4
        kv = rows * context * kv_per_token
        kv_shared = (len(prompts) * prompt_width + rows * (t + 1)) * kv_per_token
        flops = 2 * matmul_params * rows + 4 * rows * config.num_attention_heads * head_dim * context \
            * config.num_hidden_layers
        floor += max((weights + kv) / bandwidth, flops / rate)
        floor_shared += max((weights + kv_shared) / bandwidth, flops / rate)
        bytes_total, flops_total = bytes_total + weights + kv, flops_total + flops

    measured = statistics.median(times)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    groups = {"matmuls (linear layers)": ("aten::mm", "aten::addmm", "aten::bmm"),
              "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                            "aten::_scaled_dot_product_attention_math")}
    spent = {name: 0.0 for name in groups}
    total = 0.0
    for event in prof.key_averages():
        total += event.self_cpu_time_total
        for name, ops in groups.items():
            if event.key in ops:
                spent[name] += event.self_cpu_time_total
    spent["other torch ops"] = total - sum(spent.values())

    print(f"model: {params / 1e6:.2f} M parameters ({read_params * 4 / 2**20:.1f} MiB read per step), "
          f"{kv_per_token} bytes of KV cache per token and row")
    print(f"machine ({args.threads} thread(s)): read bandwidth {bandwidth / 1e9:.1f} GB/s, "
          f"matmul rate {rate / 1e9:.1f} GFLOP/s")
    print(f"call: {len(prompts)} prompts x G={args.group} = {rows} rows, prompt width {prompt_width}, "
          f"{steps} decoding steps, mean completion {statistics.fmean(lengths):.1f} tokens")
    print(f"per step: {bytes_total / steps / 2**20:.1f} MiB read, {flops_total / steps / 1e9:.3f} GFLOP")
    print(table([
        ["measured (median of %d)" % args.repeats, f"{measured:.3f}", f"{measured / steps * 1e3:.2f}",
         f"{measured / floor:.2f}"],
        ["floor: bytes / bandwidth or FLOPs / rate", f"{floor:.3f}", f"{floor / steps * 1e3:.2f}", "1.00"],
        ["floor with the prompt's cache read once per group", f"{floor_shared:.3f}",
         f"{floor_shared / steps * 1e3:.2f}", f"{floor_shared / floor:.2f}"],
    ], ("", "seconds per call", "ms per step", "x floor")))
    print("\nwhere a call's time goes (torch profiler, self time of the ops; Python between ops is not in it):")
    print(table([(k, f"{v / steps / 1e3:.2f}", f"{v / total:.0%}") for k, v in spent.items()],
                ("", "ms per step", "share")))
    print(f"Python and framework time outside torch ops: {max(measured - total / 1e6, 0) / steps * 1e3:.2f} ms per step")


if __name__ == "__main__":
    main()
