"""Preference-optimisation losses: the DPO family, ORPO and KTO.

Every function takes per-example sequence log-probabilities (summed over response tokens unless the
name says `avg`) and returns per-example losses plus detached rewards. Notation:

    pi_w, pi_l   policy log-probabilities of the chosen (w) and rejected (l) responses
    ref_w, ref_l the reference model's
    h = (pi_w - ref_w) - (pi_l - ref_l)        the DPO "logit" (h_{pi}^{y_w, y_l} in the DPO paper)

Rewards are the implicit rewards of each method, beta * (pi - ref) for the reference-based losses.
"""

from __future__ import annotations

import math
from enum import Enum

import torch
import torch.nn.functional as F


class LossType(str, Enum):
    """The DPO-family variants, and what each one needs."""

    sigmoid = "sigmoid"   # DPO; with label_smoothing > 0, conservative DPO (cDPO)
    ipo = "ipo"
    hinge = "hinge"
    robust = "robust"
    rpo = "rpo"
    simpo = "simpo"

    @property
    def needs_reference(self) -> bool:
        return self is not LossType.simpo

    @property
    def needs_lengths(self) -> bool:
        """Whether the loss uses response lengths (length normalisation)."""
        return self in (LossType.ipo, LossType.rpo, LossType.simpo)


def dpo_logits(pi_w: torch.Tensor, pi_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor) -> torch.Tensor:
    """h = log pi(y_w)/ref(y_w) - log pi(y_l)/ref(y_l).  Shape: all (B,) -> (B,)."""
    return (pi_w - ref_w) - (pi_l - ref_l)


def _rewards(beta: float, pi_w, pi_l, ref_w, ref_l) -> tuple[torch.Tensor, torch.Tensor]:
    return beta * (pi_w - ref_w).detach(), beta * (pi_l - ref_l).detach()


def sigmoid_loss(pi_w, pi_l, ref_w, ref_l, beta: float, label_smoothing: float = 0.0):
    """DPO (Rafailov et al., 2023, Eq. 7) and conservative DPO (Mitchell, 2023, cDPO note, Eq. 3):

        L = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)

    eps = label_smoothing is the assumed probability that a preference label is flipped; eps = 0 is DPO.

    Shape: pi_w, pi_l, ref_w, ref_l: (B,) -> losses (B,), chosen_rewards (B,), rejected_rewards (B,)

    >>> z = torch.zeros(1)
    >>> round(sigmoid_loss(z, z, z, z, beta=0.1)[0].item(), 6) == round(math.log(2), 6)   # h = 0: -log(1/2)
    True
    """
    h = dpo_logits(pi_w, pi_l, ref_w, ref_l)
    losses = -F.logsigmoid(beta * h) * (1 - label_smoothing) - F.logsigmoid(-beta * h) * label_smoothing
    return (losses, *_rewards(beta, pi_w, pi_l, ref_w, ref_l))


def hinge_loss(pi_w, pi_l, ref_w, ref_l, beta: float):
    """SLiC-HF's calibration loss on the DPO logit (Zhao et al., 2023, Eq. 2 with delta = 1/beta):

        L = max(0, 1 - beta h)

    Shape: (B,) each -> losses (B,), chosen_rewards (B,), rejected_rewards (B,)
    """
    losses = torch.relu(1 - beta * dpo_logits(pi_w, pi_l, ref_w, ref_l))
    return (losses, *_rewards(beta, pi_w, pi_l, ref_w, ref_l))


def ipo_loss(pi_w, pi_l, ref_w, ref_l, len_w, len_l, beta: float):
    """IPO (Azar et al., 2023, Eq. 17), with tau = beta:

        L = (h_avg - 1 / (2 tau))^2

    where the log-ratios are averaged per response token, as in the authors' experiments (the
    equation's sequence log-ratios make the target 1/(2 tau) meaningless across lengths).

    Shape: log-probs and lengths (B,) -> losses (B,), chosen_rewards (B,), rejected_rewards (B,)
    """
    h = (pi_w - ref_w) / len_w - (pi_l - ref_l) / len_l
    losses = (h - 1 / (2 * beta)) ** 2
    return (losses, *_rewards(beta, pi_w, pi_l, ref_w, ref_l))


def robust_loss(pi_w, pi_l, ref_w, ref_l, beta: float, label_smoothing: float):
    """Robust DPO (Chowdhury et al., 2024, Eq. 8): an unbiased loss when each label is flipped with
    probability eps = label_smoothing < 1/2:

        L = [-(1 - eps) log sigma(beta h) + eps log sigma(-beta h)] / (1 - 2 eps)

    Shape: (B,) each -> losses (B,), chosen_rewards (B,), rejected_rewards (B,)
    """
    h = dpo_logits(pi_w, pi_l, ref_w, ref_l)
    losses = (-(1 - label_smoothing) * F.logsigmoid(beta * h) + label_smoothing * F.logsigmoid(-beta * h)) \
        / (1 - 2 * label_smoothing)
    return (losses, *_rewards(beta, pi_w, pi_l, ref_w, ref_l))


