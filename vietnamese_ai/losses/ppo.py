"""Losses and rollout arithmetic of PPO with a value head, as RLHF uses it (Ziegler et al. 2019;
Stiennon et al. 2020; Ouyang et al. 2022; Huang et al. 2024, "The N+ implementation details of RLHF
with PPO"). Pure functions of tensors.

Notation, per completion of T tokens: the log-probabilities of its tokens under the sampling policy
log π_old and the reference log π_ref, the value head's estimate V_t of the return from token t on
(read at the position that predicts token t), and a scalar score s from the reward. Padded tensors are
(M, T) with a mask that is 1 on real tokens; a completion's tokens come first.
"""

from __future__ import annotations

import torch


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """The per-token reward of RLHF (Ziegler et al. 2019, Eq. 2; Stiennon et al. 2020, Eq. 1): a KL
    penalty at every token and the score at the completion's last token,

        r_t = -β kl_t + [t = T - 1] s

    Shape:
        scores: (M,)
        kl, mask: (M, T) per-token KL estimate (k1: log π_old - log π_ref) and the real-token mask
        returns: (M, T), 0 on padding

    >>> token_rewards(torch.tensor([1.0, 2.0]), torch.tensor([[0.5, 0.5], [1.0, 0.0]]),
    ...               torch.tensor([[1.0, 1.0], [1.0, 0.0]]), 0.1)
    tensor([[-0.0500,  0.9500],
            [ 1.9000,  0.0000]])
    """
    rewards = torch.where(mask.bool(), -kl_coef * kl, torch.zeros_like(kl))
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    return rewards.index_put((torch.arange(len(scores)), last), scores.to(rewards.dtype), accumulate=True)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, mean: float | None = None,
           std: float | None = None) -> torch.Tensor:
    """(x - mean) / std over the masked entries; with shift_mean=False the mean is added back, so only
    the scale changes (how rewards are normalised: their sign keeps its meaning). `mean` and `std`
    (unbiased) may come from all processes; by default they are this tensor's.

    Shape: values, mask (M, T); returns (M, T), 0 on padding

    >>> x, m = torch.tensor([[1.0, 3.0], [5.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    >>> whiten(x, m)                      # mean 3, std 2
    tensor([[-1.,  0.],
            [ 1.,  0.]])
    >>> whiten(x, m, shift_mean=False)   # the spread is scaled to 1 around the same mean
    tensor([[2., 3.],
            [4., 0.]])
    """
    if mean is None or std is None:
        real = values[mask.bool()]
        mean, std = float(real.mean()), float(real.std()) if real.numel() > 1 else 0.0
    out = (values - mean) / (std + 1e-8)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool(), out, torch.zeros_like(out))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16) over each completion, with
    V = 0 after its last token (the episode ends there):

        δ_t = r_t + γ V_{t+1} - V_t,     A_t = δ_t + γλ A_{t+1},     returns_t = A_t + V_t

    Shape:
        rewards, values, mask: (M, T)
        returns: advantages (M, T), returns (M, T), both 0 on padding

    >>> a, r = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.25]]), torch.ones(1, 2), 1.0, 0.5)
    >>> a, r          # δ = (0 + 0.25 - 0.5, 1 - 0.25) = (-0.25, 0.75); A_0 = -0.25 + 0.5 * 0.75
    (tensor([[0.1250, 0.7500]]), tensor([[0.6250, 1.0000]]))
    """
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        following = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * following - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss (as in OpenAI's baselines and every RLHF PPO since): the new value may
    move at most `clip` from the value at sampling time before its error stops pulling it,

        L^V_t = 1/2 max((V_t - R_t)², (V_old,t + clip(V_t - V_old,t, -c, c) - R_t)²)

    Returns the loss and where the clipped term is the larger one.

    Shape: values, old_values, returns (P,); returns (P,), (P,) bool

    >>> loss, clipped = clipped_value_loss(torch.tensor([1.0, 0.1]), torch.zeros(2), torch.tensor([0.0, 1.0]), 0.2)
    >>> loss, clipped     # the first: (1 - 0)² vs (0.2 - 0)²; the second: (0.1 - 1)² vs (0.1 - 1)²
    (tensor([0.5000, 0.4050]), tensor([False, False]))
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    plain, clipped = (values - returns) ** 2, (clipped_values - returns) ** 2
    return 0.5 * torch.max(plain, clipped), clipped > plain


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """1 - Var(targets - predictions) / Var(targets): 1 for a perfect value function, 0 for one that
    predicts the mean, negative for worse. Shape: (P,) each.

    >>> explained_variance(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]))
    1.0
    """
    variance = float(targets.var()) if targets.numel() > 1 else 0.0
    if variance == 0.0:
        return float("nan")
    return 1.0 - float((targets - predictions).var()) / variance


class AdaptiveKLController:
    """The KL coefficient controller of Ziegler et al. 2019 (Section 2.2): a proportional controller
    that moves β so that the KL to the reference approaches `target`,

        e = clip(KL / target - 1, -0.2, 0.2),     β <- β (1 + e n / horizon)

    where KL is the rollout's mean summed KL per completion and n the completions it held.

    >>> c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    >>> c.update(kl=12.0, n=100); round(c.value, 6)        # e = 0.2: β x 1.002
    0.2004
    """

    def __init__(self, init: float, target: float, horizon: float):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, kl: float, n: int) -> None:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n / self.horizon
