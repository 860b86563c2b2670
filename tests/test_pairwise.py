"""Judged pairwise win rates (evaluation.pairwise): the swap verdicts, the win rate and its interval,
and the length-controlled win rate. The expected numbers are worked out by hand in each docstring;
no model is loaded."""

import math
import random
import statistics

import pytest

from vietnamese_ai.evaluation.pairwise import fit_length_model, judge_verdicts, length_controlled, verdict, win_rate
from vietnamese_ai.scoring import Score

PROMPTS = ["q1", "q2", "q3", "q4"]


class BiasedJudge:
    """P(first better) = 0.5 + bias + preference when A is shown first, 0.5 + bias - preference when B is:
    a judge with a position bias `bias` and a real preference `preference` for A's answers."""

    def __init__(self, bias: float, preference: float, answers_a: list[str]):
        self.bias, self.preference, self.answers_a, self.calls = bias, preference, set(answers_a), []

    def first_probability(self, prompts, first, second):
        self.calls.append((list(first), list(second)))
        return [0.5 + self.bias + (self.preference if f in self.answers_a else -self.preference) for f in first]


class TableScorer:
    """A pointwise Scorer whose score for each answer is looked up in a table."""

    name = "table"

    def __init__(self, table: dict[str, float]):
        self.table = table

    def score(self, prompts, responses):
        return [Score(self.table[r]) for r in responses]


class ShortJudge:
    """A broken judge: one probability whatever the number of prompts."""

    def first_probability(self, prompts, first, second):
        return [0.7]


def test_verdict_table():
    """Both orders prefer A -> 1; both prefer B -> 0; disagreement or an exact 0.5 in either order -> 0.5."""
    assert verdict(0.8, 0.3) == 1.0                      # A first: A; B first: 0.3 < 0.5, so A
    assert verdict(0.2, 0.9) == 0.0                      # A first: B; B first: B
    assert verdict(0.9, 0.9) == 0.5                      # each order prefers its first answer
    assert verdict(0.3, 0.2) == 0.5                      # each order prefers its second answer
    assert verdict(0.5, 0.1) == verdict(0.9, 0.5) == verdict(0.5, 0.5) == 0.5   # one order has no preference


def test_a_judge_that_always_prefers_the_first_position_gives_only_ties():
    """first_probability = 0.9 whatever it is shown: every verdict is verdict(0.9, 0.9) = 0.5, so the win
    rate is exactly 0.5, all ties, and (sd 0) the interval is the point [0.5, 0.5]."""
    judge = BiasedJudge(bias=0.4, preference=0.0, answers_a=["a1", "a2", "a3", "a4"])
    records = judge_verdicts(judge, PROMPTS, ["a1", "a2", "a3", "a4"], ["b1", "b2", "b3", "b4"])
    assert [r["a_first"] for r in records] == [r["b_first"] for r in records] == [0.9] * 4
    assert win_rate([r["verdict"] for r in records]) == {"win_rate": 0.5, "ci95": [0.5, 0.5], "wins": 0, "ties": 4,
                                                        "losses": 0, "n": 4}


def test_the_judge_is_asked_both_orders():
    judge = BiasedJudge(bias=0.0, preference=0.2, answers_a=["a1", "a2"])
    judge_verdicts(judge, PROMPTS[:2], ["a1", "a2"], ["b1", "b2"])
    assert judge.calls == [(["a1", "a2"], ["b1", "b2"]), (["b1", "b2"], ["a1", "a2"])]


