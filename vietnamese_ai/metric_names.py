"""Names in metrics.jsonl that more than one layer needs: the recipes that write them and the report
that reads them. Plain data, no imports, so that the report (which reads run files only) may use it.

PPO logs some statistics twice, under the original RLHF recipe's name and under ours, the same number,
so that users of either vocabulary find them; the report draws each once, under our name.
"""

from __future__ import annotations

# The original recipe's name -> ours (also the name GRPO and RLOO log the same statistic under).
PPO_RECIPE_NAMES: dict[str, str] = {
    "objective/kl": "kl",
    "objective/kl_coef": "kl_coef",
    "ppo/policy/clipfrac": "clip_ratio",
    "ppo/val/var_explained": "explained_variance",
    "ppo/loss/policy": "policy_loss",
    "ppo/loss/value": "value_loss",
    "ppo/policy/entropy": "entropy",
}


def with_recipe_names(metrics: dict[str, object]) -> dict[str, object]:
    """`metrics` plus, for each of our names in PPO_RECIPE_NAMES, the same value under the recipe's name.

    >>> with_recipe_names({"kl": 0.5, "reward": 1.0})
    {'kl': 0.5, 'reward': 1.0, 'objective/kl': 0.5}
    """
    ours_to_recipe = {ours: recipe for recipe, ours in PPO_RECIPE_NAMES.items()}
    return {**metrics, **{ours_to_recipe[k]: v for k, v in metrics.items() if k in ours_to_recipe}}


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
