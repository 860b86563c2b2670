"""GRPO (Shao et al. 2024, DeepSeekMath), as TRL 1.16's GRPOTrainer runs it, on our rollout engine.

What runs: for each prompt, G completions are sampled and rewarded; each completion's advantage is
its reward minus its group's mean, divided by the group's standard deviation (`scale_rewards`: group,
batch or none). Every completion token t then gets the clipped surrogate loss

    l_t = -min(min(ρ_t, δ) A, clip(ρ_t, 1 - ε, 1 + ε_high) A) + β k3_t (× ρ_t with use_bias_correction_kl)

with ρ_t = π(y_t) / π_old(y_t) at the sampling temperature and k3 the KL estimator towards the
reference; `loss_type` aggregates the l_t: grpo (mean over tokens, then over completions), dr_grpo
(sum over tokens / max_completion_length, mean over completions) or dapo (mean over all tokens of the
step, the default).

Where it departs from the paper: outcome rewards only (one reward per completion, as in its
"outcome supervision"); the KL term is optional and off by default (beta=0, as in TRL and later work
such as DAPO and Dr. GRPO), and then no reference model is loaded. Where it departs from TRL:
`disable_dropout` is on by default; groups are never split across processes (each process samples
all G completions of its prompts); prompts are not truncated unless max_prompt_length is set.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.losses.online import aggregate, clipped_surrogate, group_advantages, k3_kl
from vietnamese_ai.models.prompt_cache import rollout_logps
from vietnamese_ai.models.sampling import GenerationBackend
from vietnamese_ai.recipes.online import (
    Advantages,
    OnlineConfig,
    OnlineMethod,
    ScoredRollout,
    global_mean_std,
    run_online,
)
from vietnamese_ai.training.loop import StepOutput, TrainResult


class GRPOConfig(OnlineConfig):
    output_dir: str = Field("runs/grpo", description="Directory for config.yaml, metrics.jsonl, completions.jsonl, checkpoints/ and final/.")
    beta: float = Field(0.0, ge=0, description="Weight of the k3 KL to the reference; 0 loads no reference.")
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = Field("dapo", description="How token losses are averaged: grpo (per completion, then over completions), dr_grpo (sum / max_completion_length), dapo (over all tokens of the step).")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="Divide the centred rewards by the group's standard deviation, the batch's, or not at all (Dr. GRPO).")
    delta: float | None = Field(None, gt=1, description="Cap on the unclipped ratio (INTELLECT-2's two-sided clipping); default: none.")
    use_bias_correction_kl: bool = Field(True, description="Multiply the k3 KL by the importance ratio (TRL's default since 1.x).")

    @field_validator("scale_rewards", mode="before")
    @classmethod
    def _legacy_boolean(cls, value: Any) -> Any:
        # TRL accepted True/False before the three modes existed.
        return {True: "group", False: "none", "true": "group", "false": "none"}.get(value, value)


def grpo_loss_fn(config: GRPOConfig):
    epsilon_high = config.epsilon_high if config.epsilon_high is not None else config.epsilon

    def loss(model: Any, batch: PackedBatch) -> StepOutput:
        rollout = batch.extras["rollout"]
        logps, entropy = rollout_logps(model, batch, config.temperature, entropy=True)
        old = rollout.old_logps if rollout.old_logps is not None else logps.detach()  # on-policy: ratio exactly 1
        advantages = rollout.advantages[batch.target_groups]
        per_token, low, high = clipped_surrogate(logps, old, advantages, config.epsilon, epsilon_high, config.delta)
        mask = rollout.token_mask
        tokens = mask.sum()
        metrics: dict[str, Any] = {}
        if config.beta > 0:
            kl = k3_kl(logps, rollout.ref_logps)
            if config.use_bias_correction_kl:
                kl = kl * torch.exp(logps - old)
            per_token = per_token + config.beta * kl
            metrics["kl"] = ((kl.detach() * mask).sum(), tokens)
        total = aggregate(per_token, mask, batch.target_groups, batch.num_groups, config.loss_type,
                          config.max_completion_length)
        metrics.update({
            "entropy": ((entropy * mask).sum(), tokens),
            "clip_ratio/low_mean": ((low.float() * mask).sum(), tokens),
            "clip_ratio/high_mean": ((high.float() * mask).sum(), tokens),
            "clip_ratio/region_mean": (((low | high).float() * mask).sum(), tokens),
        })
        return StepOutput(total, metrics)

    return loss


class GRPO(OnlineMethod):
    """GRPO on the rollout source: group-relative advantages, the loss above."""

    name = "grpo"

    def __init__(self, config: GRPOConfig):
        self.config = config
        self.count_tokens = config.loss_type == "dapo"

    def advantages(self, scored: ScoredRollout, accelerator: Any) -> Advantages:
        rewards = scored.rewards.view(-1, scored.rollout.group_size).float()
        batch_std = None
        if self.config.scale_rewards == "batch":
            batch_std = torch.tensor(global_mean_std(rewards.flatten(), accelerator)[1])
        return Advantages(group_advantages(rewards, self.config.scale_rewards, batch_std).flatten())

    def loss_fn(self) -> Any:
        return grpo_loss_fn(self.config)


def run_grpo(config: GRPOConfig, model: Any = None, tokenizer: Any = None, train_records: Any = None,
             reward_funcs: list[Any] | None = None, backend: GenerationBackend | None = None) -> TrainResult:
    """Run GRPO as configured. `reward_funcs` (Python API) adds reward functions with TRL's signature
    to the ones `config.reward` names; `backend` samples the completions (default: the built-in sampler)."""
    return run_online(config, GRPO(config), model, tokenizer, train_records, reward_funcs, backend)
