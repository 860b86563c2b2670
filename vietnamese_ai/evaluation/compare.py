"""Compare two models (before and after training) on held-out prompts.

Each model answers every prompt `samples` times (fresh sampling; nothing is filtered or rewritten).
The answers are scored with one Scorer, and for each model we report:
- the mean overall score and its standard deviation, and the mean of each principle;
- the toxic rate (the share of answers a toxicity flag marks) and toxicity mean/std, when given;
- diversity (distinct-1 and distinct-2 over all answers) and mean length in words.

Between the two models we report:
- the win/tie/loss rates of `after` against `before`: answer k to a prompt against answer k, a tie
  when the scores differ by less than `tie_margin`;
- the % improvement in toxicity;
- an estimate of KL(after || before): the mean of log p_after(y|x) - log p_before(y|x) over the
  after model's own samples.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vietnamese_ai.data.layout import attention_pair_cost, layout
from vietnamese_ai.data.preference import branched_sequences, tokenize_responses
from vietnamese_ai.data.types import Message, PromptOrMessages, prompt_text
from vietnamese_ai.models.exactness import choose_layout
from vietnamese_ai.models.forward import base_model
from vietnamese_ai.models.generation import generate
from vietnamese_ai.models.reference import evaluation_mode, response_logps
from vietnamese_ai.scoring import Score, Scorer


@dataclass
class Answers:
    prompts: list[PromptOrMessages]
    responses: list[list[str]]          # [prompt][sample]

    def flat(self) -> tuple[list[PromptOrMessages], list[str]]:
        prompts = [p for p, rs in zip(self.prompts, self.responses) for _ in rs]
        return prompts, [r for rs in self.responses for r in rs]


def sample_answers(model: Any, tokenizer: Any, prompts: list[PromptOrMessages], samples: int = 4,
                   temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 64, seed: int = 0,
                   batch_size: int = 32) -> Answers:
    per_sample = [generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                           top_p=top_p, batch_size=batch_size, seed=seed + 1000 * k) for k in range(samples)]
    return Answers(prompts, [[per_sample[k][i] for k in range(samples)] for i in range(len(prompts))])


def distinct_n(responses: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the answers (Li et al., 2016)."""
    grams = [tuple(words[i:i + n]) for r in responses for words in [r.lower().split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def summarize(answers: Answers, scores: list[Score], toxic: Callable[[str], bool] | None = None,
              toxicity: Callable[[str], float] | None = None) -> dict[str, Any]:
    _, responses = answers.flat()
    values = [s.value for s in scores]
    principles = sorted({k for s in scores for k in s.principles})
    summary: dict[str, Any] = {
        "constitution_score": statistics.fmean(values),
        "score_std": statistics.pstdev(values),
        "per_principle": {k: statistics.fmean(s.principles[k] for s in scores if k in s.principles) for k in principles},
        "answers": len(responses),
        "distinct_1": distinct_n(responses, 1),
        "distinct_2": distinct_n(responses, 2),
        "mean_words": statistics.fmean(len(r.split()) for r in responses),
    }
    if toxic is not None:
        summary["toxic_rate"] = statistics.fmean(float(toxic(r)) for r in responses)
    if toxicity is not None:
        levels = [toxicity(r) for r in responses]
        summary["toxicity_mean"], summary["toxicity_std"] = statistics.fmean(levels), statistics.pstdev(levels)
    return summary


def win_rates(after: list[Score], before: list[Score], tie_margin: float = 0.02) -> dict[str, float]:
    """Answer k of `after` against answer k of `before`, prompt by prompt."""
    diffs = [a.value - b.value for a, b in zip(after, before)]
    n = max(len(diffs), 1)
    return {"win_rate": sum(d > tie_margin for d in diffs) / n, "tie_rate": sum(abs(d) <= tie_margin for d in diffs) / n,
            "loss_rate": sum(d < -tie_margin for d in diffs) / n}


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
            out += response_logps(model, batch)[0].tolist()
    return out


def kl_estimate(after_model: Any, before_model: Any, tokenizer: Any, answers: Answers) -> float:
    """Monte-Carlo KL(after || before) per answer, from the after model's own samples."""
    prompts, responses = answers.flat()
    after = sequence_logps(after_model, tokenizer, prompts, responses)
    before = sequence_logps(before_model, tokenizer, prompts, responses)
    return statistics.fmean(a - b for a, b in zip(after, before))


def compare_models(before: Any, after: Any, tokenizer: Any, prompts: list[PromptOrMessages], scorer: Scorer,
                   toxic: Callable[[str], bool] | None = None, toxicity: Callable[[str], float] | None = None,
                   samples: int = 4, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 64,
                   seed: int = 0, tie_margin: float = 0.02) -> dict[str, Any]:
    """The before/after report; the same sampling seeds for both models."""
    answers = {name: sample_answers(model, tokenizer, prompts, samples, temperature, top_p, max_new_tokens, seed)
               for name, model in (("before", before), ("after", after))}
    scores = {name: scorer.score(*a.flat()) for name, a in answers.items()}
    report: dict[str, Any] = {name: summarize(answers[name], scores[name], toxic, toxicity) for name in answers}
    report.update(win_rates(scores["after"], scores["before"], tie_margin))
    report["kl_after_before"] = kl_estimate(after, before, tokenizer, answers["after"])
    if toxicity is not None and report["before"]["toxicity_mean"] > 0:
        report["toxicity_improvement_percent"] = 100 * (1 - report["after"]["toxicity_mean"] / report["before"]["toxicity_mean"])
    report["settings"] = {"prompts": len(prompts), "samples_per_prompt": samples, "temperature": temperature,
                          "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed, "scorer": scorer.name}
    report["examples"] = [{"prompt": prompt_text(p), "before": answers["before"].responses[i][0],
                           "after": answers["after"].responses[i][0]} for i, p in enumerate(prompts[:8])]
    return report
