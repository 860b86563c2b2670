"""Token log-probabilities and the supervised fine-tuning (SFT) losses.

SFT minimises the negative log-likelihood of the target tokens,

    L_SFT = -(1/N) * sum_t log p_theta(y_t | y_<t, x)

over the N target tokens of a batch (the completion for prompt-completion data, every token for
language-modelling data). The training loop divides by N across the whole optimizer step, so the
functions here return sums or per-token values, never means.

R-Drop (Liang et al., 2021, "R-Drop: Regularized Dropout for Neural Networks", Eq. 3) adds the
symmetric KL divergence between two forward passes that differ only in their dropout masks:

    L = L_NLL(pass 1) + L_NLL(pass 2) + alpha * 1/2 * (KL(P1 || P2) + KL(P2 || P1))
"""

from __future__ import annotations

import torch


def target_logps(logits: torch.Tensor, index: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-probability of each target token.

    `logits[k]` is the next-token distribution at the k-th kept position; `index[p]` says which kept
    position predicts target p. Several targets may share one position (prefix sharing: the last
    prompt token predicts the first token of both responses).

    Computed as logit - logsumexp(logits), in float32, without materialising a full log-softmax
    per target.

    Shape:
        logits: (K, V) float, K kept positions, V vocabulary size
        index: (P,) long, values in [0, K)
        targets: (P,) long, values in [0, V)
        returns: (P,) float32

    >>> logits = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    >>> target_logps(logits, torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0])).round(decimals=4)
    tensor([-0.6931, -0.1269, -2.1269])
    """
    rows = logits.index_select(0, index).float()
    picked = rows.gather(1, targets.unsqueeze(1)).squeeze(1)
    return picked - torch.logsumexp(rows, dim=-1)


def sequence_logps(token_logps: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum token log-probabilities per sequence (or per response, for preference data).

    Shape:
        token_logps: (P,) float
        groups: (P,) long, values in [0, G)
        num_groups: G
        returns: (G,) float; a group with no tokens sums to 0, never NaN

    >>> sequence_logps(torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([0, 0, 2]), 3)
    tensor([-3.0000,  0.0000, -0.5000])
    """
    out = token_logps.new_zeros(num_groups)
    return out.index_add(0, groups, token_logps)


def rdrop_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Symmetric KL divergence between two next-token distributions, per position (R-Drop, Eq. 3).

        D(a, b) = 1/2 * (KL(P_a || P_b) + KL(P_b || P_a))
                = 1/2 * sum_v (P_a(v) - P_b(v)) * (log P_a(v) - log P_b(v))

    Shape:
        logits_a, logits_b: (K, V) float
        returns: (K,) float32, >= 0

    >>> a = torch.tensor([[0.0, 0.0]]); b = torch.tensor([[0.0, 2.0]])
    >>> rdrop_kl(a, b).round(decimals=4)
    tensor([0.3808])
    """
    logp_a = torch.log_softmax(logits_a.float(), dim=-1)
    logp_b = torch.log_softmax(logits_b.float(), dim=-1)
    return 0.5 * ((logp_a.exp() - logp_b.exp()) * (logp_a - logp_b)).sum(-1)
