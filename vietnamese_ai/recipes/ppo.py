"""PPO with a value head, as RLHF runs it (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al.
2022), on our rollout engine.

What runs, per rollout (models sample with dropout off, log-probs at the sampling temperature):

1. one completion per prompt (`num_generations` > 1 is refused: the value estimate is PPO's baseline,
   a group of completions per prompt is GRPO's and RLOO's), scored by the reward; the missing-EOS penalty;
2. one pass over the rollout with the sampling policy: its log-probs and its value estimate at
   every completion token; the reference's log-probs;
3. per-token rewards: the KL penalty -β kl_t at every token (k1 = log π_old - log π_ref, or k3) and the
   score at the last token; optionally whitened without shifting their mean (`whiten_rewards`);
4. GAE advantages and returns (`gamma`, `lam`); the advantages whitened over the rollout;
5. β moves towards `target_kl` (the adaptive controller of Ziegler et al.) when `adaptive_kl` is on.

Then `num_ppo_epochs` passes over the rollout in mini-batches, each token's loss

    l_t = -min(ρ_t A_t, clip(ρ_t, 1 - ε, 1 + ε) A_t) + c_v 1/2 max((V_t - R_t)², (V_clip,t - R_t)²)

averaged over the tokens of an optimizer step (`cliprange` ε, `cliprange_value`, `vf_coef` c_v).

The value head is a linear layer on the policy's final hidden state, initialised to zero (so the
first advantages are the rewards' own GAE), read in the same forward pass as the log-probs. It is
saved beside the model as value_head.safetensors: final/ still loads as a plain causal LM. With
`value_model_name_or_path` a separate value model (models.value) estimates the values instead: a
reward model whose trained head gives the first estimates, trained beside the policy and saved as
final/value_model; the value loss then trains only it.

Seed-compatible names: the keys of TRL's original PPOConfig also work (`batch_size`, `mini_batch_size`,
`ppo_epochs`, `init_kl_coef`, `adap_kl_ctrl`, `target`, `horizon`, `cliprange`, `model_name`) and so do
its generation keyword arguments (`max_new_tokens`, `top_k`, `top_p`, `do_sample`, `min_length`).
One step of that recipe (a batch of prompts) is one rollout here, `batch_size` / `mini_batch_size` x
`ppo_epochs` optimizer steps: `max_rollouts` counts rollouts, `max_steps` optimizer steps.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.losses.online import clipped_surrogate, k3_kl
from vietnamese_ai.losses.ppo import (
    AdaptiveKLController,
    clipped_value_loss,
    explained_variance,
    gae,
    token_rewards,
    whiten,
)
from vietnamese_ai.models.forward import unwrap
from vietnamese_ai.models.value import attach_value_model, check_value_model, forward_with_values, load_value_model
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
from vietnamese_ai.training.metrics import reduce_sums

# TRL's original PPOConfig and generate() keyword names -> ours.
RENAMED = {"ppo_epochs": "num_ppo_epochs", "init_kl_coef": "kl_coef", "adap_kl_ctrl": "adaptive_kl", "target": "target_kl",
           "cliprange": "epsilon", "max_new_tokens": "max_completion_length", "model_name": "model_name_or_path"}


class PPOConfig(OnlineConfig):
    renamed_keys: ClassVar[dict[str, str]] = {**OnlineConfig.renamed_keys, **RENAMED}
    output_dir: str = Field("runs/ppo", description="Directory for config.yaml, metrics.jsonl, completions.jsonl, checkpoints/ and final/.")
    learning_rate: float = Field(3e-6, ge=0, description="Peak learning rate (AdamW), for the policy and its value head.")
    num_generations: int = Field(1, ge=1, le=1, description="Completions sampled per prompt: always 1 (the value head or value model is PPO's baseline; several completions per prompt are GRPO's and RLOO's).")
    per_device_train_batch_size: int = Field(4, ge=1, description="Completions per micro-batch on each device.")
    batch_size: int | None = Field(None, ge=1, description="Completions per rollout on each device (TRL's original name; sets steps_per_generation). A step of the original recipe is one rollout: count them with max_rollouts (max_steps counts optimizer steps, batch_size / mini_batch_size x ppo_epochs per rollout).")
    mini_batch_size: int | None = Field(None, ge=1, description="Completions per optimizer step on each device (TRL's original name; sets per_device_train_batch_size = mini_batch_size / gradient_accumulation_steps).")
    num_ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout (ppo_epochs).")
    kl_coef: float = Field(0.05, ge=0, description="β: weight of the per-token KL penalty in the reward (the starting value with adaptive_kl); 0 loads no reference.")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="Per-token KL in the reward: k1 = log π_old - log π_ref, or k3 (never negative).")
    adaptive_kl: bool = Field(False, description="Move kl_coef towards target_kl after each rollout (Ziegler et al. 2019).")
    target_kl: float = Field(6.0, gt=0, description="The summed KL per completion that the adaptive controller aims for.")
    horizon: float = Field(10000, gt=0, description="The adaptive controller's horizon in completions: larger moves β more slowly.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount of GAE.")
    lam: float = Field(0.95, ge=0, le=1, description="λ of GAE.")
    cliprange_value: float = Field(0.2, gt=0, description="How far a value may move from its sampling-time estimate before its error stops pulling it.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    whiten_rewards: bool = Field(False, description="Scale the per-token rewards to unit variance over the rollout, keeping their mean.")
    do_sample: bool = Field(True, description="PPO samples; false is refused (greedy completions carry no exploration and no valid ratio).")
    min_length: int = Field(-1, description="Generation's minimum total length (prompt + completion), as in transformers; only values no longer than every prompt are accepted: a longer one would suppress EOS, and the loss would not be the sampled distribution's.")
    ref_model_name_or_path: str | None = Field(None, description="Reference for the KL penalty; default: the starting policy (with a fresh LoRA adapter: the policy with adapters off).")
    value_model_name_or_path: str | None = Field(None, description="A separate value model, trained beside the policy (full, or its own LoRA adapter with use_lora) and saved as final/value_model: a reward model (its trained head gives the first values) or any causal LM (a zero-initialised head); default: a zero-initialised value head on the policy.")

    @field_validator("num_generations", mode="before")
    @classmethod
    def _one_completion(cls, value: Any) -> Any:
        # Refused rather than supported: several completions of a prompt only help with a group
        # baseline, and PPO's baseline is its value estimate (GRPO and RLOO use the group instead).
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            raise ValueError("PPO samples one completion per prompt (its baseline is the value head or value model); "
                             "several completions per prompt with a group baseline are GRPO's or RLOO's "
                             "(vietnamese-ai grpo / rloo)")
        return value

    @model_validator(mode="after")
    def _ppo_shape(self) -> "PPOConfig":
        if not self.do_sample:
            raise ValueError("do_sample=false: PPO trains on sampled completions")
        if self.mini_batch_size is not None and self.mini_batch_size % self.gradient_accumulation_steps:
            raise ValueError(f"mini_batch_size={self.mini_batch_size} is not a multiple of "
                             f"gradient_accumulation_steps={self.gradient_accumulation_steps}")
        return self

    @property
    def beta(self) -> float:   # the engine's name for "a reference is needed"
        return self.kl_coef

    def resolved(self) -> "PPOConfig":
        """The engine's keys from TRL's original batch names (per device, as they were)."""
        updates: dict[str, Any] = {"num_iterations": self.num_ppo_epochs}
        micro = self.per_device_train_batch_size
        if self.mini_batch_size is not None:
            micro = updates["per_device_train_batch_size"] = self.mini_batch_size // self.gradient_accumulation_steps
        if self.batch_size is not None:
            mini = micro * self.gradient_accumulation_steps
            if self.batch_size % mini:
                raise ConfigError(f"batch_size={self.batch_size} is not a multiple of the mini-batch "
                                  f"({micro} x {self.gradient_accumulation_steps} accumulation = {mini} completions)")
            updates["steps_per_generation"] = self.batch_size // micro
        return self.model_copy(update=updates)


class PPO(OnlineMethod):
    """PPO on the rollout source: per-token advantages (GAE over the KL-penalised rewards and the
    values read in the rollout pass), the loss above, the value head or value model it attaches, and
    the adaptive KL controller, whose coefficient goes into checkpoints with the rollout."""

    name = "ppo"
    count_tokens = True

    def __init__(self, config: PPOConfig):
        self.config = config
        self.controller = AdaptiveKLController(config.kl_coef, config.target_kl, config.horizon)

    def needs(self) -> RolloutNeeds:
        return RolloutNeeds(old_logps=True, values=True)

    def state_dict(self) -> dict[str, Any]:
        return {"kl_coef": self.controller.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.value = state.get("kl_coef", self.config.kl_coef)

    def check_prompts(self, prompts: list[Any]) -> None:
        shortest = min(len(p.ids) for p in prompts)
        if self.config.min_length > shortest:
            raise ConfigError(f"min_length={self.config.min_length}: the shortest prompt has {shortest} tokens, so EOS "
                              f"would be suppressed, and the loss would not be that of the distribution sampled; use "
                              f"missing_eos_penalty or a reward for length instead")

    def prepare_policy(self, model: Any, tokenizer: Any) -> None:
        """A value head on the policy, or the separate value model (saved beside the policy either way)."""
        if self.config.value_model_name_or_path is None:
            return attach_value_head(model)
        from vietnamese_ai.recipes.common import pad_token_id, prepare_trainable

        value_model = load_value_model(self.config, pad_token_id(tokenizer, model))
        attach_value_model(model, prepare_trainable(self.config, value_model, task_type="SEQ_CLS"))

    def loss_fn(self) -> Any:
        return ppo_loss_fn(self.config)

    def advantages(self, scored: ScoredRollout, accelerator: Any) -> Advantages:
        config, rollout, rewards = self.config, scored.rollout, scored.rewards
        mask = padded([[1.0] * len(c) for c in rollout.completion_ids])
        old, values = padded(rollout.old_logps), padded(rollout.values)
        kl = torch.zeros_like(old)
        if rollout.ref_logps is not None:
            ref = padded(rollout.ref_logps)
            kl = (old - ref if config.kl_estimator == "k1" else k3_kl(old, ref)) * mask
        coef = self.controller.value
        per_token = token_rewards(rewards.float(), kl, mask, coef)
        if config.whiten_rewards:
            per_token = whiten(per_token, mask, False, *global_mean_std(per_token[mask.bool()], accelerator))
        advantages, returns = gae(per_token, values, mask, config.gamma, config.lam)
        advantages = whiten(advantages, mask, True, *global_mean_std(advantages[mask.bool()], accelerator))

        n, kl_sum, scores, returns_sum, tokens = reduce_sums(accelerator, [
            float(len(rollout.completion_ids)), float(kl.sum()), float(rewards.sum()),
            float(returns[mask.bool()].sum()), float(mask.sum())])
        if config.adaptive_kl and rollout.ref_logps is not None:
            self.controller.update(kl_sum / n, int(n))
        variance = explained_variance(values[mask.bool()], returns[mask.bool()])
        score_mean, score_std = global_mean_std(rewards, accelerator)
        statistics = {"kl": kl_sum / n, "kl_coef": coef, "ppo/mean_scores": score_mean, "ppo/std_scores": score_std,
                      "ppo/returns/mean": returns_sum / tokens, "explained_variance": variance}
        return Advantages(per_completion=torch.zeros(len(rollout.completion_ids)),   # per token here
                          shown=(advantages * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1),
                          per_token=unpadded(advantages, mask), returns=unpadded(returns, mask),
                          statistics=statistics)


def padded(rows: list[list[float]]) -> torch.Tensor:
    """Shape: returns (M, T) float32, zeros after each row's end"""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0.0] * (width - len(r)) for r in rows], dtype=torch.float32)


