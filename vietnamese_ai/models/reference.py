"""The reference model of the preference losses.

Three sources, chosen by the recipe:
- `FrozenReference`: a separate frozen model (ref_model_name_or_path, or the starting policy itself
  before training begins);
- `AdapterReference`: with LoRA, the policy with its adapters switched off: no second copy in memory;
- `precompute`: reference log-probabilities computed once before training and cached on disk, keyed by
  the tokenised data and a fingerprint of the reference weights, so that training runs only the
  policy (and a second run on the same data and model skips the reference entirely).

Reference passes run in eval mode (no dropout) and without gradients.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.losses import sequence_logps
from vietnamese_ai.models.forward import batch_target_logps, unwrap

log = logging.getLogger("vietnamese_ai")


def response_logps(model: Any, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability and mean logit of each group (response) of the batch.

    Shape: returns (num_groups,) log-probs and (num_groups,) mean logits (over tokens and vocabulary)
    """
    token_logps, logits = batch_target_logps(model, batch)
    mean_logits = logits.detach().float().mean(-1).index_select(0, batch.target_index)
    lengths = batch.response_lengths()
    return (sequence_logps(token_logps, batch.target_groups, batch.num_groups),
            sequence_logps(mean_logits, batch.target_groups, batch.num_groups) / lengths.clamp(min=1))


@contextlib.contextmanager
def evaluation_mode(model: Any):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class FrozenReference:
    """A model used as the reference, moved to the batch's device on first use. `freeze=False` when it
    is the policy itself, read once before training starts (precomputed reference log-probs)."""

    def __init__(self, model: Any, freeze: bool = True):
        self.model = model
        if freeze:
            for param in model.parameters():
                param.requires_grad_(False)

    def logps(self, batch: PackedBatch) -> torch.Tensor:
        device = batch.input_ids.device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        with evaluation_mode(self.model):
            return response_logps(self.model, batch)[0]


class AdapterReference:
    """The LoRA policy with its adapters disabled: the base model, without holding a second copy."""

    def __init__(self, policy: Any):
        self.policy = policy

    def logps(self, batch: PackedBatch) -> torch.Tensor:
        model = unwrap(self.policy)  # call the PEFT model directly: a reference pass needs no DDP hooks
        with evaluation_mode(model), model.disable_adapter():
            return response_logps(model, batch)[0]


Reference = FrozenReference | AdapterReference


def model_fingerprint(model: Any) -> str:
    """A cheap identity of the weights: the config plus, per tensor, its name, shape, sum and sum of squares."""
    h = hashlib.sha256()
    config = getattr(unwrap(model), "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        h.update(config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, tensor in unwrap(model).state_dict().items():
            t = tensor.detach().double()
            h.update(f"{name}{tuple(t.shape)}{t.sum().item():.10e}{(t * t).sum().item():.10e}".encode())
    return h.hexdigest()


def cache_dir() -> str:
    root = os.environ.get("VIETNAMESE_AI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vietnamese_ai")
    return os.path.join(root, "ref_logps")


def data_fingerprint(token_lists: Sequence[Sequence[list[int] | None]]) -> str:
    return hashlib.sha256(json.dumps(token_lists, separators=(",", ":")).encode()).hexdigest()


def precompute(reference: Reference, examples: Sequence[Any], collate: Callable[[list[Any]], PackedBatch],
               groups_per_example: int, batch_size: int, key: str, device: torch.device,
               autocast_dtype: torch.dtype | None = None, progress: bool = True) -> torch.Tensor:
    """Reference log-probabilities of every example's responses, from the cache when it has them.

    `collate` lays out examples without reference inputs; group g * groups_per_example + k is
    response k of example g. Shape: returns (len(examples), groups_per_example) float32 on CPU.
    """
    path = os.path.join(cache_dir(), f"{key[:32]}.safetensors")
    if os.path.isfile(path):
        cached = load_file(path)["logps"]
        if cached.shape == (len(examples), groups_per_example):
            log.info("reference log-probs: loaded from cache %s", path)
            return cached
    out = torch.empty(len(examples), groups_per_example)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc="reference log-probs", disable=not progress, leave=False):
        chunk = list(examples[start:start + batch_size])
        with autocast:
            logps = reference.logps(collate(chunk).to(device))
        out[start:start + len(chunk)] = logps.float().view(len(chunk), groups_per_example).cpu()
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file({"logps": out}, tmp)
    os.replace(tmp, path)  # atomic: concurrent processes never read a half-written file
    log.info("reference log-probs: computed for %d examples, cached in %s", len(examples), path)
    return out