def rpo_loss(pi_w, pi_l, ref_w, ref_l, len_w, beta: float, alpha: float, label_smoothing: float = 0.0):
    """RPO (Pang et al., 2024, "Iterative Reasoning Preference Optimization", Eq. 1): DPO plus the
    negative log-likelihood of the chosen response, per response token:

        L = L_DPO - alpha * log pi(y_w | x) / |y_w|

    Shape: log-probs and len_w (B,) -> losses (B,), chosen_rewards (B,), rejected_rewards (B,)
    """
    losses, chosen_rewards, rejected_rewards = sigmoid_loss(pi_w, pi_l, ref_w, ref_l, beta, label_smoothing)
    return losses + alpha * (-pi_w / len_w), chosen_rewards, rejected_rewards


def simpo_loss(pi_w, pi_l, len_w, len_l, beta: float, gamma: float):
    """SimPO (Meng et al., 2024, Eq. 6): reference-free, length-normalised, with a target margin gamma:

        L = -log sigma(beta / |y_w| log pi(y_w|x) - beta / |y_l| log pi(y_l|x) - gamma)

    Rewards are the implicit rewards beta / |y| log pi(y|x).

    Shape: log-probs and lengths (B,) -> losses (B,), chosen_rewards (B,), rejected_rewards (B,)

    >>> loss = simpo_loss(torch.tensor([-2.0]), torch.tensor([-6.0]), torch.tensor([2.0]), torch.tensor([3.0]),
    ...                   beta=2.0, gamma=2.0)[0]
    >>> round(loss.item(), 6) == round(math.log(2), 6)   # 2 * (-1) - 2 * (-2) - 2 = 0
    True
    """
    chosen_rewards, rejected_rewards = beta * pi_w / len_w, beta * pi_l / len_l
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate near 0 and for very negative x (Maechler, 2012).

    >>> round(log1mexp(torch.tensor([math.log(0.5)])).item(), 6) == round(math.log(0.5), 6)
    True
    """
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(avg_w: torch.Tensor, avg_l: torch.Tensor, lam: float):
    """ORPO (Hong et al., 2024, Eqs. 6-7): NLL on the chosen response plus lambda times the log odds
    ratio term, with P(y|x) = exp(mean token log-probability):

        odds(y) = P(y|x) / (1 - P(y|x))
        L = -log P(y_w|x) - lambda * log sigma(log odds(y_w) - log odds(y_l))

    Shape: avg_w, avg_l (B,) mean token log-probs -> losses (B,), chosen_rewards (B,),
        rejected_rewards (B,), nll (B,), log_odds_ratio (B,). Rewards are lambda * mean log-probs.
    """
    log_odds = (avg_w - avg_l) - (log1mexp(avg_w) - log1mexp(avg_l))
    ratio = F.logsigmoid(log_odds)
    nll = -avg_w
    losses = nll - lam * ratio
    return losses, (lam * avg_w).detach(), (lam * avg_l).detach(), nll.detach(), ratio.detach()


def kto_kl_estimate(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0 (Ethayarajh et al., 2024, Eq. 7): a batch estimate of
    KL(pi || ref) from mismatched (prompt, other example's completion) pairs, clamped at 0 and not
    back-propagated through.

    Shape: (M,) each -> () scalar
    """
    return (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()


def kto_loss(pi: torch.Tensor, ref: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
    """KTO (Ethayarajh et al., 2024, Eq. 8) for unpaired examples, with r = log pi(y|x)/ref(y|x):

        desirable:    lambda_D * (1 - sigma(beta (r - z0)))
        undesirable:  lambda_U * (1 - sigma(beta (z0 - r)))

    Shape: pi, ref (B,), desirable (B,) bool, kl () -> losses (B,), rewards (B,) = beta * r

    >>> kto_loss(torch.zeros(2), torch.zeros(2), torch.tensor([True, False]), torch.tensor(0.0), beta=0.1)[0]
    tensor([0.5000, 0.5000])
    """
    r = pi - ref
    desirable_losses = desirable_weight * (1 - torch.sigmoid(beta * (r - kl)))
    undesirable_losses = undesirable_weight * (1 - torch.sigmoid(beta * (kl - r)))
    return torch.where(desirable, desirable_losses, undesirable_losses), (beta * r).detach()