def unpadded(values: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    return [row[: int(m.sum())].tolist() for row, m in zip(values, mask)]


def ppo_loss_fn(config: PPOConfig):
    def loss(model: Any, batch: PackedBatch) -> StepOutput:
        rollout = batch.extras["rollout"]
        logps, entropy, values = forward_with_values(model, batch, config.temperature, entropy=True)
        policy, low, high = clipped_surrogate(logps, rollout.old_logps, rollout.token_advantages, config.epsilon,
                                              config.epsilon_high if config.epsilon_high is not None else config.epsilon)
        value, value_clipped = clipped_value_loss(values, rollout.old_values, rollout.returns, config.cliprange_value)
        mask = rollout.token_mask
        tokens = mask.sum()
        clipped = ((low | high).float() * mask).sum()
        masked = lambda t: (t.detach() * mask).sum()  # noqa: E731
        metrics = {
            "policy_loss": (masked(policy), tokens), "value_loss": (masked(value), tokens), "clip_ratio": (clipped, tokens),
            "ppo/val/clipfrac": ((value_clipped.float() * mask).sum(), tokens),
            "ppo/val/vpred": (masked(values), tokens),
            "ppo/val/error": (masked((values - rollout.returns) ** 2), tokens),
            "ppo/policy/approxkl": (masked(0.5 * (logps - rollout.old_logps) ** 2), tokens),
            "entropy": ((entropy * mask).sum(), tokens),
        }
        return StepOutput(((policy + config.vf_coef * value) * mask).sum(), metrics)

    return loss


def attach_value_head(model: Any) -> None:
    """A zero-initialised scalar head on the final hidden state, trained with the policy and saved
    beside it (value_head.safetensors)."""
    from vietnamese_ai.models.io import attach_scalar_head

    head = attach_scalar_head(unwrap(model), "value_head")
    torch.nn.init.zeros_(head.weight)
    head.float()


def run_ppo(config: PPOConfig, model: Any = None, tokenizer: Any = None, train_records: Any = None,
            reward_funcs: list[Any] | None = None, backend: GenerationBackend | None = None) -> TrainResult:
    """Run PPO as configured; `reward_funcs` and `backend` as in run_grpo."""
    config = config.resolved()
    if config.value_model_name_or_path:
        check_value_model(config.value_model_name_or_path, config.trust_remote_code)
    return run_online(config, PPO(config), model, tokenizer, train_records, reward_funcs, backend)
