"""Batched sampling with a KV cache and left padding.

Prompts are sorted by length before batching so that a batch pads as little as possible, then the
outputs are put back in the caller's order. Sampling is seeded per batch, so a call is reproducible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from vietnamese_ai.data.tokenize import prompt_ids
from vietnamese_ai.data.types import Conversation
from vietnamese_ai.models.forward import unwrap


@dataclass
class GenerationStats:
    responses: int
    seconds: float
    tokens: int = 0  # generated tokens, up to and including each response's EOS

    @property
    def responses_per_second(self) -> float:
        return self.responses / max(self.seconds, 1e-9)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape: returns input_ids (B, L) and attention_mask (B, L), padding on the left.

    >>> left_pad([[5, 6], [7]], pad_id=0)
    (tensor([[5, 6],
            [0, 7]]), tensor([[1, 1],
            [0, 1]]))
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: list[str | Conversation], max_new_tokens: int = 64,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, batch_size: int = 32,
             seed: int = 0, progress: bool = False, stats: list[GenerationStats] | None = None) -> list[str]:
    """One sampled response per prompt (greedy when temperature == 0), decoded without special tokens."""
    model = unwrap(model)
    device = next(model.parameters()).device
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    responses: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generated_tokens = 0
    batches = range(0, len(order), batch_size)
    for b in tqdm(batches, desc="generate", disable=not progress, leave=False):
        index = order[b:b + batch_size]
        input_ids, attention_mask = left_pad([encoded[i] for i in index], pad)
        torch.manual_seed(seed + b)
        sampling = temperature > 0
        output = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens, do_sample=sampling, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
            **({"temperature": temperature, "top_p": top_p, "top_k": top_k} if sampling else {}),
        )
        new_tokens = output[:, input_ids.shape[1]:]
        finished = (new_tokens == tokenizer.eos_token_id).cumsum(-1) > 0   # EOS and what generate pads after it
        generated_tokens += int(new_tokens.numel() - finished.sum() + (finished.any(-1)).sum())
        for row, i in enumerate(index):
            responses[i] = tokenizer.decode(new_tokens[row], skip_special_tokens=True).strip()
    model.train(was_training)
    if stats is not None:
        stats.append(GenerationStats(len(prompts), time.perf_counter() - start, generated_tokens))
    return responses
