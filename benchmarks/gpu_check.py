"""The GPU path, checked in one run: SFT, DPO and GRPO steps on a model of Qwen2.5-0.5B's shape.

    python benchmarks/gpu_check.py                 # on a CUDA machine: under 8 minutes, nothing downloaded
    python benchmarks/gpu_check.py --cpu-smoke     # tiny shapes on CPU, seconds (the test suite runs this)

The model is built on the spot from a transformers config with random weights, and the tokenizer is
trained on a small corpus (vietnamese_ai.models.tiny), so the machine needs no network and no package
beyond this one's dependencies. Each method runs through its recipe (`run_sft`, `run_dpo`, `run_grpo`)
with LoRA, gradient checkpointing and SDPA, twice: in bf16 (autocast over bf16 weights) and in fp32.
For each run it records:

- tokens/s: the median over steps after the first of the loop's `tokens_per_second` (real tokens, the
  whole step: GRPO's includes sampling and scoring);
- MFU: tokens/s x model FLOPs per token / the card's dense bf16 peak (PEAK_BF16_FLOPS). Model FLOPs
  per token are 2 x (the decoder's linear weights + the lm_head) + 4 x layers x q_dim x mean context
  (half the sequence: causal attention), times 3 for a full backward or 2 with LoRA (input gradients
  only); recomputation under gradient checkpointing is not counted, as is usual for MFU;
- peak memory: torch.cuda.max_memory_allocated over the run, beside `--estimate`'s figure for the
  same config (vietnamese_ai.estimate);
- the losses of every step. bf16 must stay within LOSS_TOLERANCE of fp32 for SFT and DPO (the same
  batches); GRPO's completions are sampled from each precision's own logits, so they differ and only
  finiteness is checked.

It prints one JSON summary as its last line, and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # run from a checkout without installing

# Qwen2.5-0.5B's config.json, the keys that give its shape (494M parameters).
QWEN25_05B = {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "num_hidden_layers": 24,
              "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
              "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": True, "hidden_act": "silu"}
# The smoke model's vocabulary is larger than its tokenizer's, as the GPU one's is: ids the tokenizer
# lacks are sampled and decoded there too.
SMOKE = {**QWEN25_05B, "vocab_size": 2048, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 512}

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, matched in this order against the device name.
PEAK_BF16_FLOPS = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
                   ("GH200", 989e12), ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12),
                   ("L4", 121e12), ("A10", 125e12)]

# |bf16 loss - fp32 loss| per step, relative to the fp32 loss (bf16 keeps 8 bits of mantissa: ~0.4% per
# rounding, averaged over many tokens).
LOSS_TOLERANCE = {"sft": 0.02, "dpo": 0.02}

WORDS = ("xin chào bạn tôi là trợ lý hôm nay trời đẹp học máy dữ liệu mô hình ngôn ngữ thủ đô Việt Nam Hà Nội "
         "giúp đỡ câu hỏi trả lời rất tốt cảm ơn the model learns from data language question answer helpful "
         "honest kind capital city of friendly please thanks computer science training reward policy value").split()

REWARDS = '''
def even_tokens(prompts, completions, completion_ids, **kwargs):
    return [sum(1 for t in ids if t % 2 == 0) / max(len(ids), 1) for ids in completion_ids]
'''


def log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def peak_flops(device_name: str) -> float | None:
    for name, flops in PEAK_BF16_FLOPS:
        if name in device_name:
            return flops
    return None


def model_flops_per_token(shape, seq_len: int, lora: bool) -> float:
    """Training FLOPs per token (see the module docstring); `shape` is a vietnamese_ai.estimate.ModelShape."""
    forward = 2 * (shape.linear_params + shape.vocab * shape.hidden) + 4 * shape.layers * shape.q * seq_len / 2
    return forward * (2 if lora else 3)


def write_workload(work: str, max_length: int, completion_length: int) -> dict[str, str]:
    """A tokenizer-and-model directory's data: prompt-completion records and pairs about `max_length`
    tokens long, chat prompts, and a reward function file."""
    from vietnamese_ai.models.tiny import train_tokenizer

    rng = random.Random(0)

    def words(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    paths = {name: os.path.join(work, name) for name in ("sft.jsonl", "pairs.jsonl", "prompts.jsonl", "rewards.py")}
    tokens_per_word = 1.5   # about right for this corpus and tokenizer; max_length cuts what is longer
    prompt_words, answer_words = int(max_length / 4 / tokens_per_word), int(max_length * 0.7 / tokens_per_word)
    with open(paths["sft.jsonl"], "w", encoding="utf-8") as f:
        for _ in range(64):
            f.write(json.dumps({"prompt": words(prompt_words), "completion": " " + words(answer_words)},
                               ensure_ascii=False) + "\n")
    with open(paths["pairs.jsonl"], "w", encoding="utf-8") as f:
        for _ in range(64):
            f.write(json.dumps({"prompt": words(prompt_words), "chosen": " " + words(answer_words),
                                "rejected": " " + words(answer_words)}, ensure_ascii=False) + "\n")
    with open(paths["prompts.jsonl"], "w", encoding="utf-8") as f:
        for _ in range(64):
            f.write(json.dumps({"prompt": [{"role": "user", "content": words(prompt_words)}]}, ensure_ascii=False) + "\n")
    with open(paths["rewards.py"], "w", encoding="utf-8") as f:
        f.write(REWARDS)
    paths["tokenizer"] = train_tokenizer([words(20) for _ in range(400)], vocab_size=1024)
    return paths


def build_model(path: str, shape: dict, tokenizer) -> str:
    """Random weights of `shape`, saved in fp32 with the tokenizer, as a hub checkpoint would be."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    config = Qwen2Config(**{k: v for k, v in shape.items() if k != "model_type"}, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def method_config(method: str, precision: str, model: str, data: dict[str, str], output_dir: str, args) -> object:
    from vietnamese_ai.recipes.dpo import DPOConfig
    from vietnamese_ai.recipes.grpo import GRPOConfig
    from vietnamese_ai.recipes.sft import SFTConfig

    common = dict(model_name_or_path=model, output_dir=output_dir, overwrite_output_dir=True, max_steps=args.steps,
                  use_lora=True, lora_r=16, gradient_checkpointing=True, attn_implementation="sdpa",
                  dtype="bfloat16" if precision == "bf16" else "float32", bf16=precision == "bf16",
                  learning_rate=1e-4, logging_steps=1, save_steps=0, disable_tqdm=True, seed=0, warmup_ratio=0.0,
                  lr_scheduler_type="constant")
    if method == "sft":
        return SFTConfig(dataset=data["sft.jsonl"], max_length=args.max_length, per_device_train_batch_size=args.batch,
                         **common)
    if method == "dpo":
        return DPOConfig(dataset=data["pairs.jsonl"], max_length=args.max_length,
                         per_device_train_batch_size=args.batch, **common)
    return GRPOConfig(dataset=data["prompts.jsonl"], reward=f"python:{data['rewards.py']}:even_tokens",
                      num_generations=4, per_device_train_batch_size=args.batch, max_prompt_length=args.max_length // 4,
                      max_completion_length=args.completion_length, sampling_batch_size=args.batch,
                      log_completions=False, **common)


