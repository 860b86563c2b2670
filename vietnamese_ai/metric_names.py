"""Names in metrics.jsonl that more than one layer needs: the recipes that write them and the report
that reads them. Plain data, no imports, so that the report (which reads run files only) may use it.

PPO stores each statistic once, under the name GRPO and RLOO use for it too (`kl`, `clip_ratio`, ...);
the original RLHF recipe's names for the same numbers (`objective/kl`, ...) are read, for runs that
logged them (an earlier version of this toolkit, or TRL's), and drawn under ours.
"""

from __future__ import annotations

# The original recipe's name -> ours (the name every online method logs the statistic under).
PPO_RECIPE_NAMES: dict[str, str] = {
    "objective/kl": "kl",
    "objective/kl_coef": "kl_coef",
    "ppo/policy/clipfrac": "clip_ratio",
    "ppo/val/var_explained": "explained_variance",
    "ppo/loss/policy": "policy_loss",
    "ppo/loss/value": "value_loss",
    "ppo/policy/entropy": "entropy",
}


# The two or three numbers a method's run ends its `done:` line with, after the loss (metrics.jsonl
# holds every one). Keyed by the method's name in run.json.
HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "dpo": ("rewards/accuracies", "rewards/margins"),
    "orpo": ("rewards/accuracies", "rewards/margins", "nll_loss"),
    "kto": ("rewards/chosen", "rewards/rejected", "kl"),
    "reward": ("accuracy", "margin"),
    "scoresft": ("lm_loss", "reward_mse"),
    "grpo": ("reward", "kl", "entropy"),
    "rloo": ("reward", "kl", "entropy"),
    "ppo": ("reward", "kl", "value_loss"),
}
