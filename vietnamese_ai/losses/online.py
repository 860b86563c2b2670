"""Losses of online RL without a critic (GRPO, RLOO): advantages, the clipped surrogate, the KL
estimator and the loss aggregations. Pure functions of tensors.

Notation: G completions per prompt, rewards r (N, G); per completion token t, the log-probability
under the current policy log π, under the policy that sampled it log π_old, and under the reference
log π_ref; the importance ratio ρ_t = exp(log π - log π_old).
"""

from __future__ import annotations

import torch

STD_EPSILON = 1e-4  # added to the standard deviation, as TRL does, so a group of equal rewards gives 0


def group_advantages(rewards: torch.Tensor, scale: str = "group", batch_std: torch.Tensor | None = None) -> torch.Tensor:
    """GRPO's group-relative advantage (Shao et al. 2024, DeepSeekMath Eq. 3 with outcome rewards):

        A_ij = (r_ij - mean_j r_ij) / (std_j r_ij + 1e-4)        scale="group"
        A_ij = (r_ij - mean_j r_ij) / (std(all r) + 1e-4)         scale="batch" (std over the whole batch)
        A_ij =  r_ij - mean_j r_ij                                 scale="none"  (Dr. GRPO, Liu et al. 2025)

    Standard deviations are unbiased (n - 1), as torch.std and TRL compute them. `batch_std` lets a
    caller pass the standard deviation of the batch across all processes.

    Shape:
        rewards: (N, G)
        returns: (N, G)

    >>> group_advantages(torch.tensor([[1.0, 3.0], [2.0, 2.0]]), "none")
    tensor([[-1.,  1.],
            [ 0.,  0.]])
    >>> group_advantages(torch.tensor([[1.0, 3.0]]), "group").round(decimals=4)   # std of (1, 3) is sqrt(2)
    tensor([[-0.7071,  0.7071]])
    """
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred
    if scale == "group":
        return centred / (rewards.std(dim=1, keepdim=True) + STD_EPSILON)
    if scale == "batch":
        std = batch_std if batch_std is not None else rewards.flatten().std()
        return centred / (std + STD_EPSILON)
    raise ValueError(f"scale_rewards: expected group, batch or none, got {scale!r}")


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO's advantage (Ahmadian et al. 2024, Eq. 5; Kool et al. 2019): each sample's reward minus
    the mean reward of the *other* G - 1 samples of its prompt,

        A_ij = r_ij - 1/(G-1) * sum_{k != j} r_ik  =  G/(G-1) * (r_ij - mean_k r_ik)

    Shape:
        rewards: (N, G), G >= 2
        returns: (N, G)

    >>> leave_one_out_advantages(torch.tensor([[1.0, 2.0, 6.0]]))
    tensor([[-3.0000, -1.5000,  4.5000]])
    """
    group = rewards.shape[1]
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (group - 1)
    return rewards - baseline


def clipped_surrogate(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, epsilon_low: float,
                      epsilon_high: float, delta: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped objective (Schulman et al. 2017, Eq. 7), as a loss to minimise, with the
    asymmetric clip of DAPO (Yu et al. 2025) and INTELLECT-2's cap `delta` on the unclipped ratio:

        L = -min(min(ρ, δ) A, clip(ρ, 1 - ε_low, 1 + ε_high) A)

    Returns the loss and where the clip was active: ρ < 1 - ε_low with A < 0 (`low`), ρ > 1 + ε_high
    with A > 0 (`high`), the tokens (or sequences) whose gradient the clip removes.

    Shape:
        logps, old_logps, advantages: (P,) (per token, or per sequence for a sequence-level ratio)
        returns: loss (P,), low (P,) bool, high (P,) bool

    >>> loss, low, high = clipped_surrogate(torch.log(torch.tensor([1.5, 0.5, 1.0])), torch.zeros(3),
    ...                                     torch.tensor([1.0, -1.0, 2.0]), 0.2, 0.2)
    >>> loss, low, high
    (tensor([-1.2000,  0.8000, -2.0000]), tensor([False,  True, False]), tensor([ True, False, False]))
    """
    ratio = torch.exp(logps - old_logps)
    unclipped = torch.clamp(ratio, max=delta) if delta is not None else ratio
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(unclipped * advantages, clipped * advantages)
    low = (ratio < 1 - epsilon_low) & (advantages < 0)
    high = (ratio > 1 + epsilon_high) & (advantages > 0)
    return loss, low, high


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π || π_ref) from a sample of π (unbiased, always >= 0):

        k3 = exp(log π_ref - log π) - (log π_ref - log π) - 1

    Shape: logps, ref_logps (P,); returns (P,)

    >>> k3_kl(torch.tensor([0.0, -1.0]), torch.tensor([0.0, 0.0])).round(decimals=4)
    tensor([0.0000, 0.7183])
    """
    diff = ref_logps - logps
    return torch.exp(diff) - diff - 1


def sequence_sums(values: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum of per-token values per sequence. Shape: values, groups (P,); returns (num_groups,)"""
    return values.new_zeros(num_groups).index_add(0, groups, values)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, groups: torch.Tensor, num_groups: int, loss_type: str,
              max_completion_length: int) -> torch.Tensor:
    """The *sum* of the per-item losses that the training loop divides by the step's item count
    (sequences for grpo and dr_grpo, tokens for dapo), so that over a whole step:

        grpo     1/|S| sum_i 1/|y_i| sum_t l_it         sequence mean of token means (GRPO paper, Eq. 3)
        dr_grpo  1/|S| sum_i 1/L sum_t l_it             L = max_completion_length (Dr. GRPO, Liu et al. 2025)
        dapo     1/sum_i |y_i| sum_i sum_t l_it         token mean over the step (DAPO, Yu et al. 2025, Eq. 8)

    `mask` is 0 on tokens that do not count (completions cut without EOS, when masked); a sequence
    whose tokens are all masked contributes 0.

    Shape:
        per_token, mask, groups: (P,)
        returns: scalar

    >>> loss, groups, mask = torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 1]), torch.ones(3)
    >>> [float(aggregate(loss, mask, groups, 2, kind, 4)) for kind in ("grpo", "dr_grpo", "dapo")]
    [7.0, 2.25, 9.0]
    """
    masked = per_token * mask
    if loss_type == "dapo":
        return masked.sum()
    sums = sequence_sums(masked, groups, num_groups)
    if loss_type == "dr_grpo":
        return sums.sum() / max_completion_length
    if loss_type == "grpo":
        lengths = sequence_sums(mask, groups, num_groups)
        return (sums / lengths.clamp(min=1)).sum()
    raise ValueError(f"loss_type: expected grpo, dr_grpo or dapo, got {loss_type!r}")
