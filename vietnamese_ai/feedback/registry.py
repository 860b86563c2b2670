"""Scorers from a config string, so that the CLI and YAML pipelines can name any of them.

    constitution                       the rule scorer with the built-in constitution
    constitution:my.yaml               the rule scorer with a user constitution
    reward_model:runs/rm/final         a trained reward model
    classifier:MODEL:LABEL[:logit]     a sequence classifier's label probability (or logit)
    judge:MODEL                        an LLM judge (pointwise, 1-9, per principle of the constitution)
    constitution@0.7+reward_model:runs/rm/final@0.3     a weighted combination
"""

from __future__ import annotations

import math

from vietnamese_ai.errors import ConfigError
from vietnamese_ai.scoring import Scorer

FORMS = "constitution[:FILE.yaml], reward_model:PATH, classifier:MODEL:LABEL[:logit], judge:MODEL"


def _single(spec: str, constitution_path: str | None) -> Scorer:
    from vietnamese_ai.feedback.constitution import load_constitution

    kind, _, argument = spec.partition(":")
    if kind == "constitution":
        from vietnamese_ai.feedback.rules import RuleScorer

        return RuleScorer(load_constitution(argument or constitution_path))
    if kind == "reward_model" and argument:
        from vietnamese_ai.scoring.reward_model import RewardModelScorer

        return RewardModelScorer(argument)
    if kind == "classifier" and argument:
        from vietnamese_ai.feedback.classifier import ClassifierScorer

        parts = argument.split(":")
        output = "logit" if parts[-1] == "logit" else "probability"
        parts = parts[:-1] if parts[-1] in ("logit", "probability") else parts
        model, label = (":".join(parts[:-1]), parts[-1]) if len(parts) > 1 else (parts[0], "0")
        return ClassifierScorer(model, label=label, output=output)
    if kind == "judge" and argument:
        from vietnamese_ai.feedback.judge import PointwiseJudge

        return PointwiseJudge(argument, constitution=load_constitution(constitution_path))
    raise ConfigError(f"scorer: cannot read '{spec}'; expected {FORMS}, joined with '+' and weighted with '@w'")


def build_scorer(spec: str, constitution_path: str | None = None) -> Scorer:
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    if not parts:
        raise ConfigError("scorer: empty")
    if len(parts) == 1 and "@" not in parts[0]:
        return _single(parts[0], constitution_path)
    from vietnamese_ai.scoring.combine import WeightedScorer

    weighted = []
    for part in parts:
        name, _, text = part.rpartition("@") if "@" in part else (part, "", "1")
        try:
            weight = float(text)
        except ValueError:
            raise ConfigError(f"scorer: weight '{text}' in '{part}' is not a number") from None
        if not (weight > 0 and math.isfinite(weight)):
            raise ConfigError(f"scorer: weight '{text}' in '{part}' must be a positive number")
        weighted.append((_single(name, constitution_path), weight))
    return WeightedScorer(weighted)