def run_one(method: str, precision: str, model: str, data: dict[str, str], work: str, args, shape, device: str,
            peak: float | None) -> dict:
    import torch

    from vietnamese_ai.estimate import estimate_memory
    from vietnamese_ai.recipes.dpo import run_dpo
    from vietnamese_ai.recipes.grpo import run_grpo
    from vietnamese_ai.recipes.sft import run_sft

    config = method_config(method, precision, model, data, os.path.join(work, f"{method}-{precision}"), args)
    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = {"sft": run_sft, "dpo": run_dpo, "grpo": run_grpo}[method](config)
    seconds = time.perf_counter() - start
    rates = result.series("tokens_per_second")
    tokens_per_second = statistics.median(rates[1:] or rates)
    seq_len = args.max_length if method == "sft" else 2 * args.max_length if method == "dpo" else \
        args.max_length // 4 + args.completion_length
    flops = model_flops_per_token(shape, seq_len, lora=True)
    row = {"method": method, "precision": precision, "steps": result.global_step, "seconds": round(seconds, 2),
           "losses": result.series("loss"), "tokens_per_second": round(tokens_per_second, 1),
           "mfu": round(tokens_per_second * flops / peak, 4) if peak and precision == "bf16" else None,
           "estimate_bytes": estimate_memory(method, config, shape, device=device).peak_bytes_per_device}
    if device == "cuda":
        row["peak_bytes"] = torch.cuda.max_memory_allocated()
        row["peak_over_estimate"] = round(row["peak_bytes"] / row["estimate_bytes"], 3)
    del result
    return row


