"""Active sampling in `feedback label`: the contestedness measures and the label budget, by hand."""

from __future__ import annotations

import pytest

from tests.conftest import read_jsonl, write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.feedback.active import (budget_order, check_disagreement, component_disagreement, contestedness,
                                           score_variance, scorer_components)
from vietnamese_ai.feedback.registry import build_scorer
from vietnamese_ai.recipes.feedback import LabelConfig, run_label
from vietnamese_ai.scoring import Score


def test_variance_is_the_population_variance_of_the_overall_scores():
    # mean 0.5: ((0.2-0.5)^2 + (0.4-0.5)^2 + (0.9-0.5)^2) / 3 = (0.09 + 0.01 + 0.16) / 3 = 0.26 / 3
    assert score_variance([Score(0.2), Score(0.4), Score(0.9)]) == pytest.approx(0.26 / 3)
    assert score_variance([Score(0.7)]) == 0.0 and score_variance([Score(0.3), Score(0.3)]) == 0.0
    # population, not sample: two scores 0 and 1 give 0.25, not 0.5
    assert score_variance([Score(0.0), Score(1.0)]) == 0.25


def test_disagreement_is_the_share_of_candidate_pairs_the_components_split_on():
    a = Score(0.5, {"helpful": 1.0, "harmless": 0.0, "honest": 0.5})
    b = Score(0.5, {"helpful": 0.0, "harmless": 1.0, "honest": 0.5})
    c = Score(0.9, {"helpful": 1.0, "harmless": 1.0, "honest": 0.5})
    d = Score(0.2, {"helpful": 0.0, "harmless": 0.0, "honest": 0.5})
    # pairs: (a,b) split; (a,c) c >= a everywhere; (a,d) a >= d; (b,c) c >= b; (b,d) b >= d; (c,d) c >= d -> 1/6
    assert component_disagreement([a, b, c, d], ["helpful", "harmless", "honest"]) == pytest.approx(1 / 6)
    # ties do not count as a preference: 'honest' is equal everywhere, so alone it never splits a pair
    assert component_disagreement([a, b], ["helpful", "honest"]) == 0.0
    # only the named components count: helpful and harmless alone split (a, b), one of one pair
    assert component_disagreement([a, b], ["helpful", "harmless"]) == 1.0
    assert component_disagreement([a], ["helpful", "harmless"]) == 0.0
    with pytest.raises(KeyError, match="respectful"):
        component_disagreement([a, b], ["helpful", "respectful"])


def test_contestedness_groups_candidates_by_prompt_in_any_order():
    scores = [Score(1.0, {"x": 1.0, "y": 0.0}), Score(0.0, {"x": 0.0, "y": 0.0}), Score(0.5, {"x": 0.0, "y": 1.0}),
              Score(0.2, {"x": 0.2, "y": 0.2})]
    indices = [7, 3, 7, 3]   # prompt 7: scores 1.0 and 0.5; prompt 3: 0.0 and 0.2
    assert contestedness(indices, scores, "variance") == pytest.approx({7: 0.0625, 3: 0.01})
    assert contestedness(indices, scores, "disagreement", ["x", "y"]) == {7: 1.0, 3: 0.0}
    with pytest.raises(ValueError, match="2 prompt indices but 4 scores"):
        contestedness([7, 3], scores, "variance")


def test_budget_keeps_the_most_contested_prompts_ties_by_index():
    contested = {5: 0.2, 0: 0.1, 3: 0.2, 9: 0.9, 1: 0.0}
    assert budget_order([5, 0, 3, 9, 1], contested, 3) == [9, 3, 5]   # 3 and 5 tie: the lower index first
    assert budget_order([5, 0, 3, 9, 1], contested, None) == [9, 3, 5, 0, 1]
    assert budget_order([5, 0, 3, 9, 1], None, 2) == [0, 1]          # none: the first by prompt index
    assert budget_order([5, 0], contested, 10) == [5, 0]              # a budget above what there is keeps all
    with pytest.raises(ValueError, match="budget must be >= 1"):
        budget_order([5, 0], contested, 0)


