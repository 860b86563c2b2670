"""What an online run is: its config keys (OnlineConfig), how a rollout is cut for a number of
processes (RolloutShape), and the run's length in rollouts and optimizer steps, said at start-up."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from vietnamese_ai.errors import ConfigError
from vietnamese_ai.training.config import Datasets, TrainingConfig
from vietnamese_ai.training.loop import total_optimizer_steps

log = logging.getLogger("vietnamese_ai")


class OnlineConfig(TrainingConfig):
    """Keys of GRPO and RLOO; names and meanings follow TRL's GRPOConfig / RLOOConfig."""

    required_on_command_line: ClassVar[tuple[str, ...]] = ("model_name_or_path", "dataset", "reward")

    dataset: Datasets = Field(None, description="Prompts: a file or hub data set (or a list of them mixed by weight, as for training) whose records have a 'prompt' (a string, used as it is, or messages, rendered with the chat template); other fields reach Python reward functions.")
    learning_rate: float = Field(1e-6, ge=0, description="Peak learning rate (AdamW).")
    per_device_train_batch_size: int = Field(8, ge=1, description="Completions (not prompts) per micro-batch on each device.")
    reward: str | list[str] | None = Field(None, description="What scores completions: scorer strings (constitution[:FILE], reward_model:PATH, classifier:MODEL:LABEL[:logit], judge:MODEL) or python:FILE.py:FUNCTION; several as a list, or as a@w+b@v: the weighted sum w*a + v*b (any finite weights, one at least not 0).")
    reward_weights: list[float] | None = Field(None, description="One weight per entry of `reward`, multiplying its parts' '@w' weights (default: 1 each); the total reward is the weighted sum, as in TRL.")
    constitution: str | None = Field(None, description="Constitution YAML for the 'constitution' and 'judge' rewards (default: built-in).")
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt (G).")
    max_prompt_length: int | None = Field(None, ge=1, description="Cut longer prompts from the left (TRL has no such key any more; default: no cut).")
    max_completion_length: int = Field(512, ge=1, description="Most tokens sampled per completion.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature; the loss's log-probs are computed at it too.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    top_k: int = Field(0, ge=0, description="Sample from the k most likely tokens (0: all).")
    steps_per_generation: int | None = Field(None, ge=1, description="Micro-batches per rollout on each device (default: gradient_accumulation_steps).")
    generation_batch_size: int | None = Field(None, ge=1, description="Completions per rollout over all devices (alternative to steps_per_generation).")
    num_iterations: int = Field(1, ge=1, description="Passes over each rollout (mu in the GRPO paper).")
    max_steps: int = Field(-1, ge=-1, description="Optimizer steps to run, not rollouts: one rollout is trained for (steps_per_generation / gradient_accumulation_steps) x num_iterations optimizer steps (said at start-up); -1 means use max_rollouts or num_train_epochs.")
    max_rollouts: int | None = Field(None, ge=1, description="Rollouts to run (each one batch of prompts sampled, scored and trained on); the run then takes max_rollouts x the optimizer steps per rollout (said at start-up). Give it or max_steps, not both; either overrides num_train_epochs.")
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clip range below 1 of the importance ratio (and above, unless epsilon_high is set).")
    epsilon_high: float | None = Field(None, gt=0, description="Clip range above 1 (DAPO's clip-higher); default: epsilon.")
    reward_cut_completions: Literal["as_sampled", "with_eos"] = Field("as_sampled", description="Where a reward model that shares the policy's tokenizer reads a completion cut at max_completion_length without EOS: as_sampled, at its last sampled token (as TRL and OpenRLHF read it), or with_eos, at an EOS appended after it (as if finished). Scorers that read text are not affected.")
    missing_eos_penalty: float | None = Field(None, ge=0, description="Subtracted from the reward of a completion that reaches max_completion_length without EOS.")
    mask_truncated_completions: bool = Field(False, description="Leave completions cut without EOS out of the loss (they still count in the advantages).")
    ref_model_name_or_path: str | None = Field(None, description="Reference for the KL term; default: the starting policy (with a fresh LoRA adapter: the policy with adapters off).")
    disable_dropout: bool = Field(True, description="Switch dropout off, so that the ratio is exactly 1 on a rollout's first pass (TRL's default is off).")
    packing: bool = Field(True, description="Pack several prompts' completions per row (off automatically if the model cannot pack exactly).")
    prefix_sharing: bool = Field(True, description="Compute each prompt once for all its completions (off automatically if inexact).")
    prompt_cache: bool = Field(True, description="With prefix_sharing: run the prompts once and the completions on their KV cache, rather than as branches of one masked row (off automatically if inexact, with gradient checkpointing, or with PPO's separate value model).")
    log_completions: bool = Field(True, description="Write sampled prompts, completions and rewards to completions.jsonl.")
    completions_steps: int | None = Field(None, ge=1, description="Write completions.jsonl every N steps (default: logging_steps).")
    num_completions_to_print: int | None = Field(8, ge=1, description="Completions written each time (null: all of this process's).")
    sampling_batch_size: int = Field(32, ge=1, description="Prompts sampled together (each with its num_generations completions).")
    active_sampling: Literal["none", "variance"] = Field("none", description="'variance': before training, sample active_sampling_samples completions of every prompt with the starting policy and score them; each epoch then draws its prompt order with probability proportional to the variance of a prompt's rewards, so contested prompts come first and prompts whose samples all score the same come last (docs/online_rl.md#active-sampling). 'none': a uniform shuffle.")
    active_sampling_samples: int | None = Field(None, ge=2, description="Completions per prompt in the active-sampling pass (default: num_generations).")

    @field_validator("reward", mode="before")
    @classmethod
    def _reward_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("reward")
    @classmethod
    def _reward_specs(cls, value: list[str] | None) -> list[str] | None:
        # The syntax is checked with the config, so that a pipeline refuses a malformed reward before its
        # first stage; whether the weights are all 0 depends on reward_weights too (build_rewards).
        from vietnamese_ai.scoring.combine import weighted_parts

        for entry in value or []:
            weighted_parts(entry, nonzero=False)
        return value

    @model_validator(mode="after")
    def _generation_shape(self) -> "OnlineConfig":
        for key, instead in (("eval_dataset", "evaluate the trained model afterwards"),
                             ("max_length", "use max_prompt_length and max_completion_length")):
            if key in self.model_fields_set and getattr(self, key) is not None:
                raise ValueError(f"{key} does not apply to online RL; {instead}")
        if self.steps_per_generation is not None and self.generation_batch_size is not None:
            raise ValueError("give steps_per_generation or generation_batch_size, not both")
        if self.max_rollouts is not None and self.max_steps > 0:
            raise ValueError(f"max_rollouts={self.max_rollouts} and max_steps={self.max_steps}: give one of them "
                             f"(max_rollouts counts rollouts, max_steps optimizer steps)")
        if self.reward_weights is not None and self.reward is not None and len(self.reward_weights) != len(self.reward):
            raise ValueError(f"reward_weights has {len(self.reward_weights)} entries for {len(self.reward)} rewards")
        if self.reward_weights is not None and not self.reward:
            # Ignoring them would train on other weights than the user gave.
            raise ValueError("reward_weights weights the entries of reward, which is not given (a function passed "
                             "as reward_funcs weighs 1: scale its values inside it)")
        return self


@dataclass
class RolloutShape:
    """How rollouts are cut, for this number of processes."""

    steps: int                # micro-batches per rollout on each process (steps_per_generation)
    prompts: int              # prompts per rollout on each process (P)
    world: int
    optimizer_steps: int      # optimizer steps per pass over one rollout
    passes: int = 1           # passes over each rollout (num_iterations)
    group: int = 1            # completions per prompt (num_generations)

    @property
    def steps_per_rollout(self) -> int:
        """Optimizer steps one rollout is trained for, over all its passes."""
        return self.optimizer_steps * self.passes

    def rollouts_per_epoch(self, num_prompts: int) -> int:
        """Whole rollouts an epoch of `num_prompts` fills; the prompts left over (fewer than a rollout
        takes) sit out that epoch, and the next epoch's order is another."""
        per_epoch = num_prompts // (self.prompts * self.world)
        if per_epoch == 0:
            raise ConfigError(f"dataset: {num_prompts} prompts cannot fill one rollout of {self.prompts} "
                              f"prompts on each of {self.world} processes")
        return per_epoch

    @classmethod
    def of(cls, config: OnlineConfig, world: int) -> "RolloutShape":
        batch, accumulation, group = config.per_device_train_batch_size, config.gradient_accumulation_steps, config.num_generations
        if config.generation_batch_size is not None:
            if config.generation_batch_size % (batch * world):
                raise ConfigError(f"generation_batch_size: {config.generation_batch_size} is not a multiple of "
                                  f"per_device_train_batch_size x processes = {batch * world}")
            steps = config.generation_batch_size // (batch * world)
        else:
            steps = config.steps_per_generation or accumulation
        if steps % accumulation:
            raise ConfigError(f"steps_per_generation: {steps} micro-batches per rollout is not a multiple of "
                              f"gradient_accumulation_steps={accumulation}")
        if (batch * steps) % group:
            raise ConfigError(f"per_device_train_batch_size: {batch} x {steps} micro-batches = {batch * steps} completions "
                              f"per rollout on each process is not a multiple of num_generations={group}; every prompt's "
                              f"completions must be sampled together")
        return cls(steps, batch * steps // group, world, steps // accumulation, config.num_iterations, group)


def plan_rollouts(config: OnlineConfig, shape: RolloutShape, num_prompts: int, name: str) -> OnlineConfig:
    """The run's length, said in one line at start-up in rollouts and optimizer steps. max_rollouts
    becomes the max_steps it amounts to, the count the training loop runs by (config.yaml records
    that max_steps)."""
    per_epoch = shape.rollouts_per_epoch(num_prompts)
    if config.max_rollouts is not None:
        config = config.model_copy(update={"max_steps": config.max_rollouts * shape.steps_per_rollout,
                                           "max_rollouts": None})
    total = total_optimizer_steps(config, per_epoch * shape.steps_per_rollout)
    log.info(describe_run_length(name, shape, total, per_epoch, num_prompts))
    done = total % shape.steps_per_rollout
    if done:
        cause = f"max_steps={config.max_steps}" if config.max_steps > 0 else f"num_train_epochs={config.num_train_epochs:g}"
        log.warning("%s stops rollout %d after %d of its %d optimizer steps (max_steps counts optimizer steps; "
                    "max_rollouts counts rollouts)", cause, math.ceil(total / shape.steps_per_rollout), done,
                    shape.steps_per_rollout)
    return config


def describe_run_length(name: str, shape: RolloutShape, total_steps: int, rollouts_per_epoch: int, num_prompts: int) -> str:
    """The start-up line: rollouts x optimizer steps each = the total, what a rollout is, and the
    epochs (the logged `epoch` of the last step).

    >>> shape = RolloutShape(steps=2, prompts=4, world=1, optimizer_steps=2, passes=2)
    >>> describe_run_length("ppo", shape, 12, 2, 8)
    'ppo: 3 rollouts x 4 optimizer steps each = 12 optimizer steps; a rollout: 4 prompts x 1 completion on 1 process, 2 optimizer steps per pass x 2 passes; 1.5 epochs of 8 prompts'
    >>> describe_run_length("ppo", shape, 10, 2, 8).split(";")[0]
    'ppo: 3 rollouts x 4 optimizer steps each, the last cut to 2 = 10 optimizer steps'
    >>> describe_run_length("grpo", RolloutShape(steps=1, prompts=1, world=2, optimizer_steps=1, group=8), 10, 2, 5)
    'grpo: 10 rollouts x 1 optimizer step each = 10 optimizer steps; a rollout: 1 prompt x 8 completions on each of 2 processes, 1 optimizer step per pass x 1 pass; 5 epochs of 5 prompts'
    """
    def counted(n: int, word: str, plural: str = "s") -> str:
        return f"{n} {word}{'' if n == 1 else plural}"

    each = shape.steps_per_rollout
    cut = total_steps % each
    last = f", the last cut to {cut}" if cut else ""
    where = "on 1 process" if shape.world == 1 else f"on each of {shape.world} processes"
    return (f"{name}: {counted(math.ceil(total_steps / each), 'rollout')} x {counted(each, 'optimizer step')} each{last}"
            f" = {counted(total_steps, 'optimizer step')}; a rollout: {counted(shape.prompts, 'prompt')} x "
            f"{counted(shape.group, 'completion')} {where}, {counted(shape.optimizer_steps, 'optimizer step')} per "
            f"pass x {counted(shape.passes, 'pass', 'es')}; {total_steps / (rollouts_per_epoch * each):.4g} epochs of "
            f"{num_prompts} prompts")
