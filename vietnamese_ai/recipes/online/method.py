"""What an online method plugs into the rollout source: a strategy object, one per run.

The source samples, scores and lays out every method's rollouts the same way; a method says what
differs (GRPO, RLOO and PPO each implement `OnlineMethod` in their recipe module):

- `needs`: what the rollout pass must compute besides what the engine always decides for itself
  (the sampling policy's log-probs even when training on-policy; the value estimates);
- `advantages`: from the rewards (and the log-probs and values computed), the advantages the loss
  reads, and any rollout statistics to log;
- `loss_fn`: the loss over one laid-out micro-batch;
- `check_prompts`, `prepare_policy`: checks before the model loads; what it attaches to the policy
  (PPO's value head or value model, which the checkpoints and final/ then save beside it);
- `state_dict` / `load_state_dict`: what it keeps between rollouts (PPO's adaptive KL coefficient),
  written into every checkpoint with the rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from vietnamese_ai.data.rollout import Rollout
from vietnamese_ai.training.metrics import reduce_sums


@dataclass(frozen=True)
class RolloutNeeds:
    """What a method needs computed in the rollout pass, even when training on-policy."""

    old_logps: bool = False     # the sampling policy's log-probs (otherwise only when the policy moves first)
    values: bool = False        # the value estimate at every completion token (read in the same pass)


@dataclass
class ScoredRollout:
    """A rollout after sampling, scoring and the rollout pass: what advantages are computed from.

    Shape:
        rewards: (M,) float64, each completion's total reward (missing-EOS penalty included)
        kl: (N, G) float32, KL(old || ref) summed over each completion's tokens; None unless both the
            sampling policy's and the reference's log-probs were computed
    """

    rollout: Rollout            # old_logps, ref_logps and values filled as the pass computed them
    rewards: torch.Tensor
    kl: torch.Tensor | None


@dataclass
class Advantages:
    """What a method's advantages give the rollout.

    Shape:
        per_completion: (M,) the advantage each completion's loss reads (zeros where they are per token)
        shown: (M,) what completions.jsonl shows as each completion's advantage; None: per_completion
        per_token, returns: [M][completion length] (PPO's GAE advantages and returns), or None
    """

    per_completion: torch.Tensor
    shown: torch.Tensor | None = None
    per_token: list[list[float]] | None = None
    returns: list[list[float]] | None = None
    statistics: dict[str, float] = field(default_factory=dict)   # rollout-level metrics, logged as they are


class OnlineMethod:
    """The strategy interface (see the module docstring); the defaults are those of a method with
    per-completion advantages, nothing attached and nothing kept."""

    name: str = "online"
    count_tokens: bool = False    # the loss is averaged over tokens (dapo, PPO) rather than over completions

    def needs(self) -> RolloutNeeds:
        return RolloutNeeds()

    def check_prompts(self, prompts: list[Any]) -> None:
        """Refuse settings the prompts make impossible, before the model loads."""

    def prepare_policy(self, model: Any, tokenizer: Any) -> None:
        """Attach what the method trains beside the policy; called after the reference was copied from it."""

    def advantages(self, scored: ScoredRollout, accelerator: Any) -> Advantages:
        raise NotImplementedError

    def loss_fn(self) -> Any:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def global_mean_std(values: torch.Tensor, accelerator: Any) -> tuple[float, float]:
    """Mean and unbiased standard deviation of `values` over all processes."""
    n, total, squares = reduce_sums(accelerator, [float(values.numel()), float(values.sum()), float((values ** 2).sum())])
    mean = total / max(n, 1.0)
    variance = (squares - n * mean * mean) / max(n - 1.0, 1.0)
    return mean, math.sqrt(max(variance, 0.0))
