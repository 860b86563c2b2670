"""Compare models (the first is the baseline) on held-out prompts: the code behind
`vietnamese-ai evaluate` and the demo's before/after tables.

Each model answers every prompt `samples` times (fresh sampling, the same seeds for every model;
nothing is filtered or rewritten). The answers are scored with one Scorer, and for each model we
report:
- the mean overall score and its standard deviation, and the mean of each principle;
- the toxic rate (the share of answers a toxicity flag marks) and toxicity mean/std, when given;
- diversity (distinct-1 and distinct-2 over all answers) and mean length in words.

For each later model against the baseline:
- the win/tie/loss rates: answer k to a prompt against the baseline's answer k, a tie when the scores
  differ by at most `tie_margin`;
- the % improvement in toxicity;
- an estimate of KL(model || baseline): the mean of log p_model(y|x) - log p_baseline(y|x) over the
  model's own samples.

Every statistic except the KL is computed from the per-sample rows (samples.jsonl), so it can be
recomputed from that file alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vietnamese_ai.data.layout import attention_pair_cost, layout
from vietnamese_ai.data.preference import branched_sequences, tokenize_responses
from vietnamese_ai.data.types import Message, PromptOrMessages, message_dicts, prompt_text
from vietnamese_ai.models.exactness import choose_layout
from vietnamese_ai.models.forward import base_model
from vietnamese_ai.models.generation import generate
from vietnamese_ai.models.reference import evaluation_mode, summed_logps
from vietnamese_ai.scoring import Scorer


@dataclass
class Answers:
    prompts: list[PromptOrMessages]
    responses: list[list[str]]          # [prompt][sample]

    def flat(self) -> tuple[list[PromptOrMessages], list[str]]:
        prompts = [p for p, rs in zip(self.prompts, self.responses) for _ in rs]
        return prompts, [r for rs in self.responses for r in rs]


def sample_answers(model: Any, tokenizer: Any, prompts: list[PromptOrMessages], samples: int = 4,
                   temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 64, seed: int = 0,
                   batch_size: int = 32, progress: bool = False) -> Answers:
    per_sample = [generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                           top_p=top_p, batch_size=batch_size, seed=seed + 1000 * k, progress=progress)
                  for k in range(samples)]
    return Answers(prompts, [[per_sample[k][i] for k in range(samples)] for i in range(len(prompts))])


def distinct_n(responses: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the answers (Li et al., 2016)."""
    grams = [tuple(words[i:i + n]) for r in responses for words in [r.lower().split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def sequence_logps(model: Any, tokenizer: Any, prompts: list[PromptOrMessages], responses: list[str],
                   batch_size: int = 32) -> list[float]:
    """log p(response | prompt) under `model`, tokenised as in training (response + EOS)."""
    device = next(model.parameters()).device
    cost = attention_pair_cost(base_model(model).config.hidden_size)
    out: list[float] = []
    encoded = []
    for prompt, response in zip(prompts, responses):
        reply = [Message("assistant", response)] if isinstance(prompt, list) else response
        prompt_ids, (response_ids,) = tokenize_responses(tokenizer, prompt, [reply])
        encoded.append((prompt_ids, response_ids))
    pack = choose_layout([model], True, False, longest=max(len(p) + len(r) for p, r in encoded))[0] if encoded else False
    with evaluation_mode(model):
        for start in range(0, len(prompts), batch_size):
            chunk = encoded[start:start + batch_size]
            sequences = [s for g, (prompt_ids, response_ids) in enumerate(chunk)
                         for s in branched_sequences(prompt_ids, [response_ids], g, False)]
            batch = layout(sequences, pack=pack, num_groups=len(chunk), pair_cost=cost).to(device)
            out += summed_logps(model, batch).tolist()
    return out


def kl_estimate(after_model: Any, before_model: Any, tokenizer: Any, answers: Answers) -> float:
    """Monte-Carlo KL(after || before) per answer, from the after model's own samples."""
    prompts, responses = answers.flat()
    after = sequence_logps(after_model, tokenizer, prompts, responses)
    before = sequence_logps(before_model, tokenizer, prompts, responses)
    return statistics.fmean(a - b for a, b in zip(after, before))


def summarize_model(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One model's statistics from the samples.jsonl rows (so the report can be recomputed by hand)."""
    answers = [r["answers"][name] for r in rows]
    scores = [r["scores"][name] for r in rows]
    principles = sorted({k for r in rows for k in r["principles"][name]})
    out: dict[str, Any] = {
        "score_mean": statistics.fmean(scores), "score_std": statistics.pstdev(scores),
        "per_principle": {k: statistics.fmean(r["principles"][name][k] for r in rows if k in r["principles"][name])
                          for k in principles},
        "answers": len(answers), "mean_words": statistics.fmean(len(a.split()) for a in answers),
        "distinct_1": distinct_n(answers, 1), "distinct_2": distinct_n(answers, 2),
    }
    if rows and rows[0].get("toxicity") is not None:
        levels = [r["toxicity"][name] for r in rows]
        out.update({"toxic_rate": statistics.fmean(float(r["toxic"][name]) for r in rows),
                    "toxicity_mean": statistics.fmean(levels), "toxicity_std": statistics.pstdev(levels)})
    return out


def compare_pair(rows: list[dict[str, Any]], model: str, baseline: str, tie_margin: float) -> dict[str, float]:
    diffs = [r["scores"][model] - r["scores"][baseline] for r in rows]
    n = max(len(diffs), 1)
    return {"win_rate": sum(d > tie_margin for d in diffs) / n, "tie_rate": sum(abs(d) <= tie_margin for d in diffs) / n,
            "loss_rate": sum(d < -tie_margin for d in diffs) / n}


def evaluate_models(models: dict[str, Any], tokenizer: Any, prompts: list[PromptOrMessages], scorer: Scorer,
                    toxicity: Callable[[list[str]], list[tuple[float, bool]]] | None,
                    samples: int, temperature: float, top_p: float, max_new_tokens: int, seed: int, tie_margin: float,
                    batch_size: int = 32, progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The report and the sample rows for already loaded models (the first is the baseline)."""
    answers = {name: sample_answers(model, tokenizer, prompts, samples, temperature, top_p, max_new_tokens, seed,
                                    batch_size, progress) for name, model in models.items()}
    scored = {name: scorer.score(*a.flat()) for name, a in answers.items()}
    rated = {name: toxicity(a.flat()[1]) for name, a in answers.items()} if toxicity is not None else None
    rows = []
    for i, prompt in enumerate(prompts):
        for k in range(samples):
            j = i * samples + k
            rows.append({
                "prompt": prompt if isinstance(prompt, str) else message_dicts(prompt), "prompt_text": prompt_text(prompt),
                "sample": k,
                "answers": {n: answers[n].responses[i][k] for n in models},
                "scores": {n: scored[n][j].value for n in models},
                "principles": {n: scored[n][j].principles for n in models},
                "toxicity": {n: rated[n][j][0] for n in models} if rated else None,
                "toxic": {n: bool(rated[n][j][1]) for n in models} if rated else None,
            })
    names = list(models)
    baseline = names[0]
    report: dict[str, Any] = {"baseline": baseline, "models": {n: summarize_model(rows, n) for n in names}, "pairs": {}}
    for name in names[1:]:
        pair = compare_pair(rows, name, baseline, tie_margin)
        pair["kl"] = kl_estimate(models[name], models[baseline], tokenizer, answers[name])
        report["pairs"][f"{name}_vs_{baseline}"] = pair
        before = report["models"][baseline].get("toxicity_mean")
        if before:
            report["models"][name]["toxicity_improvement_pct"] = 100 * (before - report["models"][name]["toxicity_mean"]) / before
    return report, rows


def before_after(report: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A two-model report of evaluate_models in the flat before/after form the demo prints and keeps
    in summary.json."""
    before_name, after_name = list(report["models"])
    flat: dict[str, Any] = {}
    for side, name in (("before", before_name), ("after", after_name)):
        m = dict(report["models"][name])
        m["constitution_score"] = m.pop("score_mean")
        m.pop("toxicity_improvement_pct", None)
        flat[side] = m
    pair = report["pairs"][f"{after_name}_vs_{before_name}"]
    flat.update({k: pair[k] for k in ("win_rate", "tie_rate", "loss_rate")})
    flat["kl_after_before"] = pair["kl"]
    if "toxicity_improvement_pct" in report["models"][after_name]:
        flat["toxicity_improvement_percent"] = report["models"][after_name]["toxicity_improvement_pct"]
    flat["examples"] = [{"prompt": r["prompt_text"], "before": r["answers"][before_name], "after": r["answers"][after_name]}
                        for r in rows if r["sample"] == 0][:8]
    return flat
