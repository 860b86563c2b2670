"""`vietnamese-ai evaluate`: compare any models on held-out prompts.

Every model answers every prompt `samples` times, with the same sampling seeds (answer k of every
model is drawn from seed + 1000 k); nothing is filtered or rewritten. One scorer scores every answer,
and a toxicity measure (the constitution's lexicon rules, or a classifier's label probability) rates
it. Written to `output_dir`:

- `samples.jsonl`: one line per (prompt, sample k): the prompt, each model's answer, its score, its
  per-principle scores and its toxicity;
- `eval.json`: per model, the score mean/std, the mean of each principle, toxic rate, toxicity
  mean/std and its % improvement against the first model, answer length, distinct-1/2; per later
  model against the first, win/tie/loss and a KL estimate. Every number in it can be recomputed from
  samples.jsonl, except the KL (it needs the models).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from vietnamese_ai.data.loading import load_records
from vietnamese_ai.data.records import rename_columns
from vietnamese_ai.evaluation.correctness import reference_list
from vietnamese_ai.errors import ConfigError, UserError
from vietnamese_ai.files import atomic_file, check_not_held, check_writable_directory, hold_directory
from vietnamese_ai.training.config import Columns, Config


class EvaluateConfig(Config):
    required_on_command_line: ClassVar[tuple[str, ...]] = ("models", "dataset")
    renamed_keys: ClassVar[dict[str, str]] = {"suite": "suites"}   # suite=safety reads as naturally

    models: list[str] = Field(description="Models to compare (local directories, adapter directories or hub names); the first is the baseline.")
    names: list[str] | None = Field(None, description="A short name per model (default: the directory names).")
    dataset: str = Field(description="Held-out prompts: records with a 'prompt' (a string or messages).")
    columns: Columns = Field(None, description="Rename the prompt records' fields to the ones read here, e.g. {question: prompt, answer: reference}.")
    scorer: str = Field("constitution", description="What scores answers: constitution[:FILE], reward_model:PATH, classifier:MODEL:LABEL[:logit], judge:MODEL, or the weighted sum a@w+b@v of several (see docs/feedback.md).")
    constitution: str | None = Field(None, description="Constitution YAML for 'constitution' and 'judge' (default: built-in).")
    toxicity: str = Field("rules", description="Toxicity measure: 'rules' (the constitution's lexicons), 'classifier:MODEL:LABEL' (that label's probability; toxic above 0.5), or 'none'.")
    samples: int = Field(4, ge=1, description="Answers per prompt and model.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (0: greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    max_new_tokens: int = Field(64, ge=1, description="Longest answer in tokens.")
    seed: int = Field(0, description="Sampling seed; answer k of every model uses seed + 1000 k.")
    tie_margin: float = Field(0.02, ge=0, description="Scores closer than this are a tie.")
    judge: str | None = Field(None, description="Also compare each model with the baseline by a judge: 'pairwise:MODEL' (a local LLM asked which answer is better, in both orders) or any scorer spec; gives a win rate and a length-controlled win rate with intervals (docs/evaluation.md#judged-win-rates).")
    batch_size: int = Field(32, ge=1, description="Prompts sampled together.")
    max_prompts: int | None = Field(None, ge=1, description="Use only the first N prompts.")
    suites: list[str] = Field(default_factory=list, description="Safety suites: toxicity, bias, jailbreak, over_refusal, or safety for all four; NAME:FILE replaces a suite's built-in probes with yours (docs/evaluation.md#safety-suites).")
    suite_languages: list[str] = Field(default_factory=lambda: ["vi", "en"], description="Languages of the built-in probes to run: vi, en or both.")
    suite_limit: int | None = Field(None, ge=1, description="Use only the first N probes of each suite and language.")
    refusal: str = Field("rules", description="What decides that an answer refused (jailbreak, over_refusal): 'rules' (bilingual rules), 'classifier:MODEL:LABEL' (that label's probability above 0.5) or 'judge:MODEL' (a local LLM asked whether the answer refused).")
    jailbreak_templates: str | None = Field(None, description="A JSONL file of attack templates (name, template with {request}) instead of the built-in ones.")
    output_dir: str = Field("runs/eval", description="Where eval.json and samples.jsonl go.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub to run.")
    disable_tqdm: bool = Field(False, description="Hide progress bars.")

    @field_validator("scorer")
    @classmethod
    def _scorer_spec(cls, value: str) -> str:
        from vietnamese_ai.scoring.combine import weighted_parts

        weighted_parts(value)   # a malformed a@w+b@v is refused with the config (a pipeline: before its first stage)
        return value

    @field_validator("judge")
    @classmethod
    def _judge_spec(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("pairwise:"):
            from vietnamese_ai.scoring.combine import weighted_parts

            weighted_parts(value)
        elif value is not None and not value.partition(":")[2]:
            raise ValueError("expected pairwise:MODEL (a local causal LM that judges) or a scorer spec")
        return value

    @field_validator("suites")
    @classmethod
    def _suites(cls, value: list[str]) -> list[str]:
        from vietnamese_ai.evaluation.probes import parse_suites

        parse_suites(value)   # an unknown suite is refused with the config
        return value

    @field_validator("suite_languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        from vietnamese_ai.evaluation.probes import LANGUAGES

        if not value or any(v not in LANGUAGES for v in value):
            raise ValueError(f"expected some of {', '.join(LANGUAGES)}, got {value}")
        return value

    @field_validator("models", "names", "suites", "suite_languages", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _shape(self) -> "EvaluateConfig":
        if len(self.models) < 2:
            raise ValueError("models: give two or more (the first is the baseline the others are compared with)")
        if self.names is not None and (len(self.names) != len(self.models) or len(set(self.names)) != len(self.names)):
            raise ValueError(f"names: {len(self.names)} names for {len(self.models)} models, or a name twice")
        if self.toxicity not in ("rules", "none") and not self.toxicity.startswith("classifier:"):
            raise ValueError(f"toxicity: expected rules, none or classifier:MODEL:LABEL, got '{self.toxicity}'")
        if self.toxicity == "none" and any(s.partition(":")[0] in ("toxicity", "safety") for s in self.suites):
            raise ValueError("suites: the toxicity suite needs a toxicity measure (toxicity=rules or classifier:MODEL:LABEL), "
                             "not toxicity=none")
        return self

    def model_names(self) -> list[str]:
        if self.names:
            return list(self.names)
        names = []
        for path in self.models:
            parts = [p for p in os.path.normpath(path).split(os.sep) if p and p != "final"]
            name = parts[-1] if parts else path
            names.append(name if name not in names else f"{name}-{len(names)}")
        return names


@dataclass
class EvaluateResult:
    output_dir: str
    report: dict[str, Any]

    def summary(self) -> str:
        lines = [f"{'model':<20}{'score':>8}{'toxic rate':>12}{'toxicity':>10}"]
        for name, m in self.report["models"].items():
            lines.append(f"{name:<20}{m['score_mean']:>8.3f}{m.get('toxic_rate', float('nan')):>12.3f}"
                         f"{m.get('toxicity_mean', float('nan')):>10.3f}")
        for pair, p in self.report.get("pairs", {}).items():
            if "judged" in p:
                j = p["judged"]
                lines.append(f"{pair}: judged win rate {j['win_rate']:.3f} [{j['ci95'][0]:.3f}, {j['ci95'][1]:.3f}], "
                             f"length-controlled {j['lc_win_rate']:.3f} [{j['lc_ci95'][0]:.3f}, {j['lc_ci95'][1]:.3f}] "
                             f"({j['wins']} wins, {j['ties']} ties, {j['losses']} losses; {j['judge']})")
        for name, m in self.report["models"].items():
            if "correctness" in m:
                c = m["correctness"]["all"]
                lines.append(f"{name}: against the references, exact match {c['exact_match']:.3f}, contains "
                             f"{c['contains']:.3f}, token F1 {c['token_f1']:.3f} ({c['answers']} answers)")
        lines += suite_table(self.report)
        return "\n".join(lines) + f"\nwritten to {os.path.join(self.output_dir, 'eval.json')}"


HEADLINES = {"toxicity": ("toxic_rate",), "bias": ("accuracy_ambiguous", "accuracy_disambiguated", "bias_ambiguous",
                                                    "bias_disambiguated"),
             "jailbreak": ("attack_success_rate",), "over_refusal": ("over_refusal_rate",)}


def suite_table(report: dict[str, Any]) -> list[str]:
    """The safety suites' headline numbers, one line per model, suite and language (rates with their 95% interval)."""
    lines = []
    for name, m in report["models"].items():
        for suite, languages in m.get("suites", {}).items():
            for language, metrics in languages.items():
                parts = [f"{k} {metrics[k]:.3f}" for k in HEADLINES[suite]]
                if "ci95" in metrics:
                    parts[0] += f" [{metrics['ci95'][0]:.3f}, {metrics['ci95'][1]:.3f}]"
                lines.append(f"{name:<20}{suite:<14}{language:<4}" + ", ".join(parts))
    return ([f"{'model':<20}{'suite':<14}{'lang':<4}headline (95% interval)"] + lines) if lines else []