def test_components_of_each_kind_of_scorer():
    assert scorer_components(build_scorer("constitution")) == ["harmless", "helpful", "honest", "respectful"]
    weighted = build_scorer("constitution@0.5+constitution:" + _one_principle_path() + "@0.5")
    assert len(scorer_components(weighted)) == 2   # the parts, not the principles inside them
    # two parts of the same name land on one key of Score.principles: one component
    assert len(scorer_components(build_scorer("constitution@2+constitution@2"))) == 1


def _one_principle_path(directory: str | None = None) -> str:
    import os
    import tempfile

    path = os.path.join(directory or tempfile.mkdtemp(), "one.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write("name: only-harmless\nprinciples:\n  - id: harmless\n    weight: 1.0\n"
                "    description: {vi: 'vô hại', en: 'harmless'}\n    critique: {vi: 'c', en: 'c'}\n"
                "    revision: {vi: 'r', en: 'r'}\n")
    return path


# Four prompts whose candidates the default constitution's rules score differently (values in the
# comments, from RuleScorer): each prompt's best and worst differ by more than min_margin=0.1.
CANDIDATES = {
    "Thủ đô của Việt Nam là gì?": ["Thủ đô của Việt Nam là Hà Nội.", "Đồ ngốc, Hà Nội.",            # 1.0, 0.625
                                   "Tôi không biết, hỏi người khác.", "Có vẻ như là Hà Nội."],       # 0.78, 0.825
    "What is the capital of France?": ["The capital of France is Paris.", "Get lost, you idiot."],   # 1.0, 0.5
    "Làm sao để học tiếng Anh?": ["Hãy luyện nghe và nói tiếng Anh mỗi ngày.", "Học tiếng Anh đi, đồ ngu.",
                                  "Có lẽ bạn nên học tiếng Anh."],                                    # 0.95, 0.7, 0.9
    "How do I cook rice?": ["Rinse the rice, add water and cook it for 15 minutes.", "Cook rice with water.",
                            "Rinse rice, you idiot."],                                                # 1.0, 1.0, 0.675
}


def _candidates(tmp_path):
    rows = [{"prompt_index": 10 * (3 - i), "prompt": p, "response": r}   # indices 30, 20, 10, 0: not in file order
            for i, (p, responses) in enumerate(CANDIDATES.items()) for r in responses]
    return write_jsonl(tmp_path / "cand.jsonl", rows)


def _recomputed_top(scores_file, measure: str, budget: int) -> list[tuple[int, float]]:
    """The test's own reading of the scores file: (prompt_index, contestedness), most contested first."""
    groups: dict[int, list[dict]] = {}
    for row in read_jsonl(scores_file):
        groups.setdefault(row["prompt_index"], []).append(row)
    values = {}
    for index, rows in groups.items():
        if measure == "variance":
            mean = sum(r["score"] for r in rows) / len(rows)
            values[index] = sum((r["score"] - mean) ** 2 for r in rows) / len(rows)
        else:
            pairs = [(a, b) for k, a in enumerate(rows) for b in rows[k + 1:]]
            split = sum(any(a["principles"][c] > b["principles"][c] for c in a["principles"]) and
                        any(a["principles"][c] < b["principles"][c] for c in a["principles"]) for a, b in pairs)
            values[index] = split / len(pairs)
    return sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:budget]


@pytest.mark.parametrize("measure", ["variance", "disagreement"])
def test_label_with_a_budget_keeps_the_pairs_of_the_most_contested_prompts(tmp_path, measure):
    out, scores = tmp_path / "pairs.jsonl", tmp_path / "scores.jsonl"
    result = run_label(LabelConfig(candidates=str(_candidates(tmp_path)), output=str(out), scores_output=str(scores),
                                   active_sampling=measure, label_budget=2))
    top = _recomputed_top(scores, measure, 2)
    prompt_of = {row["prompt_index"]: row["prompt"] for row in read_jsonl(scores)}
    pairs = read_jsonl(out)
    assert [p["prompt"][0]["content"] for p in pairs] == [prompt_of[index] for index, _ in top]
    assert [p["contested"] for p in pairs] == pytest.approx([value for _, value in top])
    assert "label_budget 2 kept 2 of 4" in result.summary(), result.summary()
    assert len(read_jsonl(tmp_path / "pairs_unpaired.jsonl")) == 4


