"""The online-RL engine shared by GRPO and RLOO: prompts, rewards, and the step source that samples,
scores and lays out rollouts for the training loop.

One rollout phase, on each process:

1. take the next P prompts of the epoch's seeded order (P = per_device_train_batch_size x
   steps_per_generation / num_generations);
2. sample G completions of each (models.sampling: each prompt prefilled once; completion j of the
   prompt at position i of epoch e draws from its own seed (seed, e, i, j), so what is sampled does not
   depend on the number of processes or the batching);
3. score them with every reward (scorers by their registry strings, or Python functions), add the
   weighted rewards, subtract `missing_eos_penalty` from completions cut without EOS;
4. compute what the loss needs, without gradients, in the layout training will use: the reference's
   log-probs (beta > 0) and, when the policy will have moved by the time a micro-batch is trained
   (num_iterations > 1 or steps_per_generation > gradient_accumulation_steps), the sampling policy's;
5. the method's advantages (GRPO: group-relative; RLOO: leave-one-out).

The rollout is then trained on in `steps_per_generation` micro-batches, `num_iterations` times over,
`gradient_accumulation_steps` micro-batches per optimizer step. The rollout and the position in it are
the source's state: they go into checkpoints, so a resumed run continues exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from vietnamese_ai.data.loading import Record
from vietnamese_ai.data.records import prompt_or_messages
from vietnamese_ai.data.rollout import Rollout, rollout_batch
from vietnamese_ai.data.tokenize import _cut_prompt_left, prompt_ids
from vietnamese_ai.data.types import PromptOrMessages, message_dicts
from vietnamese_ai.errors import ConfigError, DataError, TrainingError
from vietnamese_ai.models.sampling import sample_completions
from vietnamese_ai.training.checkpoint import TrainerState
from vietnamese_ai.training.config import TrainingConfig
from vietnamese_ai.training.loop import process_state, total_optimizer_steps, train
from vietnamese_ai.training.metrics import MetricsLog, reduce_sums
from vietnamese_ai.training.sources import StepBatches

log = logging.getLogger("vietnamese_ai")


class OnlineConfig(TrainingConfig):
    """Keys of GRPO and RLOO; names and meanings follow TRL's GRPOConfig / RLOOConfig."""

    required_on_command_line: ClassVar[tuple[str, ...]] = ("model_name_or_path", "dataset", "reward")

    dataset: str | None = Field(None, description="Prompts: a file or hub data set whose records have a 'prompt' (a string, used as it is, or messages, rendered with the chat template); other fields reach Python reward functions.")
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


@dataclass
class PromptExample:
    prompt: PromptOrMessages          # as given: a string, or messages
    ids: list[int]                    # tokenised as the model sees it
    columns: dict[str, Any]           # the record's other fields, for Python reward functions


def read_prompt(record: Record) -> PromptOrMessages:
    if "prompt" not in record.data:
        raise DataError.at(record.where, "prompt", "missing")
    return prompt_or_messages(record, "prompt")


def tokenize_prompts(records: list[Record], tokenizer: Any, max_prompt_length: int | None) -> list[PromptExample]:
    examples, cut = [], 0
    for record in records:
        prompt = read_prompt(record)
        ids = prompt_ids(tokenizer, prompt)
        if not ids:
            raise DataError.at(record.where, "prompt", "gives no tokens")
        if max_prompt_length is not None and len(ids) > max_prompt_length:
            ids, cut = _cut_prompt_left(ids, max_prompt_length, getattr(tokenizer, "bos_token_id", None)), cut + 1
        examples.append(PromptExample(prompt, ids, {k: v for k, v in record.data.items() if k != "prompt"}))
    if cut:
        log.info("prompts: %d of %d cut from the left to max_prompt_length=%d", cut, len(records), max_prompt_length)
    return examples


# ---------------------------------------------------------------------------------------------------- rewards


@dataclass
class RewardTerm:
    name: str
    weight: float
    compute: Callable[[dict[str, Any]], list[Any]]   # inputs -> one value (or None) per completion
    scorer: Any = None                               # the Scorer behind a scorer term


