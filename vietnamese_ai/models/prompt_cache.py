"""The forward pass over a CachedPromptBatch: prompts once, completions on their prompts' KV cache.

    1. The prompts run through the model (left-padded, `use_cache=True`); only the last prompt
       position's logits are kept: it predicts each completion's first token.
    2. The cache is indexed by each completion's prompt (`batch_select_indices`: a gather, so that
       gradients flow back into the prompt pass), and the completions run on top of it, right-padded,
       with position ids continuing from their prompt's length; logits are kept only where a
       completion token is predicted.

Gradients reach the prompt tokens through the cached keys and values, so the result (values and
gradients) is that of each completion computed after its prompt, in one sequence. The prompt pass
calls the model without its data-parallel wrapper: the wrapper is called once per micro-batch, as it
expects, and the parameters' gradients from both passes are summed before it reduces them.

Whether a model computes this exactly (a cache that supports it, positions taken from position_ids) is
checked by models.exactness before training; gradient checkpointing turns transformers' cache off in
training, so it rules this path out.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from vietnamese_ai.data.rollout import CachedPromptBatch
from vietnamese_ai.models.forward import cache_argument, returned_cache, unwrap


def cached_prompt_logits(model: Any, batch: CachedPromptBatch,
                         hidden: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The next-token logits that predict every target of the batch, in target order. With `hidden`
    (the list that forward.head_inputs fills), its two entries are replaced by one: the final hidden
    states at the same positions, in the same order.

    Shape: returns (P, V); hidden becomes [(P, H)]
    """
    positions = (batch.prompt_mask.cumsum(-1) - 1).clamp(min=0)
    first = unwrap(model)(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, position_ids=positions,
                          use_cache=True, logits_to_keep=1)
    cache = returned_cache(first)
    if cache is None:
        raise RuntimeError("the model returned no cache in training (gradient checkpointing turns it off)")
    cache.batch_select_indices(batch.owner)
    lengths = batch.completion_mask.sum(-1)
    width = batch.completion_ids.shape[1]
    keep = torch.arange(width, device=lengths.device)[None, :] < (lengths - 1)[:, None]
    rest = model(input_ids=batch.completion_ids,
                 attention_mask=torch.cat([batch.prompt_mask.index_select(0, batch.owner), batch.completion_mask], -1),
                 position_ids=batch.prompt_mask.sum(-1).index_select(0, batch.owner)[:, None]
                 + torch.arange(width, device=lengths.device)[None, :],
                 use_cache=True, logits_to_keep=keep, **{cache_argument(model): cache}).logits
    rest = rest.reshape(-1, rest.shape[-1])
    # Completion g's targets are predicted by: the last prompt position, then its own positions 0 .. len-2.
    count = int(lengths.shape[0])
    starts = torch.cumsum(lengths - 1, 0) - (lengths - 1)
    index = torch.cat([torch.cat([g.view(1), count + starts[g] + torch.arange(int(lengths[g]) - 1, device=lengths.device)])
                       for g in torch.arange(count, device=lengths.device)])
    if hidden is not None:
        first_hidden, rest_hidden = hidden
        width = first_hidden.shape[-1]
        hidden[:] = [torch.cat([first_hidden[:, -1].index_select(0, batch.owner),
                                rest_hidden.reshape(-1, width)]).index_select(0, index)]
    return torch.cat([first.logits[:, -1].index_select(0, batch.owner), rest]).index_select(0, index)


def rollout_logps(model: Any, batch: Any, temperature: float = 1.0,
                  entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-target log-probs at `temperature` for either layout of a rollout micro-batch (a PackedBatch
    with branches, or a CachedPromptBatch), and, when asked, each target position's entropy (no grad).

    Shape: returns (P,) float32 and (P,) float32 or None
    """
    logps, entropies, _ = rollout_forward(model, batch, temperature, entropy)
    return logps, entropies


def rollout_forward(model: Any, batch: Any, temperature: float = 1.0, entropy: bool = False,
                    value_head: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                        torch.Tensor | None]:
    """rollout_logps, and with `value_head` the value of every target position from the same pass:
    the head applied to the final hidden state that predicts the target (the state before it).

    Shape: returns (P,) float32, (P,) float32 or None, (P,) float32 or None
    """
    from vietnamese_ai.losses import target_logps
    from vietnamese_ai.models.forward import head_inputs, scaled_target_logps

    capture = head_inputs(model) if value_head is not None else contextlib.nullcontext(None)
    with capture as hidden:
        if isinstance(batch, CachedPromptBatch):
            logits = cached_prompt_logits(model, batch, hidden).float()
            if temperature != 1.0:
                logits = logits / temperature
            index = torch.arange(len(batch.targets), device=logits.device)
            logps, per_position, positions = target_logps(logits, index, batch.targets), logits, index
        else:
            logps, per_position = scaled_target_logps(model, batch, temperature)
            positions = batch.target_index
            if hidden is not None:
                states = hidden[-1]
                states = (states.reshape(-1, states.shape[-1]) if states.shape[:-1].numel() == per_position.shape[0]
                          else states[batch.logits_mask])       # a model that computed logits everywhere
                hidden[:] = [states.index_select(0, positions)]
    values = None
    if value_head is not None:
        values = value_head(hidden[0].to(value_head.weight.dtype)).squeeze(-1).float()
    if not entropy:
        return logps, None, values
    with torch.no_grad():
        logp = torch.log_softmax(per_position, dim=-1)
        entropies = -(logp.exp() * logp).sum(-1)
    return logps, entropies.index_select(0, positions), values