def compare_losses(rows: list[dict]) -> dict:
    """Per method: the largest per-step |bf16 - fp32| / |fp32|, and whether it is within tolerance."""
    out = {}
    for method in ("sft", "dpo", "grpo"):
        bf16, fp32 = ([r["losses"] for r in rows if r["method"] == method and r["precision"] == p] for p in ("bf16", "fp32"))
        if not bf16 or not fp32:
            continue
        finite = all(v == v and abs(v) != float("inf") for v in bf16[0] + fp32[0])
        if method not in LOSS_TOLERANCE:
            out[method] = {"finite": finite, "ok": finite}
            continue
        worst = max(abs(a - b) / max(abs(b), 1e-8) for a, b in zip(bf16[0], fp32[0]))
        out[method] = {"max_relative_difference": round(worst, 5), "tolerance": LOSS_TOLERANCE[method],
                       "ok": finite and worst <= LOSS_TOLERANCE[method]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU, a few steps (the test suite)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: 8 on a GPU, 2 in the smoke mode)")
    parser.add_argument("--work", help="working directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--methods", default="sft,dpo,grpo")
    args = parser.parse_args(argv)
    import torch

    from vietnamese_ai.estimate import ModelShape

    device = "cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.cpu_smoke:
        log("no CUDA device: give --cpu-smoke to run the shortened mode on CPU")
        return 2
    shape_dict = SMOKE if args.cpu_smoke else QWEN25_05B
    args.steps = args.steps or (2 if args.cpu_smoke else 8)
    args.max_length, args.completion_length, args.batch = (64, 16, 4) if args.cpu_smoke else (512, 128, 8)
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = peak_flops(device_name) if device == "cuda" else None
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or scratch
        os.makedirs(work, exist_ok=True)
        start = time.perf_counter()
        data = write_workload(work, args.max_length, args.completion_length)
        model = build_model(os.path.join(work, "model"), shape_dict, data.pop("tokenizer"))
        shape = ModelShape.from_config(shape_dict)
        log(f"{device_name}: a {shape.params / 1e6:.1f}M-parameter model built in {time.perf_counter() - start:.1f}s")
        rows = []
        for method in args.methods.split(","):
            for precision in ("bf16", "fp32"):
                rows.append(run_one(method, precision, model, data, work, args, shape, device, peak))
                log(f"{method} {precision}: {rows[-1]['tokens_per_second']} tokens/s, losses {rows[-1]['losses']}")
        losses = compare_losses(rows)
    summary = {"device": device_name, "torch": torch.__version__, "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
               "params": shape.params, "peak_bf16_flops": peak, "steps": args.steps, "runs": rows,
               "loss_checks": losses, "seconds": round(time.perf_counter() - start, 1),
               "ok": all(check["ok"] for check in losses.values())}
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
