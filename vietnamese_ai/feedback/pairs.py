"""From scored candidates to preference data.

For each prompt, the best and the worst candidate form a pair when their score gap is at least
`min_margin`. The rows are written in the format `vietnamese-ai dpo` reads as it is (prompt/chosen/
rejected as messages), with provenance: scores, per-principle scores, sampling settings, generator
and scorer. An unpaired file for KTO labels the chosen responses desirable and the rejected ones not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vietnamese_ai.data.types import Message, PromptOrMessages, message_dicts
from vietnamese_ai.feedback.generate import Candidate
from vietnamese_ai.scoring import Score


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def select_pairs(prompts: Mapping[int, PromptOrMessages] | list[PromptOrMessages], candidates: list[Candidate], scores: list[Score],
                 min_margin: float, generator: str, scorer: str) -> list[dict[str, Any]]:
    """One (best, worst) row per prompt whose candidates differ by at least min_margin, by prompt index."""
    return list(pairs_by_prompt(prompts, candidates, scores, min_margin, generator, scorer).values())


def pairs_by_prompt(prompts: Mapping[int, PromptOrMessages] | list[PromptOrMessages], candidates: list[Candidate],
                    scores: list[Score], min_margin: float, generator: str, scorer: str) -> dict[int, dict[str, Any]]:
    """select_pairs keyed by prompt index (in increasing order), for a choice among prompts
    (feedback/active.py)."""
    by_prompt: dict[int, list[int]] = {}
    for k, c in enumerate(candidates):
        by_prompt.setdefault(c.prompt_index, []).append(k)
    rows: dict[int, dict[str, Any]] = {}
    for index in sorted(by_prompt):
        group = by_prompt[index]
        best = max(group, key=lambda k: scores[k].value)   # the first of equals, deterministically
        worst = min(group, key=lambda k: scores[k].value)
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