def test_variance_budget_by_hand(tmp_path):
    """Variances by hand from the rules' scores: France (1.0, 0.5) 0.0625; rice (1.0, 1.0, 0.675)
    mean 0.89167, (2 x 0.10833^2 + 0.21667^2) / 3 = 0.023472; Hanoi (1.0, 0.625, 0.78, 0.825) mean 0.8075,
    (0.1925^2 + 0.1825^2 + 0.0275^2 + 0.0175^2) / 4 = 0.017856; English (0.95, 0.7, 0.9) 0.011667."""
    out = tmp_path / "pairs.jsonl"
    run_label(LabelConfig(candidates=str(_candidates(tmp_path)), output=str(out), active_sampling="variance",
                          label_budget=3))
    pairs = read_jsonl(out)
    assert [p["prompt"][0]["content"] for p in pairs] == ["What is the capital of France?", "How do I cook rice?",
                                                          "Thủ đô của Việt Nam là gì?"]
    assert [p["contested"] for p in pairs] == pytest.approx([0.0625, 0.0234722, 0.0178562], abs=1e-6)


def test_no_active_sampling_with_a_budget_keeps_the_first_prompts_and_no_value(tmp_path):
    out = tmp_path / "pairs.jsonl"
    result = run_label(LabelConfig(candidates=str(_candidates(tmp_path)), output=str(out), label_budget=2))
    pairs = read_jsonl(out)
    # prompt indices 0 (rice) and 10 (English), whatever their order in the file
    assert [p["prompt"][0]["content"] for p in pairs] == ["How do I cook rice?", "Làm sao để học tiếng Anh?"]
    assert all("contested" not in p for p in pairs)
    assert "label_budget 2 kept 2 of 4: the first by prompt index" in result.summary()
    result = run_label(LabelConfig(candidates=str(_candidates(tmp_path)), output=str(out), label_budget=10))
    assert len(read_jsonl(out)) == 4 and "label_budget 10 kept 4 of 4" in result.summary(), result.summary()


def test_active_sampling_without_a_budget_orders_and_keeps_everything(tmp_path):
    out = tmp_path / "pairs.jsonl"
    run_label(LabelConfig(candidates=str(_candidates(tmp_path)), output=str(out), active_sampling="variance"))
    values = [p["contested"] for p in read_jsonl(out)]
    assert len(values) == 4 and values == sorted(values, reverse=True)


def test_disagreement_needs_two_components(tmp_path, capsys):
    cand = _candidates(tmp_path)
    with pytest.raises(ConfigError, match="^active_sampling=disagreement needs a scorer with two or more components "
                                          r"\(principles or weighted parts\); scorer rules:only-harmless has one$"):
        run_label(LabelConfig(candidates=str(cand), output=str(tmp_path / "p.jsonl"), active_sampling="disagreement",
                              scorer="constitution:" + _one_principle_path(str(tmp_path))))
    assert check_disagreement(build_scorer("constitution")) == ["harmless", "helpful", "honest", "respectful"]
    assert main(["feedback", "label", f"candidates={cand}", f"output={tmp_path / 'p.jsonl'}",
                 "active_sampling=disagreement", "scorer=constitution@2+constitution@2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "scorer 2*rules:default+2*rules:default has one" in err, err
    assert not (tmp_path / "p.jsonl").exists()   # refused before anything is written


@pytest.mark.parametrize("budget", ["0", "-3"])
def test_label_budget_below_one_is_refused(tmp_path, capsys, budget):
    assert main(["feedback", "label", f"candidates={_candidates(tmp_path)}", f"output={tmp_path / 'p.jsonl'}",
                 f"label_budget={budget}"]) == 2
    err = capsys.readouterr().err
    assert "label_budget" in err and "greater than or equal to 1" in err, err
    with pytest.raises(Exception, match="label_budget"):
        LabelConfig(candidates="c.jsonl", label_budget=int(budget))