def _scorer_term(spec: str, weight: float, constitution: str | None, device: Any) -> RewardTerm:
    from vietnamese_ai.feedback.registry import build_single

    scorer = build_single(spec, constitution, key="reward")
    if device is not None and hasattr(scorer, "model") and isinstance(scorer.model, torch.nn.Module):
        scorer.model.to(device)

    def compute(inputs: dict[str, Any]) -> list[Any]:
        return [s.value for s in scorer.score(inputs["scorer_prompts"], inputs["texts"])]

    return RewardTerm(spec, weight, compute, scorer)


def read_sampled_ids(terms: list[RewardTerm], tokenizer: Any, append_eos: bool = False) -> None:
    """A reward model with the policy's own tokenizer reads the sampled ids, not their decoded text
    re-tokenised: text need not round-trip to the same ids (a policy may sample token sequences that
    the tokenizer would never produce), and then the reward would not be that of the tokens the
    policy chose. A completion cut before EOS is read at its last token, or with EOS appended
    (`append_eos`). Any other scorer reads the text."""
    from vietnamese_ai.models.fingerprint import tokenizer_fingerprint
    from vietnamese_ai.scoring.reward_model import RewardModelScorer

    policy = tokenizer_fingerprint(tokenizer)
    for term in terms:
        scorer = term.scorer
        if isinstance(scorer, RewardModelScorer) and tokenizer_fingerprint(scorer.tokenizer) == policy:
            term.compute = lambda inputs, scorer=scorer: scorer.rewards_of_ids(inputs["prompt_ids"],
                                                                               inputs["completion_ids"], append_eos)


def _python_term(spec: str, weight: float) -> RewardTerm:
    from vietnamese_ai.scoring.functions import load_reward_function

    name, function = load_reward_function(spec)

    def compute(inputs: dict[str, Any]) -> list[Any]:
        return function(prompts=inputs["prompts"], completions=inputs["completions"],
                        completion_ids=inputs["completion_ids"], trainer_state=inputs["trainer_state"], **inputs["columns"])

    return RewardTerm(name, weight, compute)


def build_rewards(config: OnlineConfig, device: Any = None, reward_funcs: list[Any] | None = None) -> list[RewardTerm]:
    """One term per part of each `reward` entry, then one per function of `reward_funcs` (weight 1).

    A part's weight is its '@w' times its entry's `reward_weights`, and the total reward is the
    weighted sum of the terms (scoring.combine: the meaning of a@w+b@v everywhere). Every entry is
    parsed, and the weights checked, before any scorer loads."""
    from vietnamese_ai.scoring.combine import parse_weighted
    from vietnamese_ai.scoring.functions import PREFIX

    for function in reward_funcs or []:
        if not callable(function):
            raise ConfigError(f"reward_funcs: {function!r} is not a function")
    if not config.reward and not reward_funcs:
        raise ConfigError("reward: required (a scorer string such as 'constitution', or python:FILE.py:FUNCTION)")
    entries = config.reward or []
    entry_weights = config.reward_weights or [1.0] * len(entries)
    parts = [(spec, weight * entry_weight) for entry, entry_weight in zip(entries, entry_weights)
             for spec, weight in parse_weighted(entry, "reward", nonzero=False)]
    for spec, weight in parts:
        if not math.isfinite(weight):
            raise ConfigError(f"reward: the weight of '{spec}' times its reward_weights entry is not a finite number")
    if not reward_funcs and all(weight == 0 for _, weight in parts):
        given = f" with reward_weights {config.reward_weights}" if config.reward_weights else ""
        raise ConfigError(f"reward: every weight is 0 in {entries}{given}; at least one must be non-zero")
    terms = [_python_term(spec, weight) if spec.startswith(PREFIX) else
             _scorer_term(spec, weight, config.constitution, device) for spec, weight in parts]
    terms += [_callable_term(f) for f in reward_funcs or []]
    seen: dict[str, int] = {}
    for term in terms:   # distinct names, so that each term's metrics (rewards/<name>/mean) are its own
        seen[term.name] = seen.get(term.name, 0) + 1
        if seen[term.name] > 1:
            term.name = f"{term.name}_{seen[term.name]}"
    return terms


