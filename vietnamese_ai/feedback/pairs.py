"""From scored candidates to preference data.

For each prompt, the best and the worst candidate form a pair when their score gap is at least
`min_margin`. The rows are written in the format `vietnamese-ai dpo` reads as it is (prompt/chosen/
rejected as messages), with provenance: scores, per-principle scores, sampling settings, generator
and scorer. An unpaired file for KTO labels the chosen responses desirable and the rejected ones not.
Best-of-N SFT rows (rejection sampling) keep each prompt's best candidate as a prompt -> completion
example, optionally only above a score threshold or where the scorer separated best from worst.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vietnamese_ai.data.types import Message, PromptOrMessages, message_dicts
from vietnamese_ai.feedback.generate import Candidate
from vietnamese_ai.scoring import Score


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def candidates_by_prompt(candidates: list[Candidate]) -> dict[int, list[int]]:
    """The positions of each prompt's candidates, in candidate order, keyed by prompt index in
    increasing order.

    >>> candidates_by_prompt([Candidate(7, "a", 1.0, 1.0, 0), Candidate(2, "b", 1.0, 1.0, 0),
    ...                       Candidate(7, "c", 1.0, 1.0, 0)])
    {2: [1], 7: [0, 2]}
    """
    groups: dict[int, list[int]] = {}
    for k, c in enumerate(candidates):
        groups.setdefault(c.prompt_index, []).append(k)
    return {index: groups[index] for index in sorted(groups)}


def best_and_worst(group: list[int], scores: list[Score]) -> tuple[int, int]:
    """The positions of the highest- and lowest-scored candidates of one group; of equals, the first
    in candidate order (max and min keep the first), so that a rerun picks the same ones.

    >>> best_and_worst([0, 1, 2, 3], [Score(0.5), Score(0.9), Score(0.9), Score(0.5)])
    (1, 0)
    """
    return max(group, key=lambda k: scores[k].value), min(group, key=lambda k: scores[k].value)


def select_pairs(prompts: Mapping[int, PromptOrMessages] | list[PromptOrMessages], candidates: list[Candidate], scores: list[Score],
                 min_margin: float, generator: str, scorer: str) -> list[dict[str, Any]]:
    """One (best, worst) row per prompt whose candidates differ by at least min_margin, by prompt index."""
    return list(pairs_by_prompt(prompts, candidates, scores, min_margin, generator, scorer).values())


def pairs_by_prompt(prompts: Mapping[int, PromptOrMessages] | list[PromptOrMessages], candidates: list[Candidate],
                    scores: list[Score], min_margin: float, generator: str, scorer: str) -> dict[int, dict[str, Any]]:
    """select_pairs keyed by prompt index (in increasing order), for a choice among prompts
    (feedback/active.py)."""
    rows: dict[int, dict[str, Any]] = {}
    for index, group in candidates_by_prompt(candidates).items():
        best, worst = best_and_worst(group, scores)
        gap = scores[best].value - scores[worst].value
        if gap < min_margin or candidates[best].text.strip() == candidates[worst].text.strip():
            continue
        rows[index] = {
            "prompt": message_dicts(prompts[index]),
            "chosen": _assistant(candidates[best].text), "rejected": _assistant(candidates[worst].text),
            "chosen_score": scores[best].value, "rejected_score": scores[worst].value, "score_gap": gap,
            "chosen_principles": scores[best].principles, "rejected_principles": scores[worst].principles,
            "chosen_sampling": candidates[best].sampling, "rejected_sampling": candidates[worst].sampling,
            "generator": generator, "scorer": scorer,
        }
    return rows


@dataclass
class BestOfN:
    """Best-of-N SFT rows and why the other prompts gave none; each dropped prompt counts under the
    first reason it meets, in this order."""

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)   # prompt index -> SFT row, by index
    empty: int = 0          # the best response is empty (after strip)
    below_score: int = 0    # the best's score is below min_score
    below_margin: int = 0   # a single candidate, or best - worst below min_margin

    @property
    def dropped(self) -> int:
        return self.empty + self.below_score + self.below_margin


def best_rows(prompts: Mapping[int, PromptOrMessages] | list[PromptOrMessages], candidates: list[Candidate],
              scores: list[Score], generator: str, scorer: str, min_score: float | None = None,
              min_margin: float | None = None) -> BestOfN:
    """Each prompt's best candidate as a prompt -> completion SFT row (rejection sampling), by prompt
    index. `min_score`: keep it only when its score is at least this; `min_margin`: only when the
    prompt has two or more candidates and best - worst is at least this (the scorer told them apart).
    None skips either filter. The best of equals is the first in candidate order, as for the pairs.

    >>> cands = [Candidate(0, "tốt", 0.7, 1.0, 0), Candidate(0, "tệ", 1.0, 1.0, 0), Candidate(1, "một", 0.7, 1.0, 0)]
    >>> best = best_rows(["p0", "p1"], cands, [Score(0.9), Score(0.4), Score(0.8)], "m", "s", min_margin=0.3)
    >>> [(i, r["completion"][0]["content"], r["score_gap"]) for i, r in best.rows.items()], best.below_margin
    ([(0, 'tốt', 0.5)], 1)
    """
    result = BestOfN()
    for index, group in candidates_by_prompt(candidates).items():
        best, worst = best_and_worst(group, scores)
        gap = scores[best].value - scores[worst].value
        if not candidates[best].text.strip():
            result.empty += 1
        elif min_score is not None and scores[best].value < min_score:
            result.below_score += 1
        elif min_margin is not None and (len(group) < 2 or gap < min_margin):
            result.below_margin += 1
        else:
            result.rows[index] = {
                "prompt": message_dicts(prompts[index]), "completion": _assistant(candidates[best].text),
                "score": scores[best].value, "worst_score": scores[worst].value, "score_gap": gap,
                "candidates": len(group), "principles": scores[best].principles,
                "sampling": candidates[best].sampling, "generator": generator, "scorer": scorer,
            }
    return result


def unpaired_rows(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """KTO rows from pairs: the chosen response desirable, the rejected one not."""
    rows = []
    for pair in pairs:
        for side, label in (("chosen", True), ("rejected", False)):
            rows.append({"prompt": pair["prompt"], "completion": pair[side], "label": label,
                         "score": pair[f"{side}_score"], "principles": pair[f"{side}_principles"],
                         "sampling": pair[f"{side}_sampling"], "generator": pair["generator"], "scorer": pair["scorer"]})
    return rows


def conversation(value: list[dict[str, str]]) -> list[Message]:
    return [Message(m["role"], m["content"]) for m in value]
