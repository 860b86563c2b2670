"""Rollouts of online RL: what was sampled and scored, and how it is laid out for training.

A rollout phase samples G completions for each of N prompts. `Rollout` holds them on this process,
prompt-major (completion k answers prompt k // G), as plain lists so that a checkpoint can store it
as JSON. A micro-batch of completions becomes one `PackedBatch` in the layout DPO already uses: each
prompt is a trunk computed once, and each of its completions a branch that sees the prompt and itself;
the model's logits are needed only at completion positions. The per-token values the loss needs
(old and reference log-probs, which tokens count) ride along in a `RolloutBatch`, aligned with the
batch's target list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from vietnamese_ai.data.layout import IGNORE, PackedBatch, Piece, Sequence, layout


@dataclass
class Rollout:
    """One rollout phase on this process. N prompts, G completions each, M = N * G completions."""

    group_size: int                           # G
    prompt_ids: list[list[int]]               # [N][prompt length]
    completion_ids: list[list[int]]           # [M][completion length], up to and including EOS
    finished: list[bool]                      # [M] the completion ended with EOS
    rewards: list[float]                      # [M] total reward the advantages were computed from
    advantages: list[float]                   # [M]
    micro_batches: list[list[int]]            # completion indices of each micro-batch, in training order
    old_logps: list[list[float]] | None = None  # [M][completion length] when sampled, at the sampling temperature;
                                                # None: trained on-policy (the current log-probs, detached)
    ref_logps: list[list[float]] | None = None  # [M][completion length] under the reference (KL); None: no KL
    # PPO (a value head): per token, the value at sampling time, the GAE advantage and the return
    values: list[list[float]] | None = None
    token_advantages: list[list[float]] | None = None
    returns: list[list[float]] | None = None

    def prompt_of(self, completion: int) -> int:
        return completion // self.group_size

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Rollout":
        return cls(**data)


@dataclass
class RolloutBatch:
    """The rollout values of one micro-batch, aligned with its PackedBatch.

    Shape:
        advantages: (C,) one per completion of the micro-batch (the batch's groups)
        token_mask: (P,) 1.0 where a target token counts in the loss, 0.0 where it does not
        old_logps, ref_logps, old_values, token_advantages, returns: (P,) per target token, in the
            batch's target order, or None
    """

    advantages: torch.Tensor
    token_mask: torch.Tensor
    old_logps: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    token_advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "RolloutBatch":
        return RolloutBatch(**{k: None if v is None else v.to(device) for k, v in self.__dict__.items()})


def completion_sequences(rollout: Rollout, indices: list[int], share: bool) -> list[Sequence]:
    """Completions `indices` as sequences; completion indices[g] sums into group g. With `share`, each
    prompt is one trunk with a branch per completion (in the order they appear in `indices`)."""
    if not share:
        return [[Piece(rollout.prompt_ids[rollout.prompt_of(k)], [IGNORE] * len(rollout.prompt_ids[rollout.prompt_of(k)])),
                 Piece(rollout.completion_ids[k], list(rollout.completion_ids[k]), 0, g)] for g, k in enumerate(indices)]
    by_prompt: dict[int, list[int]] = {}
    for g, k in enumerate(indices):
        by_prompt.setdefault(rollout.prompt_of(k), []).append(g)
    sequences = []
    for prompt, groups in by_prompt.items():
        ids = rollout.prompt_ids[prompt]
        branches = [Piece(rollout.completion_ids[indices[g]], list(rollout.completion_ids[indices[g]]), b + 1, g)
                    for b, g in enumerate(groups)]
        sequences.append([Piece(ids, [IGNORE] * len(ids)), *branches])
    return sequences


def align_to_targets(batch: PackedBatch, per_completion: list[list[float]]) -> torch.Tensor:
    """Per-token values listed completion by completion (group order), rearranged into the batch's
    target order. Shape: returns (P,) float32"""
    flat = torch.tensor([v for values in per_completion for v in values], dtype=torch.float32)
    if flat.numel() != batch.targets.numel():
        raise ValueError(f"{flat.numel()} per-token values for {batch.targets.numel()} targets")
    out = torch.empty_like(flat)
    out[torch.argsort(batch.target_groups, stable=True)] = flat
    return out


def rollout_batch(rollout: Rollout, indices: list[int], pack: bool, share: bool, pad_token_id: int, pair_cost: float,
                  count_tokens: bool, mask_truncated: bool, cache_prompts: bool = False) -> Any:
    """Completions `indices` laid out for one forward pass (a CachedPromptBatch with `cache_prompts`,
    else a PackedBatch), with their RolloutBatch in `extras["rollout"]`. The loop averages the loss
    over tokens (`count_tokens`, the dapo aggregation) or over completions; with `mask_truncated`, a
    completion cut without EOS counts for nothing."""
    if cache_prompts:
        batch = cached_prompt_batch(rollout, indices, pad_token_id)
    else:
        batch = layout(completion_sequences(rollout, indices, share), pack=pack, num_groups=len(indices),
                       pad_token_id=pad_token_id, pair_cost=pair_cost)
    keep = [0.0 if mask_truncated and not rollout.finished[k] else 1.0 for k in indices]
    token_mask = torch.tensor(keep)[batch.target_groups]
    batch.num_items = int(token_mask.sum()) if count_tokens else len(indices)
    pick = lambda values: None if values is None else align_to_targets(batch, [values[k] for k in indices])  # noqa: E731
    batch.extras["rollout"] = RolloutBatch(
        advantages=torch.tensor([rollout.advantages[k] for k in indices], dtype=torch.float32), token_mask=token_mask,
        old_logps=pick(rollout.old_logps), ref_logps=pick(rollout.ref_logps), old_values=pick(rollout.values),
        token_advantages=pick(rollout.token_advantages), returns=pick(rollout.returns))
    return batch


@dataclass
class CachedPromptBatch:
    """Completions laid out for a forward pass in two parts: the prompts once (left-padded rows),
    whose keys and values are then shared, by index, with their completions (right-padded rows).

    Compared with one row per prompt holding all its completions as branches, no completion token
    ever computes attention scores against another completion's tokens, which a dense masked row does
    (and throws away). models/prompt_cache.py runs it.

    Shape:
        prompt_ids, prompt_mask: (N, Lp) long, left-padded
        owner: (C,) long, the prompt row of each completion
        completion_ids, completion_mask: (C, Lc) long, right-padded
        targets: (P,) long, every completion token, completion by completion
        target_groups: (P,) long, the completion (group) of each target
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    owner: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    targets: torch.Tensor
    target_groups: torch.Tensor
    num_groups: int
    num_tokens: int
    num_items: int
    extras: dict[str, Any]

    def to(self, device: torch.device | str) -> "CachedPromptBatch":
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items() if k != "extras"}
        return CachedPromptBatch(**moved, extras={k: v.to(device) for k, v in self.extras.items()})


