"""Active sampling: spend a labelling budget on the prompts whose preferences are contested.

A reward model (or a rule scorer) is most biased where its judgement is least certain; the
post-training remedy is to label those prompts first. `feedback label active_sampling=...` measures
how contested each prompt is from its scored candidates, and `label_budget=N` keeps the pairs of the
N most contested prompts (ties broken by prompt index). Two measures:

    variance       the population variance of the prompt's candidates' overall scores:
                   (1/n) sum_k (s_k - mean)^2; 0 for a single candidate
    disagreement   over all pairs (i, j) of the prompt's candidates, the share on which the scorer's
                   components disagree: some component scores i strictly above j and another scores
                   j strictly above i; 0 for a single candidate

The components are the names in `Score.principles` that `scorer_components` gives: a constitution
scorer's (rules or judge) principles, a weighted sum's parts (the value of each part, not the
principles inside a part).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Literal

from vietnamese_ai.errors import ConfigError
from vietnamese_ai.scoring import Score, Scorer
from vietnamese_ai.scoring.combine import WeightedScorer

ActiveSampling = Literal["none", "variance", "disagreement"]


def score_variance(scores: Sequence[Score]) -> float:
    """The population variance of the overall scores.

    >>> score_variance([Score(0.2), Score(0.4), Score(0.9)])   # mean 0.5; (0.09 + 0.01 + 0.16) / 3
    0.08666666666666667
    """
    if not scores:
        return 0.0
    mean = sum(s.value for s in scores) / len(scores)
    return sum((s.value - mean) ** 2 for s in scores) / len(scores)


def component_disagreement(scores: Sequence[Score], components: Sequence[str]) -> float:
    """The share of candidate pairs (i, j) on which one component prefers i and another prefers j,
    both strictly. A component missing from a Score's principles is refused (KeyError names it).

    >>> a = Score(0.5, {"helpful": 1.0, "harmless": 0.0})
    >>> b = Score(0.5, {"helpful": 0.0, "harmless": 1.0})
    >>> c = Score(0.9, {"helpful": 1.0, "harmless": 1.0})
    >>> component_disagreement([a, b, c], ["helpful", "harmless"])   # (a, b) split; c dominates both
    0.3333333333333333
    """
    pairs = list(combinations(scores, 2))
    if not pairs:
        return 0.0
    split = 0
    for i, j in pairs:
        diffs = [i.principles[c] - j.principles[c] for c in components]
        split += any(d > 0 for d in diffs) and any(d < 0 for d in diffs)
    return split / len(pairs)


def contestedness(prompt_indices: Sequence[int], scores: Sequence[Score], measure: ActiveSampling,
                  components: Sequence[str] = ()) -> dict[int, float]:
    """How contested each prompt is: {prompt_index: value} by `measure` ('variance' or
    'disagreement', the latter over `components`), from the scores of its candidates;
    prompt_indices[k] is the prompt of scores[k]."""
    if len(prompt_indices) != len(scores):
        raise ValueError(f"contestedness(): {len(prompt_indices)} prompt indices but {len(scores)} scores")
    groups: dict[int, list[Score]] = {}
    for index, score in zip(prompt_indices, scores):
        groups.setdefault(index, []).append(score)
    if measure == "variance":
        return {index: score_variance(group) for index, group in groups.items()}
    if measure == "disagreement":
        return {index: component_disagreement(group, components) for index, group in groups.items()}
    raise ValueError(f"contestedness(): unknown measure {measure!r}; expected 'variance' or 'disagreement'")


def budget_order(prompt_indices: Sequence[int], contested: Mapping[int, float] | None,
                 budget: int | None) -> list[int]:
    """The prompts whose pairs are kept, in output order. With `contested`: most contested first,
    ties by prompt index; without it (active_sampling=none): by prompt index, the baseline that
    spends the same budget without choosing. `budget` keeps the first N; None keeps all.

    >>> budget_order([3, 1, 2, 0], {0: 0.1, 1: 0.5, 2: 0.1, 3: 0.0}, 2)
    [1, 0]
    >>> budget_order([3, 1, 2, 0], None, 2)
    [0, 1]
    """
    if budget is not None and budget < 1:
        raise ValueError(f"budget_order(): budget must be >= 1, got {budget}")
    if contested is None:
        order = sorted(prompt_indices)
    else:
        order = sorted(prompt_indices, key=lambda index: (-contested[index], index))
    return order if budget is None else order[:budget]


def scorer_components(scorer: Scorer) -> list[str]:
    """The names in Score.principles that `disagreement` compares: a weighted sum's parts (their
    names; two parts of the same name are one key, so one component), or the principles of a
    scorer with a constitution (rules, pointwise judge); none for any other scorer (a reward model,
    a classifier: a single value)."""
    if isinstance(scorer, WeightedScorer):
        return list(dict.fromkeys(part.name for part, _ in scorer.parts))
    constitution = getattr(scorer, "constitution", None)
    if constitution is not None:
        return [p.id for p in constitution.principles]
    return []


def check_disagreement(scorer: Scorer) -> list[str]:
    """The components of `scorer`, or a one-line ConfigError when it has fewer than two."""
    components = scorer_components(scorer)
    if len(components) < 2:
        raise ConfigError(f"active_sampling=disagreement needs a scorer with two or more components (principles or "
                          f"weighted parts); scorer {scorer.name} has one")
    return components
