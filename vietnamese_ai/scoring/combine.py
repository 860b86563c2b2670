"""Weighted sums of scorers: the `a@w+b@v` syntax of every scorer and reward key, and the Scorer it builds.

`a@w+b@v` means w * a + v * b wherever it is written (`scorer=`, `target_scorer=`, `reward=`), as TRL's
`reward_weights` weights its reward functions. A sum is defined for any finite weights: a negative
weight is a penalty (`python:f.py:length@-0.1`), a zero weight is computed and logged but adds nothing.
A mean would be undefined when the weights cancel, and its scale would change as parts are added. For
a mean, write weights that sum to 1 (`constitution@0.7+reward_model:PATH@0.3`).
"""

from __future__ import annotations

import math

from vietnamese_ai.data.types import PromptOrMessages
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.scoring import Score, Scorer, check_lengths


class SpecProblem(ValueError):
    """What is wrong with a weighted spec, in words that do not name the key: a config validator
    raises it as it is (the config error names the key and where it was given), parse_weighted
    prefixes the key."""


def parse_weighted(spec: str, key: str, nonzero: bool = True) -> list[tuple[str, float]]:
    """The parts of `spec` and their weights: 'a@w+b@v' -> [('a', w), ('b', v)]; a part without '@'
    weighs 1. Every weight must be a finite number (zero and negative allowed) and, with `nonzero`, one
    at least not 0. A mistake is a one-line ConfigError naming `key` (the config key the user typed)
    and the part. The last '@' of a part starts its weight, so a name may not contain '@' or '+'.

    >>> parse_weighted("constitution@0.7+reward_model:runs/rm/final@0.3", "scorer")
    [('constitution', 0.7), ('reward_model:runs/rm/final', 0.3)]
    >>> parse_weighted("python:rewards.py:length@-0.1+constitution", "reward")
    [('python:rewards.py:length', -0.1), ('constitution', 1.0)]
    """
    try:
        return weighted_parts(spec, nonzero)
    except SpecProblem as e:
        raise ConfigError(f"{key}: {e}") from None


def weighted_parts(spec: str, nonzero: bool = True) -> list[tuple[str, float]]:
    """parse_weighted without a key: a mistake raises SpecProblem (a ValueError), so that a config's
    field validator can check a spec when the config is built (a pipeline, before its first stage)."""
    if not isinstance(spec, str):
        raise SpecProblem(f"expected text such as constitution@0.7+reward_model:PATH@0.3, got {spec!r}")
    if not spec.strip():
        raise SpecProblem("empty; name a scorer, or several as a@w+b@v (the weighted sum w*a + v*b)")
    parts = []
    for raw in spec.split("+"):
        part = raw.strip()
        if not part:
            raise SpecProblem(f"'{spec}' has an empty part; join parts with one '+', as a@w+b@v")
        name, weight = part, 1.0
        if "@" in part:
            name, _, text = part.rpartition("@")
            name, text = name.strip(), text.strip()
            if not name:
                raise SpecProblem(f"'{part}' names nothing before '@'")
            if not text:
                raise SpecProblem(f"'{part}' has no weight after '@'")
            try:
                weight = float(text)
            except ValueError:
                raise SpecProblem(f"weight '{text}' in '{part}' is not a number") from None
            if not math.isfinite(weight):
                raise SpecProblem(f"weight '{text}' in '{part}' is not a finite number")
        parts.append((name, weight))
    if nonzero and all(w == 0 for _, w in parts):
        raise SpecProblem(f"every weight is 0 in '{spec}'; at least one must be non-zero")
    return parts


class WeightedScorer:
    """value = sum_i w_i * value_i (a weighted sum, not a mean: see the module docstring). The parts'
    principle scores are kept, prefixed by the part's name, and each part's own value appears under
    its name."""

    def __init__(self, parts: list[tuple[Scorer, float]]):
        weights = [w for _, w in parts]
        if not parts or not all(math.isfinite(w) for w in weights) or all(w == 0 for w in weights):
            raise ValueError("WeightedScorer needs finite weights, at least one of them non-zero")
        self.parts = parts
        self.name = "+".join(f"{w:g}*{s.name}" for s, w in parts)

    def score(self, prompts: list[PromptOrMessages], responses: list[str]) -> list[Score]:
        check_lengths(prompts, responses)
        results = [(scorer.score(prompts, responses), weight, scorer.name) for scorer, weight in self.parts]
        combined = []
        for i in range(len(prompts)):
            principles: dict[str, float] = {}
            for scores, _, name in results:
                principles[name] = scores[i].value
                principles.update({f"{name}/{k}": v for k, v in scores[i].principles.items()})
            value = sum(w * scores[i].value for scores, w, _ in results)
            reasons = [f"{name}: {scores[i].reasoning}" for scores, _, name in results if scores[i].reasoning]
            combined.append(Score(value, principles, "; ".join(reasons) or None))
        return combined
