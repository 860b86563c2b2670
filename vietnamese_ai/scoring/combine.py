"""A weighted combination of scorers, itself a Scorer."""

from __future__ import annotations

from vietnamese_ai.data.types import PromptOrMessages
from vietnamese_ai.scoring import Score, Scorer, check_lengths


class WeightedScorer:
    """value = sum_i w_i * value_i / sum_i w_i; the parts' principle scores are kept, prefixed by
    the part's name, and each part's overall value appears under its name."""

    def __init__(self, parts: list[tuple[Scorer, float]]):
        if not parts or sum(w for _, w in parts) <= 0:
            raise ValueError("WeightedScorer needs at least one scorer with a positive weight")
        self.parts = parts
        self.name = "+".join(f"{w:g}*{s.name}" for s, w in parts)

    def score(self, prompts: list[PromptOrMessages], responses: list[str]) -> list[Score]:
        check_lengths(prompts, responses)
        results = [(scorer.score(prompts, responses), weight, scorer.name) for scorer, weight in self.parts]
        total = sum(w for _, w, _ in results)
        combined = []
        for i in range(len(prompts)):
            principles: dict[str, float] = {}
            for scores, _, name in results:
                principles[name] = scores[i].value
                principles.update({f"{name}/{k}": v for k, v in scores[i].principles.items()})
            value = sum(w * scores[i].value for scores, w, _ in results) / total
            reasons = [f"{name}: {scores[i].reasoning}" for scores, _, name in results if scores[i].reasoning]
            combined.append(Score(value, principles, "; ".join(reasons) or None))
        return combined
