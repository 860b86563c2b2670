"""Judged pairwise win rates of model A against model B: position swap, ties, and a length-controlled
win rate in the manner of AlpacaEval 2 (Dubois et al., 2024, "Length-Controlled AlpacaEval").

**One verdict per prompt.** A pairwise judge gives p = P(the answer shown first is better). It is asked
twice, with A first (p_a) and with B first (p_b). Each order prefers A, B or neither:

    A first:  A if p_a > 0.5,  B if p_a < 0.5,  neither if p_a = 0.5
    B first:  A if p_b < 0.5,  B if p_b > 0.5,  neither if p_b = 0.5

    verdict = 1    if both orders prefer A
              0    if both orders prefer B
              1/2  otherwise (they disagree, or one has no preference): a tie

This is the conservative swap of MT-Bench (Zheng et al., 2023): a win must survive the swap, so a judge
that always prefers the first position gives only ties, and one with a bounded position bias still
gives wins where its real preference outweighs the bias. (PairwiseJudge.compare instead averages the two
probabilities, (p_a + 1 - p_b) / 2, a soft score; a verdict here is hard.)

A pointwise judge (any Scorer) scores each answer alone, so the order cannot matter: with margin m,
verdict = 1 if s_a > s_b + m, 0 if s_b > s_a + m, else 1/2 (the rule of compare.py's win/tie/loss).

**Win rate.** Over n prompts, with verdicts v_i in {0, 1/2, 1} (ties count half, as in AlpacaEval):

    w = (1/n) sum_i v_i,    ci95 = w -/+ 1.96 sd(v) / sqrt(n), clipped to [0, 1]

with sd the population standard deviation of the verdicts ([0, 1] when n < 2).

**Length-controlled win rate.** A judge that likes long answers rewards a model for length rather than
quality. With d_i = length_a - length_b (in words) and s the standard deviation of d over the prompts,
fit by maximum likelihood, the verdicts as fractional targets (ties = 1/2),

    P(A preferred | d) = sigmoid(theta + phi tanh(d / s))

and report sigmoid(theta), the predicted win rate when both answers have the same length (d = 0);
phi is the length coefficient (phi > 0: the judge prefers the longer answer). If s = 0 there is no
length variation to learn from and phi = 0. The fit minimises, by Newton's method (IRLS) on the two
parameters with step halving,

    J(theta, phi) = - sum_i [v_i log sigmoid(z_i) + (1 - v_i) log sigmoid(-z_i)] + lam (theta^2 + phi^2)

with z_i = theta + phi tanh(d_i / s) and lam = 1e-3 by default. Why the penalty: a judge that always
picks the longer answer makes the verdicts separable in tanh(d / s), and without a penalty phi (and,
when every verdict is a win, theta) runs off to infinity. lam is a Gaussian prior N(0, 1 / (2 lam)), an
sd of about 22 on the logit scale, so it only binds on separable data. It is added to the summed (not
the mean) log-likelihood, so its pull shrinks as 1/n. Its cost is exact where d is constant: the
stationarity condition in theta gives sigmoid(theta) = w - 2 lam theta / n, so the LC win rate sits
2 lam |theta| / n nearer 1/2 than the raw win rate (at most about 2e-3 * 7 / n for w within [1e-3, 0.999]).
A caveat that follows: a judge whose verdict is a step in d (always the longer answer, never noise)
has no finite maximum-likelihood fit; the penalty makes it finite, but sigmoid(theta) is then decided by
the few prompts nearest equal length and is not to be trusted. The model assumes a judge whose taste
for length is graded, as an LLM judge's is; a large length_coefficient (tens) is the sign of a step.
The 95% interval is a percentile bootstrap over prompts (random.Random(seed), the model refitted on each
resample, s kept at its full-sample value so that phi means the same in every refit).

How this follows AlpacaEval 2: the same feature tanh(d / std(d)) (with std the sample standard deviation,
as pandas computes it), the same fractional targets with ties at 1/2, a logistic GLM fitted by maximum
likelihood, and the same counterfactual: predict with the length term set to zero. Where it departs:
- one pair of models and one fit, where AlpacaEval fits one GLM across many models (a term per model)
  against a fixed baseline, so its model terms borrow strength from the others';
- no instruction-difficulty term (AlpacaEval's gamma_x per instruction, precomputed across models), so
  the LC win rate is sigmoid(theta) rather than a mean over instructions of sigmoid(theta + gamma_x);
- length in words (len(text.split()), as compare.py counts it), where AlpacaEval counts characters;
- a small L2 penalty on both parameters instead of AlpacaEval's regularisation towards the baseline;
- a bootstrap interval instead of AlpacaEval's standard error of the per-instruction predictions.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

from vietnamese_ai.data.types import PromptOrMessages
from vietnamese_ai.scoring import Scorer, check_lengths

PENALTY = 1e-3          # lam above: a Gaussian prior with sd ~22 on theta and phi (see the module docstring)
Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def verdict(p_a_first: float, p_b_first: float) -> float:
    """1.0 if both orders prefer A, 0.0 if both prefer B, else 0.5 (a tie).

    >>> verdict(0.8, 0.3), verdict(0.2, 0.9), verdict(0.9, 0.9), verdict(0.5, 0.1)
    (1.0, 0.0, 0.5, 0.5)
    """
    # +1 prefers A, -1 prefers B, 0 neither; in the swapped order A is the second answer
    first = (p_a_first > 0.5) - (p_a_first < 0.5)
    swapped = (p_b_first < 0.5) - (p_b_first > 0.5)
    if first == swapped == 1:
        return 1.0
    if first == swapped == -1:
        return 0.0
    return 0.5


def judge_verdicts(judge: Any, prompts: list[PromptOrMessages], answers_a: list[str], answers_b: list[str],
                   tie_margin: float = 0.0) -> list[dict]:
    """One record per prompt: {"a_first", "b_first", "verdict"} from a pairwise judge (an object with
    `first_probability(prompts, first, second) -> list[float]`, e.g. feedback.judge.PairwiseJudge), or
    {"score_a", "score_b", "verdict"} from a pointwise Scorer, a tie within `tie_margin`.

    A pairwise judge is asked twice, A first then B first; an object that has both interfaces is used
    as a pairwise judge (it was built to compare). `tie_margin` applies to scorers only.
    """
    check_lengths(prompts, answers_a)
    check_lengths(prompts, answers_b)
    if hasattr(judge, "first_probability"):
        a_first = list(judge.first_probability(prompts, answers_a, answers_b))
        b_first = list(judge.first_probability(prompts, answers_b, answers_a))
        if not len(a_first) == len(b_first) == len(prompts):
            raise ValueError(f"first_probability returned {len(a_first)} and {len(b_first)} probabilities "
                             f"for {len(prompts)} prompts")
        return [{"a_first": p, "b_first": q, "verdict": verdict(p, q)} for p, q in zip(a_first, b_first)]
    if isinstance(judge, Scorer):
        scores_a = [s.value for s in judge.score(prompts, answers_a)]
        scores_b = [s.value for s in judge.score(prompts, answers_b)]
        return [{"score_a": a, "score_b": b, "verdict": 1.0 if a > b + tie_margin else 0.0 if b > a + tie_margin else 0.5}
                for a, b in zip(scores_a, scores_b)]
    raise TypeError(f"judge_verdicts(): {type(judge).__name__} has neither first_probability(prompts, first, second) "
                    "nor score(prompts, responses)")


def win_rate(verdicts: Sequence[float]) -> dict:
    """{"win_rate", "ci95", "wins", "ties", "losses", "n"}: the mean verdict and its normal interval.

    >>> win_rate([1.0, 1.0, 0.5, 0.0])["win_rate"]
    0.625
    """
    if not verdicts:
        raise ValueError("win_rate(): no verdicts")
    if any(v not in (0.0, 0.5, 1.0) for v in verdicts):
        raise ValueError(f"win_rate(): verdicts must be 0, 0.5 or 1, got {sorted(set(verdicts) - {0.0, 0.5, 1.0})[:3]}")
    n = len(verdicts)
    mean = statistics.fmean(verdicts)
    if n < 2:
        ci = [0.0, 1.0]
    else:
        half = Z95 * statistics.pstdev(verdicts) / math.sqrt(n)
        ci = [max(0.0, mean - half), min(1.0, mean + half)]
    return {"win_rate": mean, "ci95": ci, "wins": verdicts.count(1.0), "ties": verdicts.count(0.5),
            "losses": verdicts.count(0.0), "n": n}


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def _log_sigmoid(z: float) -> float:
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def fit_length_model(targets: Sequence[float], features: Sequence[float], penalty: float = PENALTY) -> tuple[float, float]:
    """(theta, phi) minimising J of the module docstring, with features x_i = tanh(d_i / s).

    Newton's method: g = sum_i (sigmoid(z_i) - v_i) (1, x_i) + 2 lam beta,
    H = sum_i sigmoid(z_i) (1 - sigmoid(z_i)) (1, x_i)(1, x_i)^T + 2 lam I; a step is halved until J
    falls, so the iteration cannot overshoot. J is strictly convex (lam > 0), so the minimum is unique.
    """
    if penalty <= 0:
        raise ValueError("fit_length_model(): penalty must be > 0, or separable verdicts have no finite fit")

    def objective(theta: float, phi: float) -> float:
        total = penalty * (theta * theta + phi * phi)
        for v, x in zip(targets, features):
            z = theta + phi * x
            total -= v * _log_sigmoid(z) + (1 - v) * _log_sigmoid(-z)
        return total

    theta = phi = 0.0
    current = objective(theta, phi)
    for _ in range(200):
        g0, g1 = 2 * penalty * theta, 2 * penalty * phi
        h00 = h11 = 2 * penalty
        h01 = 0.0
        for v, x in zip(targets, features):
            p = _sigmoid(theta + phi * x)
            w = p * (1 - p)
            g0 += p - v
            g1 += (p - v) * x
            h00 += w
            h01 += w * x
            h11 += w * x * x
        det = h00 * h11 - h01 * h01
        step0, step1 = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det   # H^-1 g, by hand for 2 x 2
        size = 1.0
        while (candidate := objective(theta - size * step0, phi - size * step1)) > current:
            size /= 2
            if size < 1e-10:   # no step lowers J: at the minimum to rounding
                return theta, phi
        theta, phi, current = theta - size * step0, phi - size * step1, candidate
        if max(abs(size * step0), abs(size * step1)) < 1e-12:
            break
    return theta, phi


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def length_controlled(verdicts: Sequence[float], lengths_a: Sequence[float], lengths_b: Sequence[float],
                      seed: int = 0, resamples: int = 200, penalty: float = PENALTY) -> dict:
    """{"lc_win_rate", "ci95", "length_coefficient", "length_scale", "n"}: sigmoid(theta) of the model in
    the module docstring, its percentile-bootstrap interval, phi, and s (the words that tanh(d / s) scales by).
    Lengths are in words. Deterministic for a given seed; the global RNG is not touched."""
    n = len(verdicts)
    if n == 0:
        raise ValueError("length_controlled(): no verdicts")
    if not len(lengths_a) == len(lengths_b) == n:
        raise ValueError(f"length_controlled(): {n} verdicts but {len(lengths_a)} and {len(lengths_b)} lengths")
    if resamples < 1:
        raise ValueError("length_controlled(): resamples must be >= 1")
    if any(not 0 <= v <= 1 for v in verdicts):
        raise ValueError("length_controlled(): verdicts must lie in [0, 1]")
    differences = [a - b for a, b in zip(lengths_a, lengths_b)]
    # the sample sd, as AlpacaEval's pandas .std(); s = 0 (or one prompt) leaves no length term to learn
    scale = statistics.stdev(differences) if n >= 2 else 0.0
    features = [math.tanh(d / scale) for d in differences] if scale > 0 else [0.0] * n
    theta, phi = fit_length_model(verdicts, features, penalty)
    if n < 2:
        ci = [0.0, 1.0]
    else:
        rng = random.Random(seed)
        estimates = []
        for _ in range(resamples):
            rows = [rng.randrange(n) for _ in range(n)]
            estimates.append(_sigmoid(fit_length_model([verdicts[i] for i in rows], [features[i] for i in rows], penalty)[0]))
        estimates.sort()
        ci = [_percentile(estimates, 0.025), _percentile(estimates, 0.975)]
    return {"lc_win_rate": _sigmoid(theta), "ci95": ci, "length_coefficient": phi, "length_scale": scale, "n": n}