def reward_number(value: Any) -> float | None:
    """A reward function's value as a float, or None ("does not apply"); anything else raises
    ValueError. TRL turns what reward functions return into a float tensor, so numpy and torch
    scalars and booleans are numbers here too; text, sequences and complex numbers are not.

    >>> reward_number(np.float32(0.5)), reward_number(np.int64(2)), reward_number(np.bool_(True)), reward_number(None)
    (0.5, 2.0, 1.0, None)
    """
    if value is None:
        return None
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.ndim == 0):
        value = value.item()
    if not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(value)
    return float(value)


def score_completions(terms: list[RewardTerm], inputs: dict[str, Any], count: int, step: int) -> torch.Tensor:
    """Every term's values, checked: one per completion, numbers or None, never NaN or infinite.

    Shape: returns (count, len(terms)) float64, NaN where a term returned None
    """
    columns = []
    for term in terms:
        try:
            values = list(term.compute(inputs))
        except Exception as e:  # the user's reward function: its failure is reported, not a traceback of ours
            raise TrainingError(f"reward '{term.name}' raised {type(e).__name__}: {e} (at step {step})") from None
        if len(values) != count:
            raise TrainingError(f"reward '{term.name}' returned {len(values)} values for {count} completions (at step {step})")
        column = []
        for k, value in enumerate(values):
            try:
                number = reward_number(value)
            except ValueError:
                raise TrainingError(f"reward '{term.name}' returned {value!r} for completion {k} (at step {step}); "
                                    f"rewards must be finite numbers, or None when they do not apply") from None
            column.append(math.nan if number is None else number)
        columns.append(column)
    values = torch.tensor(columns, dtype=torch.float64).T
    if bool(values.isnan().all(dim=1).any()):
        k = int(values.isnan().all(dim=1).nonzero()[0])
        raise TrainingError(f"every reward returned None for completion {k} (at step {step}): nothing to learn from it")
    return values


def global_mean_std(values: torch.Tensor, accelerator: Any) -> tuple[float, float]:
    """Mean and unbiased standard deviation of `values` over all processes."""
    n, total, squares = reduce_sums(accelerator, [float(values.numel()), float(values.sum()), float((values ** 2).sum())])
    mean = total / max(n, 1.0)
    variance = (squares - n * mean * mean) / max(n - 1.0, 1.0)
    return mean, math.sqrt(max(variance, 0.0))


# -------------------------------------------------------------------------------------------------- the source


