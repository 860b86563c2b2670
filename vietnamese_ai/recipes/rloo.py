"""RLOO, REINFORCE Leave-One-Out (Ahmadian et al. 2024, "Back to Basics"), as TRL 1.16's RLOOTrainer
runs it, on our rollout engine.

What runs: for each prompt, G completions are sampled and rewarded. With `kl_in_reward` (the default),
the KL to the reference enters the reward as the paper has it, summed over the completion's tokens
with the k1 estimator at sampling time:

    R_i = r_i - β Σ_t (log π_old(y_t) - log π_ref(y_t))

and the advantage is R_i minus the mean of the other G - 1 rewards of the same prompt. The loss is the
clipped surrogate on the *sequence* ratio ρ_i = π(y_i) / π_old(y_i) (the product of the token ratios),
averaged over completions:

    L = mean_i -min(ρ_i A_i, clip(ρ_i, 1 - ε, 1 + ε_high) A_i)

With kl_in_reward=false the KL is a loss term instead: β times the mean over the completion's tokens
of the k3 estimator, added per completion.

Where it departs from the paper: the PPO-style clip (the paper's RLOO is a plain REINFORCE update, to
which the clip reduces when training on-policy: the ratio is then 1); `normalize_advantages` and
`reward_clip_range` are TRL's options.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.losses.online import STD_EPSILON, clipped_surrogate, k3_kl, leave_one_out_advantages, sequence_sums
from vietnamese_ai.models.prompt_cache import rollout_logps
from vietnamese_ai.models.sampling import GenerationBackend
from vietnamese_ai.recipes.online import (
    Advantages,
    OnlineConfig,
    OnlineMethod,
    RolloutNeeds,
    ScoredRollout,
    global_mean_std,
    run_online,
)
from vietnamese_ai.training.loop import StepOutput, TrainResult


class RLOOConfig(OnlineConfig):
    output_dir: str = Field("runs/rloo", description="Directory for config.yaml, metrics.jsonl, completions.jsonl, checkpoints/ and final/.")
    num_generations: int = Field(2, ge=2, description="Completions sampled per prompt (G); the baseline of each is the mean of the other G - 1.")
    beta: float = Field(0.05, ge=0, description="Weight of the KL to the reference; 0 loads no reference.")
    kl_in_reward: bool = Field(True, description="Subtract beta x the completion's summed log-ratio (k1) from its reward, as the RLOO paper does; false: add beta x the token-mean k3 KL to the loss.")
    normalize_advantages: bool = Field(False, description="Standardise the advantages over the whole batch.")
    reward_clip_range: list[float] | None = Field(None, description="[min, max] to clip the total reward to, before the baseline.")

    @model_validator(mode="after")
    def _clip_range(self) -> "RLOOConfig":
        if self.reward_clip_range is not None and (len(self.reward_clip_range) != 2
                                                   or self.reward_clip_range[0] >= self.reward_clip_range[1]):
            raise ValueError(f"reward_clip_range must be [min, max] with min < max, got {self.reward_clip_range}")
        return self


def rloo_loss_fn(config: RLOOConfig):
    epsilon_high = config.epsilon_high if config.epsilon_high is not None else config.epsilon

    def loss(model: Any, batch: PackedBatch) -> StepOutput:
        rollout = batch.extras["rollout"]
        logps, entropy = rollout_logps(model, batch, config.temperature, entropy=True)
        old = rollout.old_logps if rollout.old_logps is not None else logps.detach()
        mask, groups, count = rollout.token_mask, batch.target_groups, batch.num_groups
        sequence_logps, sequence_old = sequence_sums(logps * mask, groups, count), sequence_sums(old * mask, groups, count)
        per_sequence, low, high = clipped_surrogate(sequence_logps, sequence_old, rollout.advantages, config.epsilon,
                                                    epsilon_high)
        keep = (sequence_sums(mask, groups, count) > 0).float()   # a masked completion contributes nothing
        tokens = mask.sum()
        metrics: dict[str, Any] = {}
        if config.beta > 0 and rollout.ref_logps is not None:
            if config.kl_in_reward:
                metrics["kl"] = (((old - rollout.ref_logps) * mask).sum(), tokens)
            else:
                kl = k3_kl(logps, rollout.ref_logps) * mask
                lengths = sequence_sums(mask, groups, count).clamp(min=1)
                per_sequence = per_sequence + config.beta * sequence_sums(kl, groups, count) / lengths
                metrics["kl"] = (kl.detach().sum(), tokens)
        sequences = float(count)
        metrics.update({
            "entropy": ((entropy * mask).sum(), tokens),
            "clip_ratio/low_mean": (low.float().sum(), sequences),
            "clip_ratio/high_mean": (high.float().sum(), sequences),
            "clip_ratio/region_mean": ((low | high).float().sum(), sequences),
        })
        return StepOutput((per_sequence * keep).sum(), metrics)

    return loss


class RLOO(OnlineMethod):
    """RLOO on the rollout source: leave-one-out advantages of the rewards (less the sampled KL with
    kl_in_reward, which needs the sampling policy's log-probs even on-policy), the loss above."""

    name = "rloo"
    count_tokens = False

    def __init__(self, config: RLOOConfig):
        self.config = config

    def needs(self) -> RolloutNeeds:
        return RolloutNeeds(old_logps=self.config.beta > 0 and self.config.kl_in_reward)

    def advantages(self, scored: ScoredRollout, accelerator: Any) -> Advantages:
        config, kl = self.config, scored.kl
        rewards = scored.rewards.view(-1, scored.rollout.group_size).float()
        total = rewards - config.beta * kl if (kl is not None and config.kl_in_reward) else rewards
        if config.reward_clip_range is not None:
            total = total.clamp(*config.reward_clip_range)
        result = leave_one_out_advantages(total)
        if config.normalize_advantages:
            mean, std = global_mean_std(result.flatten(), accelerator)
            result = (result - mean) / (std + STD_EPSILON)
        return Advantages(result.flatten())

    def loss_fn(self) -> Any:
        return rloo_loss_fn(self.config)


def run_rloo(config: RLOOConfig, model: Any = None, tokenizer: Any = None, train_records: Any = None,
             reward_funcs: list[Any] | None = None, backend: GenerationBackend | None = None) -> TrainResult:
    """Run RLOO as configured; `reward_funcs` and `backend` as in run_grpo."""
    return run_online(config, RLOO(config), model, tokenizer, train_records, reward_funcs, backend)
