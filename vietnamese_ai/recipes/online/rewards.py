"""The rewards of an online run: each `reward` entry (or Python function) becomes a weighted term;
every term scores a rollout's completions from one typed hand-off (RewardInputs), and its values
are checked before they are added up."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vietnamese_ai.data.types import PromptOrMessages, message_dicts
from vietnamese_ai.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    from vietnamese_ai.recipes.online.config import OnlineConfig
    from vietnamese_ai.recipes.online.prompts import PromptExample


@dataclass
class RewardInputs:
    """What every reward term reads of one rollout's M completions (prompt-major, as sampled).

    The first four are what a Python reward function gets (TRL's keyword arguments); scorers read
    the prompts as given and the decoded texts; a reward model with the policy's tokenizer reads the ids."""

    prompts: list[Any]                  # [M] the prompt string, or its messages as dicts
    completions: list[Any]              # [M] the text, or [{"role": "assistant", "content": text}] for chat prompts
    completion_ids: list[list[int]]     # [M] sampled ids, up to and including EOS
    trainer_state: Any                  # .global_step and .epoch of the step being sampled for
    columns: dict[str, list[Any]]       # the prompt records' other fields, one value per completion each
    prompt_ids: list[list[int]]         # [M] the prompt's ids
    texts: list[str]                    # [M] the completion decoded, special tokens skipped
    scorer_prompts: list[PromptOrMessages]   # [M] the prompt as given (a string or Messages), for scorers

    @classmethod
    def of(cls, prompts: list[PromptExample], completion_ids: list[list[int]], texts: list[str], global_step: int,
           epoch: float) -> "RewardInputs":
        """The inputs for completions of `prompts` (one entry per completion)."""
        conversational = isinstance(prompts[0].prompt, list)
        columns: dict[str, list[Any]] = {}
        for p in prompts:
            for key in p.columns:
                columns.setdefault(key, [])
        for key in columns:
            columns[key] = [p.columns.get(key) for p in prompts]
        return cls(
            prompts=[message_dicts(p.prompt) if conversational else p.prompt for p in prompts],
            completions=[[{"role": "assistant", "content": t}] for t in texts] if conversational else texts,
            completion_ids=completion_ids,
            trainer_state=SimpleNamespace(global_step=global_step, epoch=epoch),
            columns=columns,
            prompt_ids=[p.ids for p in prompts],
            texts=texts,
            scorer_prompts=[p.prompt for p in prompts],
        )


@dataclass
class RewardTerm:
    name: str
    weight: float
    compute: Callable[[RewardInputs], list[Any]]     # inputs -> one value (or None) per completion
    scorer: Any = None                               # the Scorer behind a scorer term


def _scorer_term(spec: str, weight: float, constitution: str | None, device: Any) -> RewardTerm:
    from vietnamese_ai.feedback.registry import build_single

    scorer = build_single(spec, constitution, key="reward")
    if device is not None and hasattr(scorer, "model") and isinstance(scorer.model, torch.nn.Module):
        scorer.model.to(device)

    def compute(inputs: RewardInputs) -> list[Any]:
        return [s.value for s in scorer.score(inputs.scorer_prompts, inputs.texts)]

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
            term.compute = lambda inputs, scorer=scorer: scorer.rewards_of_ids(inputs.prompt_ids, inputs.completion_ids,
                                                                               append_eos)


def _python_term(spec: str, weight: float) -> RewardTerm:
    from vietnamese_ai.scoring.functions import load_reward_function

    name, function = load_reward_function(spec)
    return _function_term(name, weight, function)


def _function_term(name: str, weight: float, function: Callable[..., Any]) -> RewardTerm:
    """A function with TRL's reward signature; the records' other fields come as keyword arguments."""
    def compute(inputs: RewardInputs) -> list[Any]:
        return function(prompts=inputs.prompts, completions=inputs.completions, completion_ids=inputs.completion_ids,
                        trainer_state=inputs.trainer_state, **inputs.columns)

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
    terms += [_function_term(getattr(f, "__name__", type(f).__name__), 1.0, f) for f in reward_funcs or []]
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


def score_completions(terms: list[RewardTerm], inputs: RewardInputs, count: int, step: int) -> torch.Tensor:
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