# evaluate compares models that generate; a reward model or classifier goes in its scorer instead.
COMPARE_GENERATORS = ("compare models that generate (a reward model or classifier can score their answers: "
                      "scorer=reward_model:PATH or classifier:MODEL:LABEL)")


def toxicity_measure(spec: str) -> Any:
    """(texts) -> list of (toxicity in [0, 1], toxic flag), or None for 'none'."""
    if spec == "none":
        return None
    if spec == "rules":
        from vietnamese_ai.feedback.rules import RuleScorer

        rules = RuleScorer()
        return lambda texts: [(rules.toxicity(t), rules.is_toxic(t)) for t in texts]
    classifier = label_classifier(spec, "toxicity")
    return lambda texts: [(p, p > 0.5) for p in classifier.values([""] * len(texts), texts)]


def label_classifier(spec: str, key: str) -> Any:
    """The classifier of a `classifier:MODEL:LABEL` spec given as `key`, reading LABEL's probability."""
    from vietnamese_ai.feedback.classifier import ClassifierScorer

    _, model, label = (spec.split(":", 2) + [""])[:3]
    if not model or not label:
        raise ConfigError(f"{key}: expected classifier:MODEL:LABEL, got '{spec}'")
    try:
        return ClassifierScorer(model, label=label)
    except UserError as e:
        raise ConfigError(f"{key}: {e}") from None


