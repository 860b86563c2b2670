"""Batched sampling with a KV cache and left padding.

Prompts are sorted by length before batching so that a batch pads as little as possible, then the
outputs are put back in the caller's order. Sampling is seeded per batch from a forked random
generator, so a call is reproducible and leaves the caller's random state exactly as it was.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch

from vietnamese_ai.data.tokenize import prompt_ids
from vietnamese_ai.data.types import Conversation
from vietnamese_ai.models.forward import unwrap
from vietnamese_ai.models.reference import evaluation_mode
from vietnamese_ai.progress import tracked


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


@dataclass
class Sample:
    """One sampled response: the token ids exactly as sampled (online RL trains on these, not on a
    re-tokenisation of the text), and their text."""

    token_ids: list[int]     # up to and including EOS; nothing after it
    text: str                # decoded without special tokens, not stripped
    finished: bool           # ended with EOS (False: cut at max_new_tokens)


@contextlib.contextmanager
def own_random_stream(seed: int, device: torch.device):
    """Sampling draws from the global generator (transformers' generate has no generator argument):
    fork it, seed the fork, and give the caller its own state back afterwards, so that generating
    never moves the caller's dropout or data-order randomness."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def generate_ids(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, pad: int,
                 eos: int | None, temperature: float, top_p: float, top_k: int, seed: int,
                 streamer: Any = None) -> torch.Tensor:
    """One `generate` call, greedy when temperature == 0, drawing from its own stream seeded by `seed`
    (the call `sample` makes per batch and `vietnamese-ai chat` per answer, with a streamer)."""
    sampling = temperature > 0
    with own_random_stream(seed, input_ids.device):
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                              do_sample=sampling, pad_token_id=pad, eos_token_id=eos, streamer=streamer,
                              **({"temperature": temperature, "top_p": top_p, "top_k": top_k} if sampling else {}))


@torch.no_grad()
def sample(model: Any, tokenizer: Any, prompts: list[str | Conversation], max_new_tokens: int = 64,
           temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, batch_size: int = 32,
           seed: int = 0, progress: bool = False, stats: list[GenerationStats] | None = None) -> list[Sample]:
    """One sampled response per prompt (greedy when temperature == 0), reproducible from `seed`."""
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"sampling: temperature must be >= 0, top_p in (0, 1], top_k >= 0 "
                         f"(got {temperature}, {top_p}, {top_k})")
    model = unwrap(model)
    device = next(model.parameters()).device
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    samples: list[Sample | None] = [None] * len(prompts)
    start = time.perf_counter()
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    generated_tokens = 0
    with evaluation_mode(model):
        batches = range(0, len(order), batch_size)
        for b in tracked(batches, len(batches), "generate", disable=not progress):
            index = order[b:b + batch_size]
            input_ids, attention_mask = left_pad([encoded[i] for i in index], pad)
            output = generate_ids(model, input_ids.to(device), attention_mask.to(device), max_new_tokens, pad, eos,
                                  temperature, top_p, top_k, seed + b)
            for row, i in enumerate(index):
                tokens = output[row, input_ids.shape[1]:].tolist()
                finished = eos in tokens
                tokens = tokens[:tokens.index(eos) + 1] if finished else tokens
                generated_tokens += len(tokens)
                samples[i] = Sample(tokens, tokenizer.decode(tokens, skip_special_tokens=True), finished)
    if stats is not None:
        stats.append(GenerationStats(len(prompts), time.perf_counter() - start, generated_tokens))
    return samples  # type: ignore[return-value]


def generate(model: Any, tokenizer: Any, prompts: list[str | Conversation], **kwargs: Any) -> list[str]:
    """The text of `sample`'s responses (same arguments)."""
    return [s.text for s in sample(model, tokenizer, prompts, **kwargs)]
