"""Candidate generation: our batched sampler against a loop of one `generate` call per prompt (as
tutorial RLAIF scripts do).

    python benchmarks/generation_speed.py [--prompts 128] [--max-new-tokens 64]

Same model (the benchmark's Qwen2-architecture model, hidden 256, 4 layers), same prompts and the
generation settings of such scripts (sampling, top_k 0, top_p 1.0). The model is untrained, so it almost
never stops early: both sides generate about max_new_tokens tokens per response; the table shows the
generated tokens too. Both run in this process, one after the other, after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import WORK, build_model, sentence, table, word_count  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    import torch

    from vietnamese_ai.data.tokenize import prompt_ids
    from vietnamese_ai.data.types import Message
    from vietnamese_ai.models.generation import generate
    from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer

    rng = random.Random(0)
    texts = [f"Câu hỏi {i}: {sentence(rng, word_count(rng, 'lognormal'))}?" for i in range(args.prompts)]
    path = build_model(os.path.join(WORK, "model-h256-l4"), texts)
    model, tokenizer = load_causal_lm(path).eval(), load_tokenizer(path)
    prompts = [[Message("user", t)] for t in texts]
    kwargs = {"do_sample": True, "top_k": 0, "top_p": 1.0, "max_new_tokens": args.max_new_tokens,
              "pad_token_id": tokenizer.pad_token_id}

    def per_prompt_loop(items):
        outputs = []
        for p in items:
            ids = torch.tensor([prompt_ids(tokenizer, p)])
            new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)[0, ids.shape[1]:]
            stop = (new == tokenizer.eos_token_id).nonzero()
            outputs.append(int(stop[0]) + 1 if len(stop) else len(new))
        return outputs

    def batched(items):
        stats = []
        generate(model, tokenizer, items, max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
                 batch_size=args.batch_size, seed=0, stats=stats)
        return [stats[0].tokens]

    per_prompt_loop(prompts[:4]), batched(prompts[:4])  # warm-up
    rows, results = [], {}
    for name, fn in (("per-prompt loop: one generate() per prompt", per_prompt_loop),
                     (f"vietnamese-ai generate (batch {args.batch_size}, KV cache, left padding)", batched)):
        start = time.perf_counter()
        lengths = fn(prompts)
        seconds = time.perf_counter() - start
        results[name] = len(prompts) / seconds
        rows.append((name, f"{len(prompts) / seconds:.1f}", f"{sum(lengths) / seconds:,.0f}", f"{seconds:.1f}"))
    base = next(iter(results.values()))
    rows = [r + (f"{results[r[0]] / base:.1f}x",) for r in rows]
    print(f"\n{args.prompts} prompts, up to {args.max_new_tokens} new tokens, {torch.get_num_threads()} CPU threads\n")
    print(table(rows, ("run", "responses/s", "tokens/s", "seconds", "speed-up")))


if __name__ == "__main__":
    main()