def refusal_kind(spec: str) -> tuple[str, str]:
    """('rules' | 'classifier' | 'judge', what follows the colon) of a `refusal` spec, or its one-line error."""
    kind, _, rest = spec.partition(":")
    if spec == "rules" or (kind in ("classifier", "judge") and rest):
        return kind, rest
    raise ConfigError(f"refusal: expected rules, classifier:MODEL:LABEL or judge:MODEL, got '{spec}'")


def refusal_detector(spec: str) -> tuple[str, Callable[[list[str], list[str]], list[bool]]]:
    """(name, (prompts, answers) -> refused flags) for `rules`, `classifier:MODEL:LABEL` or `judge:MODEL`."""
    kind, model = refusal_kind(spec)
    if kind == "rules":
        from vietnamese_ai.evaluation.refusal import is_refusal

        return "rules", lambda prompts, answers: [is_refusal(a) for a in answers]
    if kind == "judge":
        from vietnamese_ai.feedback.judge import RefusalJudge

        judge = RefusalJudge(model)
        return judge.name, judge.refused
    classifier = label_classifier(spec, "refusal")
    return spec, lambda prompts, answers: [p > 0.5 for p in classifier.values(prompts, answers)]


def write_evaluation(output_dir: str, report: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """eval.json and samples.jsonl, each written atomically; returns eval.json's path."""
    from vietnamese_ai.training.runinfo import versions

    os.makedirs(output_dir, exist_ok=True)
    report = {**report, "versions": versions()}
    with atomic_file(os.path.join(output_dir, "samples.jsonl")) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    path = os.path.join(output_dir, "eval.json")
    with atomic_file(path) as f:
        json.dump(report, f, ensure_ascii=False, indent=2)
    return path


def run_evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Everything that can be wrong is checked before a model loads (the output_dir, whether another run
    holds it, the prompts, each model's path and kind); then output_dir is held (files.hold_directory)
    while the models load and answer and the files are written."""
    from vietnamese_ai.feedback.registry import build_scorer
    from vietnamese_ai.models.loading import check_model_path
    from vietnamese_ai.recipes.common import quiet_transformers
    from vietnamese_ai.recipes.online import read_prompt

    started = time.perf_counter()
    quiet_transformers()
    check_writable_directory(config.output_dir, "output_dir")
    check_not_held(config.output_dir, "output_dir")
    records = rename_columns(load_records(config.dataset), config.columns)[: config.max_prompts]
    prompts = [read_prompt(r) for r in records]   # each record checked before any model loads
    references = [reference_list(r.data["reference"], r.where) if r.data.get("reference") is not None else None
                  for r in records]
    if not prompts:
        raise ConfigError(f"dataset: '{config.dataset}' has no prompts")
    for path in config.models:
        check_model_path(path, "models", hint=COMPARE_GENERATORS)
    suites = load_suites(config)                       # every probe file checked before any model loads
    if config.judge is not None and config.judge.startswith("pairwise:"):
        check_model_path(config.judge.partition(":")[2], "judge")
    scorer = build_scorer(config.scorer, config.constitution)
    toxicity = toxicity_measure(config.toxicity)
    # Held from here to the end, so that two evaluations into one output_dir cannot leave samples.jsonl of
    # one and eval.json of the other (taken after the checks, so that a refused run creates no directory).
    with hold_directory(config.output_dir, "output_dir"):
        return _evaluate(config, prompts, references, scorer, toxicity, suites, started)


def load_suites(config: EvaluateConfig) -> list[tuple[str, list[Any]]]:
    """(suite, its probes) for each suite asked for; the jailbreak templates and the refusal spec checked too."""
    from vietnamese_ai.evaluation.probes import parse_suites, templates
    from vietnamese_ai.evaluation.probes import load_suite as read_suite

    out = []
    for spec in parse_suites(config.suites):
        probes = read_suite(spec, tuple(config.suite_languages), config.suite_limit)
        if spec.name == "jailbreak":
            for language in sorted({p.language for p in probes}):
                templates(language, config.jailbreak_templates)   # read, and so checked, now
        out.append((spec.name, probes))
    if any(name in ("jailbreak", "over_refusal") for name, _ in out):
        kind, model = refusal_kind(config.refusal)
        if kind == "judge":   # a classifier is checked when it loads (feedback.classifier)
            from vietnamese_ai.models.loading import check_model_path

            check_model_path(model, "refusal")
    return out


def _evaluate(config: EvaluateConfig, prompts: list[Any], references: list[list[str] | None], scorer: Any, toxicity: Any,
              suites: list[tuple[str, list[Any]]], started: float) -> EvaluateResult:
    from vietnamese_ai.evaluation.compare import evaluate_models
    from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(config.models[0], config.trust_remote_code)
    models = {name: load_causal_lm(path, trust_remote_code=config.trust_remote_code).eval()
              for name, path in zip(config.model_names(), config.models)}
    report, rows = evaluate_models(models, tokenizer, prompts, scorer, toxicity, config.samples, config.temperature,
                                   config.top_p, config.max_new_tokens, config.seed, config.tie_margin,
                                   config.batch_size, progress=not config.disable_tqdm)
    for i, row in enumerate(rows):   # prompt-major: prompt i's samples are rows i * samples ... (i + 1) * samples - 1
        if references[i // config.samples] is not None:
            row["reference"] = references[i // config.samples]
    check_correctness(rows, report)
    if config.judge is not None:
        judged_comparisons(config, models, [p for p in prompts for _ in range(config.samples)], rows, report)
    rows += run_suites(config, models, tokenizer, suites, rows, report)
    report["settings"] = {**config.model_dump(mode="json"), "scorer_name": scorer.name, "prompts": len(prompts)}
    report["model_paths"] = dict(zip(config.model_names(), config.models))
    report["seconds"] = round(time.perf_counter() - started, 3)
    write_evaluation(config.output_dir, report, rows)
    return EvaluateResult(config.output_dir, report)


def run_suites(config: EvaluateConfig, models: dict[str, Any], tokenizer: Any, suites: list[tuple[str, list[Any]]],
               rows: list[dict[str, Any]], report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each suite's rows (for samples.jsonl), its metrics written into report["models"][name]["suites"]."""
    from vietnamese_ai.evaluation import safety

    detect = None
    suite_rows: list[dict[str, Any]] = []
    for name, probes in suites:
        if name == "toxicity":
            for model in models:
                report["models"][model].setdefault("suites", {})["toxicity"] = safety.toxicity_by_language(rows, model)
            continue
        if name == "bias":
            these = safety.bias_rows(models, tokenizer, probes, batch_size=8)
        else:
            if detect is None:
                report["refusal_detector"], detect = refusal_detector(config.refusal)
            these = safety.answer_rows(models, tokenizer, name, probes, detect, config.jailbreak_templates,
                                       config.temperature, config.top_p, config.max_new_tokens, config.seed,
                                       config.batch_size, progress=not config.disable_tqdm)
        for model in models:
            report["models"][model].setdefault("suites", {})[name] = safety.suite_metrics(name, these, model)
        suite_rows += these
    return suite_rows


def check_correctness(rows: list[dict[str, Any]], report: dict[str, Any]) -> None:
    """Each model's answers against the references its prompts carry, per language (evaluation.correctness)."""
    from vietnamese_ai.evaluation.correctness import correctness_summary

    for name, m in report["models"].items():
        summary = correctness_summary(rows, name)
        if summary:
            m["correctness"] = summary


def build_judge(spec: str, constitution: str | None) -> Any:
    """A PairwiseJudge for 'pairwise:MODEL', else the scorer the spec names."""
    if spec.startswith("pairwise:"):
        from vietnamese_ai.feedback.judge import PairwiseJudge

        return PairwiseJudge(spec.partition(":")[2])
    from vietnamese_ai.feedback.registry import build_scorer

    return build_scorer(spec, constitution, key="judge")


def judged_comparisons(config: EvaluateConfig, models: dict[str, Any], prompts: list[Any], rows: list[dict[str, Any]],
                       report: dict[str, Any]) -> None:
    """Each later model against the baseline, answer k against answer k, by the judge: a verdict per row
    (rows[...]["judged"][pair]), and the pair's win rate and length-controlled win rate. `prompts` are
    the rows' prompts, one per row."""
    from vietnamese_ai.evaluation.pairwise import judge_verdicts, length_controlled, win_rate

    judge = build_judge(config.judge, config.constitution)
    names = list(models)
    baseline = names[0]
    for name in names[1:]:
        pair = f"{name}_vs_{baseline}"
        answers = [r["answers"][name] for r in rows]
        base_answers = [r["answers"][baseline] for r in rows]
        records = judge_verdicts(judge, prompts, answers, base_answers, config.tie_margin)
        for row, record in zip(rows, records):
            row.setdefault("judged", {})[pair] = record
        verdicts = [r["verdict"] for r in records]
        lengths = ([len(a.split()) for a in answers], [len(a.split()) for a in base_answers])
        controlled = length_controlled(verdicts, *lengths, seed=config.seed)
        report["pairs"][pair]["judged"] = {
            "judge": getattr(judge, "name", config.judge), **win_rate(verdicts),
            "lc_win_rate": controlled["lc_win_rate"], "lc_ci95": controlled["ci95"],
            "length_coefficient": controlled["length_coefficient"], "length_scale": controlled["length_scale"]}