@pytest.mark.parametrize("bias, preference, p_a_first, p_b_first, expected", [
    # bias 0.15 outweighs a preference of 0.05: A first 0.7 (A), B first 0.6 (B, the first answer) -> tie
    (0.15, 0.05, 0.7, 0.6, 0.5),
    # preference 0.2 outweighs bias 0.1: A first 0.8 (A), B first 0.4 < 0.5 (A again) -> a win
    (0.1, 0.2, 0.8, 0.4, 1.0),
    # the same judge facing a better B: A first 0.4 (B), B first 0.8 (B) -> a loss
    (0.1, -0.2, 0.4, 0.8, 0.0),
])
def test_a_bounded_position_bias_loses_to_a_larger_real_preference(bias, preference, p_a_first, p_b_first, expected):
    judge = BiasedJudge(bias, preference, answers_a=["a1", "a2"])
    records = judge_verdicts(judge, PROMPTS[:2], ["a1", "a2"], ["b1", "b2"])
    assert records == [{"a_first": pytest.approx(p_a_first), "b_first": pytest.approx(p_b_first), "verdict": expected}] * 2


def test_the_pairwise_judge_of_feedback_is_accepted():
    """feedback.judge.PairwiseJudge holds first_probability as an attribute: the same duck type."""
    from vietnamese_ai.feedback.judge import PairwiseJudge

    judge = PairwiseJudge(first_probability=BiasedJudge(0.1, 0.2, ["a1"]).first_probability)
    assert judge_verdicts(judge, ["q"], ["a1"], ["b1"])[0]["verdict"] == 1.0


def test_a_scorer_gives_verdicts_with_a_tie_margin():
    """Margin 0.1: 0.9 vs 0.5 -> 1 (0.9 > 0.6); 0.55 vs 0.5 -> tie; 0.5 vs 0.55 -> tie; 0.2 vs 0.4 -> 0
    (0.4 > 0.3). With margin 0 the two near-ties become a win and a loss."""
    scorer = TableScorer({"a1": 0.9, "a2": 0.55, "a3": 0.5, "a4": 0.2, "b1": 0.5, "b2": 0.5, "b3": 0.55, "b4": 0.4})
    a, b = ["a1", "a2", "a3", "a4"], ["b1", "b2", "b3", "b4"]
    records = judge_verdicts(scorer, PROMPTS, a, b, tie_margin=0.1)
    assert [r["verdict"] for r in records] == [1.0, 0.5, 0.5, 0.0]
    assert records[0] == {"score_a": 0.9, "score_b": 0.5, "verdict": 1.0}
    assert [r["verdict"] for r in judge_verdicts(scorer, PROMPTS, a, b, tie_margin=0.0)] == [1.0, 1.0, 0.0, 0.0]


def test_bad_judges_and_inputs_are_refused():
    with pytest.raises(TypeError, match="neither first_probability"):
        judge_verdicts(object(), ["q"], ["a"], ["b"])
    with pytest.raises(ValueError, match="1 prompts but 2 responses"):
        judge_verdicts(TableScorer({}), ["q"], ["a", "a"], ["b"])
    with pytest.raises(ValueError, match="returned 1 and 1 probabilities for 2 prompts"):
        judge_verdicts(ShortJudge(), ["q1", "q2"], ["a", "a"], ["b", "b"])
    with pytest.raises(ValueError, match="no verdicts"):
        win_rate([])
    with pytest.raises(ValueError, match="must be 0, 0.5 or 1"):
        win_rate([0.7])
    with pytest.raises(ValueError, match="3 verdicts but 3 and 2 lengths"):
        length_controlled([1.0, 0.0, 1.0], [1, 2, 3], [1, 2])


def test_win_rate_and_its_interval_by_hand():
    """[1, 1, 0.5, 0]: mean 2.5 / 4 = 0.625. Deviations 0.375, 0.375, -0.125, -0.625; squares sum to
    0.6875; population variance 0.171875, sd 0.41458; half-width 1.96 * 0.41458 / 2 = 0.40629, so the
    interval is [0.21871, 1.03129] clipped to [0.21871, 1]."""
    result = win_rate([1.0, 1.0, 0.5, 0.0])
    assert result["win_rate"] == 0.625
    assert result["ci95"] == [pytest.approx(0.625 - 1.96 * math.sqrt(0.171875) / 2, abs=1e-4), 1.0]
    assert (result["wins"], result["ties"], result["losses"], result["n"]) == (2, 1, 1, 4)
    assert win_rate([1.0])["ci95"] == [0.0, 1.0]