def cached_prompt_batch(rollout: Rollout, indices: list[int], pad_token_id: int) -> CachedPromptBatch:
    """Completions `indices` (group g = indices[g]) as a CachedPromptBatch."""
    prompts: dict[int, int] = {}
    for k in indices:
        prompts.setdefault(rollout.prompt_of(k), len(prompts))
    prompt_rows = [rollout.prompt_ids[p] for p in prompts]
    width = max(len(p) for p in prompt_rows)
    prompt_ids = torch.full((len(prompt_rows), width), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    for r, ids in enumerate(prompt_rows):
        prompt_ids[r, width - len(ids):], prompt_mask[r, width - len(ids):] = torch.tensor(ids), 1
    completions = [rollout.completion_ids[k] for k in indices]
    length = max(len(c) for c in completions)
    completion_ids = torch.full((len(indices), length), pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros_like(completion_ids)
    for r, ids in enumerate(completions):
        completion_ids[r, :len(ids)], completion_mask[r, :len(ids)] = torch.tensor(ids), 1
    targets = torch.tensor([t for c in completions for t in c], dtype=torch.long)
    groups = torch.tensor([g for g, c in enumerate(completions) for _ in c], dtype=torch.long)
    owner = torch.tensor([prompts[rollout.prompt_of(k)] for k in indices], dtype=torch.long)
    tokens = sum(len(p) for p in prompt_rows) + len(targets)
    return CachedPromptBatch(prompt_ids, prompt_mask, owner, completion_ids, completion_mask, targets, groups,
                             len(indices), tokens, len(indices), {})
