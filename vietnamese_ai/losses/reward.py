"""Reward-model losses.

Bradley-Terry (Bradley and Terry, 1952; as used for RLHF reward models by Ouyang et al., 2022, Eq. 1):
the probability that y_w is preferred to y_l is sigma(r(x, y_w) - r(x, y_l)), so

    L_BT = -log sigma(r_w - r_l - m)

with an optional per-pair margin m (Llama 2, Touvron et al., 2023, Eq. 2), plus the optional
centering term c * (r_w + r_l)^2 that keeps rewards near zero (Eisenstein et al., 2023).

Score-regularised fine-tuning adds a regression of a scalar head onto a target score:

    L = L_LM + alpha * (head(x, y) - s)^2
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(r_w: torch.Tensor, r_l: torch.Tensor, margin: torch.Tensor | None = None,
                       center_coefficient: float = 0.0) -> torch.Tensor:
    """Per-pair Bradley-Terry loss.

    Shape: r_w, r_l, margin (B,) -> (B,)

    >>> bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0]))   # equal rewards: -log(1/2)
    tensor([0.6931])
    """
    difference = r_w - r_l if margin is None else r_w - r_l - margin
    losses = -F.logsigmoid(difference)
    if center_coefficient:
        losses = losses + center_coefficient * (r_w + r_l) ** 2
    return losses


def score_regression_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error of a predicted score. Shape: (B,), (B,) -> (B,)"""
    return (predicted.float() - target.float()) ** 2