VERDICTS = [1.0, 1.0, 1.0, 0.5, 0.0, 1.0, 0.5, 1.0, 1.0, 0.0]   # mean 7 / 10 = 0.7


def test_without_length_variation_the_lc_win_rate_is_the_win_rate():
    """All d = 0: s = 0, no length term (phi = 0). The theta equation of the penalised fit is
    sum_i (sigmoid(theta) - v_i) + 2 lam theta = 0, i.e. sigmoid(theta) = w - 2 lam theta / n exactly:
    with lam = 1e-9 that is w to 1e-6; with the default lam = 1e-3 the gap is 2e-3 * logit(0.7) / 10
    = 1.7e-4, pinned exactly."""
    equal = [12] * len(VERDICTS)
    tiny = length_controlled(VERDICTS, equal, equal, resamples=20, penalty=1e-9)
    assert tiny["lc_win_rate"] == pytest.approx(0.7, abs=1e-6) and tiny["length_coefficient"] == 0.0
    default = length_controlled(VERDICTS, equal, equal, resamples=20)
    lc = default["lc_win_rate"]
    theta = math.log(lc / (1 - lc))
    assert lc == pytest.approx(0.7 - 2e-3 * theta / 10, abs=1e-9)
    assert 0.7 - lc == pytest.approx(2e-3 * math.log(0.7 / 0.3) / 10, rel=1e-2)


def test_the_length_scale_is_the_sample_sd_of_the_differences():
    """d = 3, -1, 1, 1: mean 1, squared deviations 4 + 4 + 0 + 0 = 8, sample variance 8 / 3, so
    s = sqrt(8 / 3) = 1.633 words. A wins exactly where it is longer, so phi > 0."""
    result = length_controlled([1.0, 0.0, 0.5, 0.5], [5, 2, 4, 4], [2, 3, 3, 3], resamples=5)
    assert result["length_scale"] == pytest.approx(math.sqrt(8 / 3)) and result["length_coefficient"] > 0


def test_all_wins_still_give_a_finite_fit():
    """Every verdict a win: the unpenalised likelihood has no maximum (theta -> infinity); the penalty
    stops it where n (1 - sigmoid(theta)) = 2 lam theta."""
    result = length_controlled([1.0] * 10, [5] * 10, [5] * 10, resamples=10)
    theta = math.log(result["lc_win_rate"] / (1 - result["lc_win_rate"]))
    assert 0.99 < result["lc_win_rate"] < 1 and 10 * (1 - result["lc_win_rate"]) == pytest.approx(2e-3 * theta, rel=1e-6)


def length_loving_judge(seed: int, quality: float, n: int = 200):
    """Lengths in words: A ~ U(40, 160), B ~ U(10, 130), so A is the longer in about 72% of prompts.
    The judge prefers A with probability sigmoid(quality + 4 tanh(d / s)): a graded taste for length on
    top of a real quality difference `quality` (0: equal quality); each verdict is one draw."""
    rng = random.Random(seed)
    lengths_a = [rng.randint(40, 160) for _ in range(n)]
    lengths_b = [rng.randint(10, 130) for _ in range(n)]
    s = statistics.stdev(a - b for a, b in zip(lengths_a, lengths_b))
    verdicts = [1.0 if rng.random() < 1 / (1 + math.exp(-(quality + 4 * math.tanh((a - b) / s)))) else 0.0
                for a, b in zip(lengths_a, lengths_b)]
    return verdicts, lengths_a, lengths_b


