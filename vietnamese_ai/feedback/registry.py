"""Scorers from a config string, so that the CLI and YAML pipelines can name any of them.

    constitution                       the rule scorer with the built-in constitution
    constitution:my.yaml               the rule scorer with a user constitution
    reward_model:runs/rm/final         a trained reward model
    classifier:MODEL:LABEL[:logit]     a sequence classifier's label probability (or logit)
    judge:MODEL                        an LLM judge (pointwise, 1-9, per principle of the constitution)
    constitution@0.7+reward_model:runs/rm/final@0.3     the weighted sum 0.7 x rules + 0.3 x reward model

`a@w+b@v` is the weighted sum w*a + v*b, parsed by scoring.combine.parse_weighted, the one parser of
every scorer and reward key (online RL's `reward=` too); a part without '@' weighs 1.
"""

from __future__ import annotations

from vietnamese_ai.errors import ConfigError, UserError
from vietnamese_ai.scoring import Scorer
from vietnamese_ai.scoring.combine import WeightedScorer, parse_weighted

FORMS = "constitution[:FILE.yaml], reward_model:PATH, classifier:MODEL:LABEL[:logit], judge:MODEL"


def _single(spec: str, constitution_path: str | None, key: str) -> Scorer:
    from vietnamese_ai.feedback.constitution import load_constitution

    kind, _, argument = spec.partition(":")
    if kind == "constitution":
        from vietnamese_ai.feedback.rules import RuleScorer

        return RuleScorer(load_constitution(argument or constitution_path))
    if kind == "reward_model" and argument:
        from vietnamese_ai.scoring.reward_model import RewardModelScorer

        return RewardModelScorer(argument, key=key)
    if kind == "classifier" and argument:
        from vietnamese_ai.feedback.classifier import ClassifierScorer

        parts = argument.split(":")
        output = "logit" if parts[-1] == "logit" else "probability"
        parts = parts[:-1] if parts[-1] in ("logit", "probability") else parts
        model, label = (":".join(parts[:-1]), parts[-1]) if len(parts) > 1 else (parts[0], "0")
        return ClassifierScorer(model, label=label, output=output)
    if kind == "judge" and argument:
        from vietnamese_ai.feedback.judge import PointwiseJudge
        from vietnamese_ai.models.loading import check_causal_lm

        check_causal_lm(argument, key)   # a judge answers, so it is a causal LM; say so naming this key
        return PointwiseJudge(argument, constitution=load_constitution(constitution_path))
    raise ConfigError(f"{key}: cannot read '{spec}'; expected {FORMS}, or several as a@w+b@v (the weighted "
                      f"sum w*a + v*b)")


def build_scorer(spec: str, constitution_path: str | None = None, key: str = "scorer") -> Scorer:
    """The Scorer that `spec` names; `key` is the config key it came from, named in every error. The
    whole spec is parsed before any model loads; a single part without '@' is that scorer itself."""
    parts = parse_weighted(spec, key)
    if len(parts) == 1 and "@" not in spec:
        return build_single(parts[0][0], constitution_path, key)
    return WeightedScorer([(build_single(name, constitution_path, key), weight) for name, weight in parts])


def build_single(spec: str, constitution_path: str | None = None, key: str = "scorer") -> Scorer:
    """One scorer (no '+' or '@'). A user error in loading it names `key`, which the messages of the
    scorers' own loaders (a classifier's directory, a constitution file) cannot know."""
    try:
        return _single(spec, constitution_path, key)
    except UserError as e:
        if str(e).startswith(f"{key}: "):
            raise
        raise ConfigError(f"{key}: {e}") from None
