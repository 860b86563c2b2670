"""The reference model of the preference losses.

Three sources, chosen by the recipe:
- `FrozenReference`: a separate frozen model (ref_model_name_or_path, or the starting policy itself
  before training begins);
- `AdapterReference`: with LoRA, the policy with its adapters switched off: no second copy in memory;
- `precompute`: reference log-probabilities computed once before training and cached on disk, keyed by
  everything they depend on (the token ids, every bit of the reference weights, dtype and mixed
  precision, tokenizer, max_length, layout), so that training runs only the policy, and a second run
  on the same data and model skips the reference entirely while any other run misses. With several
  processes each computes a share of the batches and all gather the whole table (`precompute`).

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
from safetensors.torch import load_file, save

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.files import atomic_file
from vietnamese_ai.losses import sequence_logps
from vietnamese_ai.models.forward import batch_target_logps, unwrap
from vietnamese_ai.models.prompt_cache import rollout_logps
from vietnamese_ai.progress import tracked

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


def summed_logps(model: Any, batch: PackedBatch) -> torch.Tensor:
    """Summed log-probability of each group (response) of the batch, without `response_logps`'s mean
    logits (a pass over every kept logit that reference passes and scorers would discard).

    Shape: returns (num_groups,)
    """
    token_logps, _ = batch_target_logps(model, batch)
    return sequence_logps(token_logps, batch.target_groups, batch.num_groups)


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
            return summed_logps(self.model, batch)

    def token_logps(self, batch: Any, temperature: float = 1.0) -> torch.Tensor:
        """Per-target log-probs at `temperature` (online RL's KL), for either rollout layout. Shape: (P,)"""
        device = batch.targets.device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        with evaluation_mode(self.model):
            return rollout_logps(self.model, batch, temperature)[0]


class AdapterReference:
    """The LoRA policy with its adapters disabled: the base model, without holding a second copy."""

    def __init__(self, policy: Any):
        self.policy = policy

    def logps(self, batch: PackedBatch) -> torch.Tensor:
        model = unwrap(self.policy)  # call the PEFT model directly: a reference pass needs no DDP hooks
        with evaluation_mode(model), model.disable_adapter():
            return summed_logps(model, batch)

    def token_logps(self, batch: Any, temperature: float = 1.0) -> torch.Tensor:
        model = unwrap(self.policy)
        with evaluation_mode(model), model.disable_adapter():
            return rollout_logps(model, batch, temperature)[0]


Reference = FrozenReference | AdapterReference


def cache_dir() -> str:
    root = os.environ.get("VIETNAMESE_AI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vietnamese_ai")
    return os.path.join(root, "ref_logps")


def cache_key(**parts: Any) -> str:
    """sha256 of every input the cached log-probs depend on (see recipes.preference for the parts)."""
    return hashlib.sha256(json.dumps({"format": 3, **parts}, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_cache(path: str, shape: tuple[int, int]) -> torch.Tensor | None:
    if not os.path.isfile(path):
        return None
    try:
        cached = load_file(path)["logps"]
    except Exception as e:  # a damaged cache file is a miss, never an error
        log.warning("reference log-probs: ignoring unreadable cache file %s (%s)", path, type(e).__name__)
        return None
    return cached if cached.shape == shape else None


def _all_gather(value: Any, world_size: int) -> list[Any]:
    if world_size == 1:
        return [value]
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def precompute(reference: Reference, examples: Sequence[Any], collate: Callable[[list[Any]], PackedBatch],
               groups_per_example: int, batch_size: int, key: str, device: torch.device,
               autocast_dtype: torch.dtype | None = None, progress: bool = True, rank: int = 0,
               world_size: int = 1, writes_cache: bool = True) -> torch.Tensor:
    """Reference log-probabilities of every example's responses, from the cache when it has them.

    `collate` lays out examples without reference inputs; group g * groups_per_example + k is
    response k of example g. With several processes (`rank` of `world_size`), each computes the batches
    rank, rank + world_size, ... of the one-process batching (batch_size examples each, in order), so
    every value is computed in the very batch one process computes it in; the shares are then gathered,
    and every process returns the whole table. Only processes with `writes_cache` write the cache file.
    The reference must be a full copy on every process (it is read before the policy is sharded).
    Shape: returns (len(examples), groups_per_example) float32 on CPU.
    """
    path = os.path.join(cache_dir(), f"{key}.safetensors")
    shape = (len(examples), groups_per_example)
    cached = _read_cache(path, shape)
    # Every process must take the same branch (the computing one ends in a collective), so a table
    # cached on one machine's disk but not on another's is computed by all.
    if all(_all_gather(cached is not None, world_size)):
        log.info("reference log-probs: loaded from cache %s", path)
        return cached
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    own = range(rank * batch_size, len(examples), world_size * batch_size)
    share: list[tuple[int, torch.Tensor]] = []
    for start in tracked(own, len(own), "reference log-probs", disable=not progress):
        chunk = list(examples[start:start + batch_size])
        with autocast:
            logps = reference.logps(collate(chunk).to(device))
        share.append((start, logps.float().view(len(chunk), groups_per_example).cpu()))
    out = torch.empty(shape)
    for start, logps in (part for shares in _all_gather(share, world_size) for part in shares):
        out[start:start + len(logps)] = logps
    if writes_cache:
        _write_cache(path, out, sum(len(logps) for _, logps in share))
    if world_size > 1:  # the file is complete before any process goes on to look for it (the next run's lookup)
        torch.distributed.barrier()
    return out


def _write_cache(path: str, table: torch.Tensor, computed_here: int) -> None:
    try:
        with atomic_file(path, "wb") as f:  # concurrent processes never read a half-written file
            f.write(save({"logps": table}))
        log.info("reference log-probs: computed for %d examples (%d on this process), cached in %s",
                 len(table), computed_here, path)
    except OSError as e:  # an unwritable cache costs a recomputation next time, nothing more
        log.warning("reference log-probs: could not write the cache %s (%s)", path, e.strerror or e)