def test_a_judge_that_prefers_longer_answers_of_equal_quality_is_corrected():
    """200 prompts: the raw win rate is about 0.7, yet the LC interval holds 0.5 and lies below the raw
    win rate. Its half-width is about 0.12, so the point estimate is pinned to within 0.05 of 0.5 on 2,000
    prompts (a standard error of about 0.018 there; seeds 0-5 all land within 0.04)."""
    verdicts, lengths_a, lengths_b = length_loving_judge(seed=0, quality=0.0)
    assert 0.65 < statistics.fmean(a > b for a, b in zip(lengths_a, lengths_b)) < 0.75
    raw = win_rate(verdicts)["win_rate"]
    result = length_controlled(verdicts, lengths_a, lengths_b, seed=0, resamples=100)
    assert raw > 0.65 and result["ci95"][0] < 0.5 < result["ci95"][1] < raw
    assert result["length_coefficient"] > 2
    many = length_controlled(*length_loving_judge(seed=0, quality=0.0, n=2000), resamples=1)
    assert abs(many["lc_win_rate"] - 0.5) < 0.05


def test_a_better_and_longer_model_stays_above_one_half():
    """Quality 1 on top of the length taste: the truth at equal length is sigmoid(1) = 0.731, and the raw
    win rate adds the length advantage on top of it. On 200 prompts the whole LC interval is above 0.5
    and the estimate below the raw win rate; on 2,000 the estimate is within 0.05 of 0.731."""
    verdicts, lengths_a, lengths_b = length_loving_judge(seed=1, quality=1.0)
    raw = win_rate(verdicts)["win_rate"]
    result = length_controlled(verdicts, lengths_a, lengths_b, seed=0, resamples=100)
    assert result["ci95"][0] > 0.5 and result["lc_win_rate"] < raw - 0.05
    many = length_controlled(*length_loving_judge(seed=1, quality=1.0, n=2000), resamples=1)
    assert abs(many["lc_win_rate"] - 1 / (1 + math.exp(-1))) < 0.05


def test_a_step_judge_has_a_finite_but_steep_fit():
    """A judge that always picks the longer answer makes the verdicts separable in tanh(d / s): the
    unpenalised phi would be infinite. The penalty keeps every number finite, and the steepness shows
    in phi (tens); the LC win rate itself is then set by the prompts nearest d = 0 (module docstring)."""
    rng = random.Random(0)
    lengths_a, lengths_b = [rng.randint(40, 160) for _ in range(200)], [rng.randint(10, 130) for _ in range(200)]
    verdicts = [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in zip(lengths_a, lengths_b)]
    result = length_controlled(verdicts, lengths_a, lengths_b, resamples=20)
    assert result["length_coefficient"] > 10 and 0 < result["lc_win_rate"] < 1
    assert all(math.isfinite(x) for x in result["ci95"])


def test_the_bootstrap_is_deterministic_and_leaves_the_global_rng_alone():
    verdicts, lengths_a, lengths_b = length_loving_judge(seed=2, quality=0.5, n=60)
    random.seed(123)
    before = random.random()
    random.seed(123)
    first = length_controlled(verdicts, lengths_a, lengths_b, seed=7, resamples=30)
    assert random.random() == before
    assert length_controlled(verdicts, lengths_a, lengths_b, seed=7, resamples=30) == first
    assert length_controlled(verdicts, lengths_a, lengths_b, seed=8, resamples=30)["ci95"] != first["ci95"]


def test_the_fit_recovers_known_parameters():
    """Fractional targets equal to the model's own probabilities: the unpenalised optimum is the truth,
    and lam = 1e-9 moves it by far less than 1e-4."""
    features = [math.tanh(x / 10) for x in range(-30, 31)]
    targets = [1 / (1 + math.exp(-(0.4 + 1.5 * x))) for x in features]
    theta, phi = fit_length_model(targets, features, penalty=1e-9)
    assert theta == pytest.approx(0.4, abs=1e-4) and phi == pytest.approx(1.5, abs=1e-4)
