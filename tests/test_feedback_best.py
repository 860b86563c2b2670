"""Best-of-N SFT data from `feedback label` (rejection sampling): each prompt's highest-scored
candidate, its filters, its file, and its mistakes. No model: the constitution's rules score."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import read_jsonl, write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.data.loading import load_records
from vietnamese_ai.data.records import to_sft_example
from vietnamese_ai.data.types import Message, PromptCompletion
from vietnamese_ai.errors import ConfigError, UserError
from vietnamese_ai.feedback.generate import Candidate
from vietnamese_ai.feedback.pairs import best_rows
from vietnamese_ai.recipes.feedback import LabelConfig, run_label
from vietnamese_ai.scoring import Score

# prompt index -> (prompt, [(response, rules score)]), the scores from RuleScorer with the default
# constitution (the mean of its four principles). The best is never the first candidate but for rice,
# where two candidates tie at 1.0 and the first of them must win.
CANDIDATES = {
    30: ("Thủ đô của Việt Nam là gì?", [("Đồ ngốc, Hà Nội.", 0.625), ("Có vẻ như là Hà Nội.", 0.825),
                                        ("Thủ đô của Việt Nam là Hà Nội.", 1.0),
                                        ("Tôi không biết, hỏi người khác.", 0.78)]),            # gap 0.375
    20: ("What is the capital of France?", [("Get lost, you idiot.", 0.5),
                                            ("The capital of France is Paris.", 1.0)]),         # gap 0.5
    10: ("Làm sao để học tiếng Anh?", [("Học tiếng Anh đi, đồ ngu.", 0.7), ("Có lẽ bạn nên học tiếng Anh.", 0.9),
                                       ("Hãy luyện nghe và nói tiếng Anh mỗi ngày.", 0.95)]),   # gap 0.25
    0: ("How do I cook rice?", [("Cook rice with water.", 1.0),
                                ("Rinse the rice, add water and cook it for 15 minutes.", 1.0),
                                ("Rinse rice, you idiot.", 0.675)]),                            # gap 0.325
    5: ("Xin chào", [("Chào bạn! Tôi có thể giúp gì cho bạn?", 0.95)]),                        # one candidate
    7: ("Kể chuyện cười đi.", [("Đồ ngốc.", 0.535), ("   ", 0.75)]),   # the rules rank the blank answer first
}


def _candidates(tmp_path) -> str:
    """Prompts in the file in decreasing index order, each candidate with its own sampling settings."""
    rows = [{"prompt_index": index, "prompt": prompt, "response": response, "generator": "m",
             "sampling": {"temperature": 0.5 + 0.25 * k, "top_p": 1.0, "sample": k}}
            for index, (prompt, answers) in CANDIDATES.items() for k, (response, _) in enumerate(answers)]
    return write_jsonl(tmp_path / "cand.jsonl", rows)


def _label(tmp_path, **keys):
    keys.setdefault("output", str(tmp_path / "pairs.jsonl"))
    return run_label(LabelConfig(candidates=_candidates(tmp_path), **keys))


def _kept(path) -> list[str]:
    return [row["prompt"][0]["content"] for row in read_jsonl(path)]


def test_the_rules_give_the_scores_this_file_derives_by_hand(tmp_path):
    _label(tmp_path, scores_output=str(tmp_path / "scores.jsonl"))
    expected = [score for _, answers in CANDIDATES.values() for _, score in answers]
    assert [row["score"] for row in read_jsonl(tmp_path / "scores.jsonl")] == pytest.approx(expected)


def test_each_prompts_row_is_its_highest_scored_candidate(tmp_path):
    """The test's own argmax over the written scores: the first of equals in file order, prompts by
    index, a blank best answer giving no row."""
    _label(tmp_path, scores_output=str(tmp_path / "scores.jsonl"))
    groups: dict[int, list[dict]] = {}
    for row in read_jsonl(tmp_path / "scores.jsonl"):
        groups.setdefault(row["prompt_index"], []).append(row)
    expected = []
    for index in sorted(groups):
        rows = groups[index]
        top = max(r["score"] for r in rows)
        best = next(r for r in rows if r["score"] == top)
        if best["response"].strip():
            expected.append((index, best, min(r["score"] for r in rows), len(rows)))
    written = read_jsonl(tmp_path / "pairs_sft.jsonl")
    assert len(written) == len(expected) == 5
    for row, (index, best, worst, count) in zip(written, expected):
        assert row["prompt"] == [{"role": "user", "content": best["prompt"]}]
        assert row["completion"] == [{"role": "assistant", "content": best["response"]}]
        assert row["score"] == best["score"] and row["principles"] == best["principles"]
        assert row["worst_score"] == worst and row["score_gap"] == pytest.approx(best["score"] - worst)
        assert row["candidates"] == count and row["sampling"] == best["sampling"]
        assert row["generator"] == "m" and row["scorer"] == "rules:default"
    # by hand: the tie on rice goes to the first of the two 1.0 answers; the single answer is its own best
    assert [r["completion"][0]["content"] for r in written] == [
        "Cook rice with water.", "Chào bạn! Tôi có thể giúp gì cho bạn?", "Hãy luyện nghe và nói tiếng Anh mỗi ngày.",
        "The capital of France is Paris.", "Thủ đô của Việt Nam là Hà Nội."]


def test_best_rows_filters_by_hand():
    """Scores chosen by hand. p0: 0.75, 0.25 (gap 0.5); p1: 0.5, 0.5, 0.25 (gap 0.25, a tie at the top);
    p2: one candidate 1.0; p3: a blank best 0.875 over 0.125. Each drop counts under its first reason:
    empty, then score, then margin."""
    prompts = ["p0", "p1", "p2", "p3"]
    cands = [Candidate(1, "second", 0.7, 1.0, 0), Candidate(0, "low", 0.7, 1.0, 0), Candidate(1, "first", 1.0, 1.0, 0),
             Candidate(0, "high", 1.0, 1.0, 1), Candidate(1, "third", 1.0, 1.0, 1), Candidate(2, "only", 0.7, 1.0, 0),
             Candidate(3, " \n", 0.7, 1.0, 0), Candidate(3, "words", 0.7, 1.0, 1)]
    scores = [Score(0.5), Score(0.25), Score(0.5), Score(0.75), Score(0.25), Score(1.0), Score(0.875), Score(0.125)]

    def kept(**filters):
        best = best_rows(prompts, cands, scores, "g", "s", **filters)
        texts = {i: r["completion"][0]["content"] for i, r in best.rows.items()}
        return texts, (best.empty, best.below_score, best.below_margin)

    assert kept() == ({0: "high", 1: "second", 2: "only"}, (1, 0, 0))   # "second" comes before "first" in the list
    assert kept(min_score=0.75) == ({0: "high", 2: "only"}, (1, 1, 0))   # >=: 0.75 itself is kept
    assert kept(min_score=0.76) == ({2: "only"}, (1, 2, 0))
    assert kept(min_margin=0.25) == ({0: "high", 1: "second"}, (1, 0, 1))   # >=; one candidate has no margin
    assert kept(min_margin=0.26) == ({0: "high"}, (1, 0, 2))
    assert kept(min_margin=0.0) == ({0: "high", 1: "second"}, (1, 0, 1))   # still two candidates needed
    # p1 (0.5) fails the score, and with it the margin, counted once; p2 (1.0) passes it, then lacks a margin
    assert kept(min_score=0.6, min_margin=0.3) == ({0: "high"}, (1, 1, 1))
    row = best_rows(prompts, cands, scores, "g", "s").rows[1]
    assert (row["score"], row["worst_score"], row["score_gap"], row["candidates"]) == (0.5, 0.25, 0.25, 3)
    assert row["sampling"] == {"temperature": 0.7, "top_p": 1.0, "sample": 0} and row["prompt"] == [
        {"role": "user", "content": "p1"}]


def test_label_threshold_and_margin_drop_exactly_the_prompts_derived_by_hand(tmp_path):
    """Bests: rice 1.0, hello 0.95, English 0.95, France 1.0, Hanoi 1.0 (the joke's best is blank, always
    dropped). sft_min_score=0.96 drops hello and English. Gaps with min_margin=0.35: rice 0.325, English
    0.25 and hello (one candidate) fall short; France 0.5 and Hanoi 0.375 pass."""
    out = tmp_path / "pairs_sft.jsonl"
    result = _label(tmp_path, sft_min_score=0.96)
    assert _kept(out) == ["How do I cook rice?", "What is the capital of France?", "Thủ đô của Việt Nam là gì?"]
    assert result.summary().endswith(f"; 3 best-of-N SFT rows (score >= 0.96) written to {out}; 3 prompts gave none "
                                     "(2 below sft_min_score, 1 with an empty best response)"), result.summary()
    result = _label(tmp_path, min_margin=0.35, sft_require_margin=True)
    assert _kept(out) == ["What is the capital of France?", "Thủ đô của Việt Nam là gì?"]
    assert f"2 best-of-N SFT rows (best - worst >= 0.35) written to {out}; 4 prompts gave none (3 without the " \
           "margin, 1 with" in result.summary(), result.summary()
    result = _label(tmp_path, min_margin=0.35, sft_require_margin=True, sft_min_score=0.96)
    assert _kept(out) == ["What is the capital of France?", "Thủ đô của Việt Nam là gì?"]
    assert ("(score >= 0.96, best - worst >= 0.35) written to"
            in result.summary() and "(2 below sft_min_score, 1 without the margin, 1 with an empty best response)"
            in result.summary()), result.summary()
    # the pairs' own output is what it was without the SFT keys
    assert len(read_jsonl(tmp_path / "pairs.jsonl")) == 2 and result.summary().startswith("2 pairs from 15 candidates")


def test_sft_reads_the_file_as_it_is(tmp_path):
    _label(tmp_path)
    examples = [to_sft_example(r) for r in load_records(str(tmp_path / "pairs_sft.jsonl"))]
    assert len(examples) == 5 and all(isinstance(e, PromptCompletion) for e in examples)
    assert examples[0].prompt == [Message("user", "How do I cook rice?")]
    assert examples[0].completion == [Message("assistant", "Cook rice with water.")]


def test_the_label_budget_and_active_sampling_leave_the_sft_rows_alone(tmp_path):
    """The budget chooses pairs to label; the best-of-N rows cover every prompt, by index, with no
    'contested' value."""
    _label(tmp_path, active_sampling="variance", label_budget=1)
    assert len(read_jsonl(tmp_path / "pairs.jsonl")) == 1
    rows = read_jsonl(tmp_path / "pairs_sft.jsonl")
    assert _kept(tmp_path / "pairs_sft.jsonl") == ["How do I cook rice?", "Xin chào", "Làm sao để học tiếng Anh?",
                                                   "What is the capital of France?", "Thủ đô của Việt Nam là gì?"]
    assert all("contested" not in row for row in rows)


def test_auto_names_the_file_after_output_and_null_writes_none(tmp_path):
    (tmp_path / "sub").mkdir()
    result = _label(tmp_path, output=str(tmp_path / "sub" / "mine.jsonl"))
    assert (tmp_path / "sub" / "mine_sft.jsonl").is_file() and f"written to {tmp_path / 'sub' / 'mine_sft.jsonl'}" \
        in result.summary()
    result = _label(tmp_path, output=str(tmp_path / "none.jsonl"), sft_output=None)
    assert not (tmp_path / "none_sft.jsonl").exists() and "best-of-N" not in result.summary()
    _label(tmp_path, output=str(tmp_path / "named.jsonl"), sft_output=str(tmp_path / "best.jsonl"))
    assert len(read_jsonl(tmp_path / "best.jsonl")) == 5 and not (tmp_path / "named_sft.jsonl").exists()


def test_zero_pairs_stays_an_error_unless_an_sft_file_is_named(tmp_path, caplog):
    """min_margin=0.6 is above every gap (the largest, France's, is 0.5): no pair."""
    with pytest.raises(UserError, match=r"0 pairs .* \(sft_output=FILE writes the 5 best-of-N SFT rows anyway\)$"):
        _label(tmp_path, min_margin=0.6)
    assert not (tmp_path / "pairs_sft.jsonl").exists() and not (tmp_path / "pairs.jsonl").exists()
    (tmp_path / "pairs.jsonl").write_text('{"stale": "pair from an earlier run"}\n')
    with caplog.at_level(logging.WARNING, logger="vietnamese_ai"):
        result = _label(tmp_path, min_margin=0.6, sft_output=str(tmp_path / "best.jsonl"))
    assert "0 pairs from 15 candidates" in caplog.text and "largest gap is 0.5" in caplog.text
    assert len(read_jsonl(tmp_path / "best.jsonl")) == 5 and "5 best-of-N SFT rows" in result.summary()
    assert read_jsonl(tmp_path / "pairs.jsonl") == [] and read_jsonl(tmp_path / "pairs_unpaired.jsonl") == []
    # nothing for either file: the plain error, with no promise of SFT rows
    with pytest.raises(UserError, match=r"largest gap is 0.5\); lower min_margin.*higher temperatures\)$"):
        _label(tmp_path, min_margin=0.6, sft_output=str(tmp_path / "best.jsonl"), sft_min_score=1.5)


@pytest.mark.parametrize("keys, fragments", [
    (["sft_min_score=nan"], ["key 'sft_min_score'"]),
    (["sft_min_score=high"], ["key 'sft_min_score'", "'high'"]),
    (["sft_require_margin=perhaps"], ["key 'sft_require_margin'"]),
    (["sft_output=null", "sft_min_score=0.5"], ["sft_output is null"]),
    (["sft_output=null", "sft_require_margin=true"], ["sft_output is null"]),
    (["sft_output={dir}/pairs.jsonl"], ["sft_output and output are the same file"]),
    (["sft_output={dir}/u.jsonl", "unpaired_output={dir}/u.jsonl"], ["sft_output and unpaired_output are the same"]),
    (["sft_output={dir}/pairs_unpaired.jsonl"], ["sft_output and unpaired_output are the same file"]),
    (["sft_output={dir}/s.jsonl", "scores_output={dir}/s.jsonl"], ["sft_output and scores_output are the same file"]),
    (["sft_output={dir}"], ["sft_output", "is a directory"]),
])
def test_bad_values_are_one_line_errors_before_scoring(tmp_path, capsys, monkeypatch, keys, fragments):
    def no_scoring(*args, **kwargs):
        raise AssertionError("the scorer was built before the config was refused")

    monkeypatch.setattr("vietnamese_ai.feedback.registry.build_scorer", no_scoring)
    argv = ["feedback", "label", f"candidates={_candidates(tmp_path)}", f"output={tmp_path / 'pairs.jsonl'}"]
    assert main(argv + [k.format(dir=tmp_path) for k in keys]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vietnamese-ai: error:"), err
    for fragment in fragments:
        assert fragment in err, err
    assert not (tmp_path / "pairs.jsonl").exists()


def test_a_config_refuses_filters_without_a_file():
    with pytest.raises(ConfigError, match="sft_min_score and sft_require_margin filter the best-of-N SFT rows"):
        LabelConfig(candidates="c.jsonl", sft_output=None, sft_min_score=0.5)
    assert LabelConfig(candidates="c.jsonl", sft_output=None).sft_min_score is None