def completion_seed(seed: int, epoch: int, position: int, sample: int) -> int:
    """The seed of one completion: the prompt's place in the run's prompt order, and which sample."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{position}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class OnlineMethod:
    """What GRPO and RLOO plug into the engine."""

    name: str
    # (rewards (N, G), KL(old || ref) summed per completion (N, G) or None, accelerator) -> advantages (N, G)
    advantages: Callable[[torch.Tensor, torch.Tensor | None, Any], torch.Tensor]
    count_tokens: bool                 # the loss is a token mean (dapo) rather than a completion mean
    old_logps_always: bool = False     # compute the sampling policy's log-probs even when training on-policy
    values: bool = False               # read the policy's value head in the rollout pass (PPO)


class RolloutSource:
    """A StepSource that samples, scores and lays out rollouts (see the module docstring)."""

    def __init__(self, config: OnlineConfig, prompts: list[PromptExample], tokenizer: Any, rewards: list[RewardTerm],
                 method: OnlineMethod, reference: Any, pack: bool, share: bool, pad_token_id: int, pair_cost: float):
        self.config, self.prompts, self.tokenizer, self.rewards, self.method = config, prompts, tokenizer, rewards, method
        self.reference, self.pack, self.share = reference, pack, share
        self.cache_prompts = False   # set by run_online when the model computes it exactly
        self.pad_token_id, self.pair_cost = pad_token_id, pair_cost
        self.examples = len(prompts)
        self.rollout: Rollout | None = None
        self.rollout_json: dict[str, Any] | None = None
        self.cursor = 0          # micro-batches of the current rollout already handed out (over all passes)
        self.completions_log: MetricsLog | None = None

    # --- the StepSource protocol

    def setup(self, accelerator: Any) -> int:
        self.accelerator = accelerator
        self.shape = RolloutShape.of(self.config, accelerator.num_processes)
        # The loop's epoch is step / this: whole rollouts trained over the rollouts an epoch holds.
        return self.shape.rollouts_per_epoch(len(self.prompts)) * self.shape.steps_per_rollout

    def attach(self, model: Any, output_dir: str, resume_step: int | None) -> None:
        self.model = model
        if self.config.log_completions and self.accelerator.is_main_process:
            self.completions_log = MetricsLog(os.path.join(output_dir, "completions.jsonl"), resume_step, True)

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "rollout": self.rollout_json}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor = state.get("cursor", 0)
        data = state.get("rollout")
        if data is not self.rollout_json:
            self.rollout, self.rollout_json = (Rollout.from_json(data), data) if data else (None, None)

    def next_step(self, state: TrainerState) -> StepBatches:
        step = StepBatches([])
        passes = self.shape.steps * self.config.num_iterations
        if self.rollout is None or self.cursor >= passes:
            self._new_rollout(state, step)
        for _ in range(self.config.gradient_accumulation_steps):
            indices = self.rollout.micro_batches[self.cursor % self.shape.steps]
            step.batches.append(self._batch(self.rollout, indices))
            self.cursor += 1
        return step

    @classmethod
    def check_prompts(cls, config: OnlineConfig, prompts: list[PromptExample]) -> None:
        """Refuse settings the prompts make impossible, before the model loads (for methods to extend)."""

    # --- one rollout phase

    def _batch(self, rollout: Rollout, indices: list[int]) -> Any:
        return rollout_batch(rollout, indices, self.pack, self.share, self.pad_token_id, self.pair_cost,
                             self.method.count_tokens, self.config.mask_truncated_completions, self.cache_prompts)

    def _take_prompts(self, state: TrainerState) -> list[tuple[int, int, PromptExample]]:
        """This process's prompts for the next rollout: (epoch, position in the epoch's order, prompt)."""
        needed = self.shape.prompts * self.shape.world
        if state.micro_index + needed > len(self.prompts):
            state.epoch, state.micro_index = state.epoch + 1, 0
        generator = torch.Generator().manual_seed(self.config.seed + state.epoch)
        order = torch.randperm(len(self.prompts), generator=generator).tolist()
        first = state.micro_index + self.accelerator.process_index * self.shape.prompts
        taken = [(state.epoch, p, self.prompts[order[p]]) for p in range(first, first + self.shape.prompts)]
        state.micro_index += needed
        return taken

    def _new_rollout(self, state: TrainerState, step: StepBatches) -> None:
        config, group = self.config, self.config.num_generations
        taken = self._take_prompts(state)
        seeds = [completion_seed(config.seed, epoch, position, j) for epoch, position, _ in taken for j in range(group)]
        started = time.perf_counter()
        samples = sample_completions(self.model, [p.ids for _, _, p in taken], group, seeds, config.max_completion_length,
                                     self.tokenizer.eos_token_id, self.pad_token_id, config.temperature, config.top_k,
                                     config.top_p, config.sampling_batch_size)
        generated = time.perf_counter()
        prompts = [p for _, _, p in taken for _ in range(group)]
        texts = [self.tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in samples]
        finished = [s.finished for s in samples]
        parts = score_completions(self.rewards, self._reward_inputs(prompts, samples, texts, state), len(samples),
                                  state.global_step + 1)
        weights = torch.tensor([t.weight for t in self.rewards], dtype=torch.float64)
        rewards = torch.nansum(parts * weights, dim=1)
        if config.missing_eos_penalty:
            rewards = rewards - config.missing_eos_penalty * (~torch.tensor(finished)).double()
        scored = time.perf_counter()

        rollout = Rollout(group, [p.ids for _, _, p in taken], [s.token_ids for s in samples], finished,
                          rewards.tolist(), [0.0] * len(samples), self._micro_batches(len(samples), state))
        advantages = self._advantages(rollout, rewards, step)
        self.rollout, self.rollout_json, self.cursor = rollout, rollout.as_json(), 0
        done = time.perf_counter()
        self._measure(step, parts, rewards, samples, {"generation": generated - started, "scoring": scored - generated,
                                                      "logps": done - scored})
        self._log_completions(state, prompts, texts, parts, rewards, advantages)

    def _advantages(self, rollout: Rollout, rewards: torch.Tensor, step: StepBatches) -> torch.Tensor:
        """The log-prob passes the method needs, then its advantages (one per completion, (M,))."""
        kl = self._rollout_logps(rollout)
        advantages = self.method.advantages(rewards.view(-1, rollout.group_size).float(), kl, self.accelerator).flatten()
        rollout.advantages = advantages.tolist()
        return advantages

    def _micro_batches(self, count: int, state: TrainerState) -> list[list[int]]:
        """Completion indices per micro-batch. With several micro-batches, a seeded shuffle mixes the
        prompts' completions across them (as TRL does), so each sees several prompts."""
        order = list(range(count))
        if self.shape.steps > 1:
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + state.global_step)
            order = torch.randperm(count, generator=generator).tolist()
        size = self.config.per_device_train_batch_size
        return [order[i:i + size] for i in range(0, count, size)]

    def _reward_inputs(self, prompts: list[PromptExample], samples: list[Any], texts: list[str],
                       state: TrainerState) -> dict[str, Any]:
        conversational = isinstance(prompts[0].prompt, list)
        columns: dict[str, list[Any]] = {}
        for p in prompts:
            for key in p.columns:
                columns.setdefault(key, [])
        for key in columns:
            columns[key] = [p.columns.get(key) for p in prompts]
        return {
            "prompts": [message_dicts(p.prompt) if conversational else p.prompt for p in prompts],
            "completions": [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts,
            "completion_ids": [s.token_ids for s in samples],
            "prompt_ids": [p.ids for p in prompts],
            "texts": texts,
            "scorer_prompts": [p.prompt for p in prompts],
            "columns": columns,
            "trainer_state": SimpleNamespace(global_step=state.global_step, epoch=state.epoch),
        }

    @torch.no_grad()
    def _rollout_logps(self, rollout: Rollout) -> torch.Tensor | None:
        """Reference log-probs (beta > 0) and, when the policy will move before a micro-batch is
        trained, the sampling policy's, computed in the training layout (so that a rollout's first pass
        reproduces them bit for bit). Returns KL(old || ref) summed per completion, (N, G), if both exist."""
        config = self.config
        on_policy = config.num_iterations == 1 and self.shape.optimizer_steps == 1
        want_old = self.method.old_logps_always or not on_policy
        if not want_old and self.reference is None:
            return None
        from vietnamese_ai.models.forward import unwrap
        from vietnamese_ai.models.prompt_cache import rollout_forward
        from vietnamese_ai.models.reference import evaluation_mode
        from vietnamese_ai.models.value import forward_with_values

        old = [[] for _ in rollout.completion_ids] if want_old else None
        ref = [[] for _ in rollout.completion_ids] if self.reference is not None else None
        policy = unwrap(self.model)
        values = [[] for _ in rollout.completion_ids] if self.method.values else None
        device = next(policy.parameters()).device
        for indices in rollout.micro_batches:
            batch = self._batch(rollout, indices).to(device)
            order = torch.argsort(batch.target_groups, stable=True)
            splits = [len(rollout.completion_ids[k]) for k in indices]
            with self.accelerator.autocast():
                if old is not None:
                    with evaluation_mode(policy):
                        logps, _, estimates = (forward_with_values(policy, batch, config.temperature) if values is not None
                                               else rollout_forward(policy, batch, config.temperature))
                    for k, v in zip(indices, logps[order].float().cpu().split(splits)):
                        old[k] = v.tolist()
                    if values is not None:
                        for k, v in zip(indices, estimates[order].float().cpu().split(splits)):
                            values[k] = v.tolist()
                if ref is not None:
                    reference = self.reference.token_logps(batch, config.temperature)
                    for k, v in zip(indices, reference[order].float().cpu().split(splits)):
                        ref[k] = v.tolist()
        rollout.old_logps, rollout.ref_logps, rollout.values = old, ref, values
        if old is None or ref is None:
            return None
        sums = [sum(a - b for a, b in zip(o, r)) for o, r in zip(old, ref)]
        return torch.tensor(sums, dtype=torch.float32).view(-1, rollout.group_size)

    def _measure(self, step: StepBatches, parts: torch.Tensor, rewards: torch.Tensor, samples: list[Any],
                 seconds: dict[str, float]) -> None:
        """The rollout's statistics over all processes, as (value, 1) so that the window averages them."""
        mean, std = global_mean_std(rewards, self.accelerator)
        step.sums.update({"reward": (mean, 1.0), "reward_std": (std, 1.0)})
        if len(self.rewards) > 1:
            for i, term in enumerate(self.rewards):
                column = parts[:, i][~parts[:, i].isnan()]
                m, s = global_mean_std(column, self.accelerator)
                step.sums[f"rewards/{term.name}/mean"], step.sums[f"rewards/{term.name}/std"] = (m, 1.0), (s, 1.0)
        groups = rewards.view(-1, self.config.num_generations)
        flat_groups = float((groups.std(dim=1) < 1e-8).sum()) if groups.shape[1] > 1 else 0.0
        lengths = torch.tensor([len(s.token_ids) for s in samples], dtype=torch.float64)
        unfinished = torch.tensor([not s.finished for s in samples], dtype=torch.float64)
        n_groups, flat, count, total, cut = reduce_sums(self.accelerator, [float(groups.shape[0]), flat_groups,
                                                                          float(len(samples)), float(lengths.sum()),
                                                                          float(unfinished.sum())])
        if groups.shape[1] > 1:
            step.sums["frac_reward_zero_std"] = (flat / n_groups, 1.0)
        step.sums.update({"completions/mean_length": (total / count, 1.0),
                          "completions/clipped_ratio": (cut / count, 1.0)})
        step.extremes.update({"completions/min_length": ("min", float(lengths.min())),
                              "completions/max_length": ("max", float(lengths.max()))})
        for phase, value in seconds.items():
            step.sums[f"time/{phase}"] = (value, 1.0)

    def _log_completions(self, state: TrainerState, prompts: list[PromptExample], texts: list[str], parts: torch.Tensor,
                         rewards: torch.Tensor, advantages: torch.Tensor) -> None:
        step = state.global_step + 1
        every = self.config.completions_steps or self.config.logging_steps
        if self.completions_log is None or (step - 1) % every:
            return
        count = len(texts) if self.config.num_completions_to_print is None else min(len(texts), self.config.num_completions_to_print)
        names = [t.name for t in self.rewards]
        for k in range(count):
            prompt = prompts[k].prompt
            self.completions_log.write({
                "step": step, "prompt": prompt if isinstance(prompt, str) else message_dicts(prompt),
                "completion": texts[k], "reward": float(rewards[k]), "advantage": float(advantages[k]),
                "rewards": {n: (None if math.isnan(float(v)) else float(v)) for n, v in zip(names, parts[k].tolist())},
            })


def resolve_reference(config: OnlineConfig, policy: Any) -> Any:
    """The KL reference (beta > 0), as DPO's: a separate model, the policy with a fresh adapter off,
    or a frozen copy of the starting policy (merged, for a trained adapter). None when beta == 0: no
    reference is loaded at all."""
    if config.beta == 0:
        return None
    import copy

    from vietnamese_ai.models.loading import is_peft_model, load_causal_lm
    from vietnamese_ai.models.lora import adapters_are_identity
    from vietnamese_ai.models.reference import AdapterReference, FrozenReference

    if config.ref_model_name_or_path:
        return FrozenReference(load_causal_lm(config.ref_model_name_or_path, config.dtype,
                                              attn_implementation=config.attn_implementation,
                                              trust_remote_code=config.trust_remote_code))
    if is_peft_model(policy) and adapters_are_identity(policy):
        return AdapterReference(policy)
    frozen = copy.deepcopy(policy)
    if is_peft_model(frozen):
        frozen = frozen.merge_and_unload()
    return FrozenReference(frozen)


def _callable_term(function: Callable[..., Any]) -> RewardTerm:
    name = getattr(function, "__name__", type(function).__name__)

    def compute(inputs: dict[str, Any]) -> list[Any]:
        return function(prompts=inputs["prompts"], completions=inputs["completions"],
                        completion_ids=inputs["completion_ids"], trainer_state=inputs["trainer_state"], **inputs["columns"])

    return RewardTerm(name, 1.0, compute)


def run_online(config: OnlineConfig, method: OnlineMethod, loss_fn: Any, model: Any = None, tokenizer: Any = None,
               train_records: Any = None, reward_funcs: list[Any] | None = None, source_class: type | None = None,
               prepare_policy: Callable[[Any, Any], None] | None = None) -> Any:
    """Everything an online method does before the loop: prompts checked and tokenised, rollout shape
    and rewards checked (all before the model loads), then the policy, the reference, the layout."""
    from vietnamese_ai.models.exactness import choose_layout, prompt_cache_support
    from vietnamese_ai.models.value import ordered_token_values, separate_value_model
    from vietnamese_ai.recipes.common import (
        load_policy,
        load_tokenizer_for,
        model_argument,
        pad_token_id,
        pair_cost,
        read_splits,
    )

    config, model = model_argument(config, model)
    train_raw, _ = read_splits(config, train_records, None, validate=read_prompt)
    state = process_state()
    shape = RolloutShape.of(config, state.num_processes)  # a batch that cannot hold whole groups fails here
    rewards = build_rewards(config, state.device, reward_funcs)
    tokenizer = tokenizer or load_tokenizer_for(config, model)
    read_sampled_ids(rewards, tokenizer, config.reward_cut_completions == "with_eos")
    prompts = tokenize_prompts(train_raw, tokenizer, config.max_prompt_length)
    config = plan_rollouts(config, shape, len(prompts), method.name)   # too few prompts for a rollout fails here
    source_class = source_class or RolloutSource
    source_class.check_prompts(config, prompts)
    model, tokenizer = load_policy(config, model, tokenizer)
    reference = resolve_reference(config, model)
    if prepare_policy is not None:
        prepare_policy(model, tokenizer)   # after the reference was copied from it
    reference_model = getattr(reference, "model", None)
    longest = max(len(p.ids) for p in prompts) + config.max_completion_length
    # One completion per prompt (PPO) leaves nothing to share: the plain layout is the cheaper one.
    sharing = config.prefix_sharing and config.num_generations > 1
    pack, share = choose_layout([model, reference_model], config.packing, sharing, longest=longest)
    value_model = separate_value_model(model)
    if value_model is not None:   # PPO's separate value model reads the same batches: it must be exact on them too
        pack, share = choose_layout([value_model], pack, share, ordered_token_values, longest)
    cache_prompts = sharing and config.prompt_cache and not config.gradient_checkpointing and value_model is None and all(
        prompt_cache_support(m, longest) for m in (model, reference_model) if m is not None)
    log.info("%s: %d prompts, %d completions each, rewards: %s; layout: %s", method.name, len(prompts),
             config.num_generations, ", ".join(f"{t.name} x{t.weight:g}" for t in rewards),
             "prompts once, completions on their KV cache" if cache_prompts else
             f"packing {'on' if pack else 'off'}, prefix sharing {'on' if share else 'off'}")
    source = source_class(config, prompts, tokenizer, rewards, method, reference, pack, share,
                           pad_token_id(tokenizer, model), pair_cost(model))
    source.cache_prompts = cache_prompts
    return train(model, tokenizer, config, None, None, loss_fn, source=source)
