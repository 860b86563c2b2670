"""Log-probabilities of fixed continuations ("1".."9", "A"/"B") after a context, in one pass.

The context is the trunk and each candidate a branch (data.layout): the context is computed once no
matter how many candidates there are. An LLM judge reads its score distribution this way.
"""

from __future__ import annotations

from typing import Any

import torch

from vietnamese_ai.data.layout import attention_pair_cost, layout
from vietnamese_ai.data.preference import branched_sequences
from vietnamese_ai.models.exactness import choose_layout
from vietnamese_ai.models.forward import base_model
from vietnamese_ai.models.reference import evaluation_mode, summed_logps


def prefix_free(candidates: list[list[int]], eos_token_id: int | None) -> list[list[int]]:
    """Candidates as given when no token sequence is a prefix of another; otherwise each with EOS
    appended, so that P(candidate) means "this and nothing more" (P("1") would include P("10")).

    >>> prefix_free([[5], [6]], eos_token_id=0)
    [[5], [6]]
    >>> prefix_free([[1], [1, 0]], eos_token_id=2)
    [[1, 2], [1, 0, 2]]
    """
    clash = any(a != b and b[:len(a)] == a for a in candidates for b in candidates)
    if not clash:
        return candidates
    if eos_token_id is None:
        raise ValueError("the candidate answers are not prefix-free and the tokenizer has no EOS token to end them")
    return [list(c) + [eos_token_id] for c in candidates]


@torch.no_grad()
def continuation_logps(model: Any, contexts: list[list[int]], candidates: list[list[int]],
                       batch_size: int = 8) -> torch.Tensor:
    """log p(candidate | context) for every context and candidate (summed over candidate tokens).

    Shape: returns (len(contexts), len(candidates)) float32 on CPU
    """
    device = next(model.parameters()).device
    cost = attention_pair_cost(base_model(model).config.hidden_size)
    longest = max(len(c) for c in contexts) + max(len(c) for c in candidates) if contexts else 1
    pack, share = choose_layout([model], True, True, longest=longest)
    k = len(candidates)
    out = torch.empty(len(contexts), k)
    with evaluation_mode(model):
        for start in range(0, len(contexts), batch_size):
            chunk = contexts[start:start + batch_size]
            sequences = [s for i, c in enumerate(chunk) for s in branched_sequences(c, candidates, i * k, share)]
            batch = layout(sequences, pack=pack, num_groups=len(chunk) * k, pair_cost=cost).to(device)
            out[start:start + len(chunk)] = summed_logps(model, batch).float().view(len(chunk), k).cpu()
    return out
