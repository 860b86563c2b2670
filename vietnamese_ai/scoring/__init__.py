"""The one scoring interface shared by AI feedback, RL rewards and evaluation.

A `Scorer` rates responses to prompts: `score(prompts, responses) -> list[Score]`. Rule engines,
reward models, classifiers and LLM judges all implement it, so any of them can label preference
pairs or measure a model before and after training (and, once online RL exists, serve as its reward).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from vietnamese_ai.data.types import PromptOrMessages


@dataclass
class Score:
    value: float                                                   # higher is better
    principles: dict[str, float] = field(default_factory=dict)     # optional per-principle breakdown
    reasoning: str | None = None                                   # optional explanation (judges, critiques)


@runtime_checkable
class Scorer(Protocol):
    name: str

    def score(self, prompts: list[PromptOrMessages], responses: list[str]) -> list[Score]:
        """One Score per (prompt, response); len(prompts) == len(responses)."""
        ...


def check_lengths(prompts: list, responses: list) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"score(): {len(prompts)} prompts but {len(responses)} responses")


__all__ = ["Score", "Scorer", "check_lengths"]
