"""The online-RL engine GRPO, RLOO and PPO share: prompts, rewards, and the rollout source that
samples, scores and lays out rollouts for the training loop.

- config.py: OnlineConfig (the keys every online method has), RolloutShape, the run-length plan;
- prompts.py: prompt records read and tokenised, each completion's seed;
- rewards.py: RewardInputs (what every reward reads), the reward terms, build_rewards, score_completions;
- method.py: OnlineMethod, the strategy each method implements (needs, advantages, loss, state);
- source.py: RolloutSource, the one StepSource of every method (see its docstring for a rollout phase);
- engine.py: run_online, the checks before any model loads, then the policy, reference and layout.

Completions are sampled through a GenerationBackend (models.sampling; the built-in sampler by default).
"""

from vietnamese_ai.recipes.online.config import OnlineConfig, RolloutShape, describe_run_length, plan_rollouts
from vietnamese_ai.recipes.online.engine import resolve_reference, run_online
from vietnamese_ai.recipes.online.method import (
    Advantages,
    OnlineMethod,
    RolloutNeeds,
    ScoredRollout,
    global_mean_std,
)
from vietnamese_ai.recipes.online.prompts import PromptExample, completion_seed, read_prompt, tokenize_prompts
from vietnamese_ai.recipes.online.rewards import (
    RewardInputs,
    RewardTerm,
    build_rewards,
    read_sampled_ids,
    reward_number,
    score_completions,
)
from vietnamese_ai.recipes.online.source import RolloutSource

__all__ = [
    "Advantages", "OnlineConfig", "OnlineMethod", "PromptExample", "RewardInputs", "RewardTerm", "RolloutNeeds",
    "RolloutShape", "RolloutSource", "ScoredRollout", "build_rewards", "completion_seed", "describe_run_length",
    "global_mean_std", "plan_rollouts", "read_prompt", "read_sampled_ids", "resolve_reference", "reward_number",
    "run_online", "score_completions", "tokenize_prompts",
]
