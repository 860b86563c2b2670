"""Fingerprints of model weights and tokenizers, for cache keys.

A cache key must change whenever the cached value could. For weights that means every bit of every
tensor, not a summary statistic: two models can share a sum and a sum of squares (a permutation, a
sign flip, a re-trained model with the same statistics). `weights_fingerprint` reads each tensor's
raw bits as integers and takes two position-weighted sums in wrapping 64-bit arithmetic:

    checksum = sum_i bits_i * w_i  (mod 2^64),   w_i = (i * K + C) | 1  (odd)

Changing any element changes the sum (an odd weight times a non-zero difference below 2^64 is never
0 mod 2^64), moving a value to another position changes it, and because wrapping addition is
associative the result is the same on CPU and GPU whatever order the reduction takes. It runs on the
device the weights are on, in chunks, so a 7B model is fingerprinted without copying it to the CPU.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

_INTEGER_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
# Two pairs of 64-bit odd constants (the golden-ratio and a splitmix64 multiplier), as signed int64.
_KEYS = ((0x9E3779B97F4A7C15 - 2**64, 0x632BE59BD9B4E019), (0xBF58476D1CE4E5B9 - 2**64, 0x94D049BB133111EB - 2**64))
_CHUNK = 1 << 22


def tensor_checksum(tensor: torch.Tensor) -> tuple[int, int]:
    """Two position-weighted sums of the tensor's raw bits, modulo 2^64."""
    flat = tensor.detach().contiguous().reshape(-1)
    bits = flat.view(_INTEGER_VIEW[flat.element_size()]) if flat.dtype != torch.bool else flat.to(torch.uint8)
    sums = []
    for multiplier, offset in _KEYS:
        total = torch.zeros((), dtype=torch.int64, device=flat.device)
        for start in range(0, bits.numel(), _CHUNK):
            chunk = bits[start:start + _CHUNK].to(torch.int64)
            index = torch.arange(start, start + chunk.numel(), dtype=torch.int64, device=flat.device)
            weights = (index * multiplier + offset) | 1
            total = total + (chunk * weights).sum()
        sums.append(int(total.item()) & (2**64 - 1))
    return sums[0], sums[1]


def _canonical_name(name: str) -> str:
    """The same weight under PEFT's wrapper names as in the plain model, so that a LoRA-wrapped model
    and the plain one share a fingerprint when the adapters are left out."""
    return name.replace("base_model.model.", "", 1).replace(".base_layer.", ".")


@torch.no_grad()
def weights_fingerprint(model: Any, include_adapters: bool = True) -> str:
    """sha256 over the architecture config and every tensor's name, shape, dtype and checksum.
    `include_adapters=False` leaves LoRA tensors out (a reference that runs with its adapters off)."""
    from vietnamese_ai.models.forward import base_model, unwrap

    h = hashlib.sha256()
    config = getattr(base_model(model), "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        h.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in unwrap(model).state_dict().items():
        if not include_adapters and "lora_" in name:
            continue
        h.update(f"{_canonical_name(name)}|{tuple(tensor.shape)}|{tensor.dtype}|{tensor_checksum(tensor)}\n".encode())
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of everything that decides how text becomes ids: the full tokenizer definition (fast
    tokenizers), else the vocabulary, plus special tokens and the chat template."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    elif hasattr(tokenizer, "get_vocab"):
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    special = {k: str(getattr(tokenizer, k, None)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    h.update(json.dumps(special, sort_keys=True).encode())
    h.update(str(getattr(tokenizer, "chat_template", None)).encode())
    return h.hexdigest()
