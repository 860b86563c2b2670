"""`vietnamese-ai evaluate` with a judge and with reference answers: the verdicts, the win rates and the
correctness recomputed from samples.jsonl, and one line for bad input before any model loads."""

import json
import statistics

import pytest

from tests.conftest import read_jsonl, write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.evaluation.pairwise import length_controlled, verdict


@pytest.fixture(scope="module")
def judged(tmp_path_factory, tiny_model):
    from tests.conftest import CORPUS
    from vietnamese_ai.models.tiny import build_tiny_model

    other = build_tiny_model(str(tmp_path_factory.mktemp("other")), CORPUS, vocab_size=320, hidden_size=32,
                             num_layers=2, num_heads=4, num_kv_heads=2, max_position_embeddings=256, seed=7)
    prompts = write_jsonl(tmp_path_factory.mktemp("prompts") / "p.jsonl", [
        {"prompt": "Thủ đô của Việt Nam là gì?", "reference": "Hà Nội"},
        {"prompt": "What is the capital of Vietnam?", "reference": ["Hanoi", "Ha Noi"]},
        {"prompt": "Xin chào"}])
    runs = {}
    for label, judge in (("rules", "constitution"), ("llm", f"pairwise:{tiny_model}")):
        out = tmp_path_factory.mktemp(label) / "out"
        assert main(["evaluate", f"models=[{tiny_model},{other}]", "names=[base,other]", f"dataset={prompts}",
                     "samples=3", "max_new_tokens=8", "seed=2", f"judge={judge}", "disable_tqdm=true",
                     f"output_dir={out}"]) == 0
        runs[label] = out
    return runs


def _files(out):
    return json.loads((out / "eval.json").read_text(encoding="utf-8")), read_jsonl(out / "samples.jsonl")


def test_a_scorer_judge_gives_the_verdicts_and_win_rates_the_samples_give_by_hand(judged):
    from vietnamese_ai.feedback.rules import RuleScorer

    report, rows = _files(judged["rules"])
    rules = RuleScorer()
    verdicts = []
    for row in rows:
        a = rules.score([row["prompt_text"]], [row["answers"]["other"]])[0].value
        b = rules.score([row["prompt_text"]], [row["answers"]["base"]])[0].value
        expected = 1.0 if a > b + 0.02 else 0.0 if b > a + 0.02 else 0.5
        assert row["judged"]["other_vs_base"]["verdict"] == expected
        verdicts.append(expected)
    got = report["pairs"]["other_vs_base"]["judged"]
    assert got["win_rate"] == pytest.approx(statistics.fmean(verdicts))
    assert (got["wins"], got["ties"], got["losses"]) == (verdicts.count(1.0), verdicts.count(0.5), verdicts.count(0.0))
    half = 1.959964 * statistics.pstdev(verdicts) / len(verdicts) ** 0.5
    assert got["ci95"] == pytest.approx([max(0, got["win_rate"] - half), min(1, got["win_rate"] + half)])
    lengths = ([len(r["answers"]["other"].split()) for r in rows], [len(r["answers"]["base"].split()) for r in rows])
    assert got["lc_win_rate"] == pytest.approx(length_controlled(verdicts, *lengths, seed=2)["lc_win_rate"])


def test_an_llm_judge_is_asked_in_both_orders_and_a_disagreement_is_a_tie(judged):
    report, rows = _files(judged["llm"])
    for row in rows:
        record = row["judged"]["other_vs_base"]
        assert 0 <= record["a_first"] <= 1 and 0 <= record["b_first"] <= 1
        assert record["verdict"] == verdict(record["a_first"], record["b_first"])
    verdicts = [r["judged"]["other_vs_base"]["verdict"] for r in rows]
    assert report["pairs"]["other_vs_base"]["judged"]["win_rate"] == pytest.approx(statistics.fmean(verdicts))


def test_correctness_is_each_answer_against_its_references_by_hand(judged):
    from vietnamese_ai.evaluation.correctness import normalise

    report, rows = _files(judged["rules"])
    assert [r.get("reference") for r in rows[::3]] == [["Hà Nội"], ["Hanoi", "Ha Noi"], None]
    for name in ("base", "other"):
        got = report["models"][name]["correctness"]
        for language, index in (("vi", 0), ("en", 1)):
            these = [r for r in rows if r.get("reference") and r["prompt_text"] == rows[3 * index]["prompt_text"]]
            exact = [any(normalise(r["answers"][name], language) == normalise(x, language) for x in r["reference"])
                     for r in these]
            assert got[language]["answers"] == 3 and got[language]["exact_match"] == pytest.approx(statistics.fmean(exact))
        assert got["all"]["answers"] == 6


@pytest.mark.parametrize("record, extra, fragment", [
    ({"prompt": "x", "reference": 3}, [], "line 1: field 'reference': expected a string or a list of strings"),
    ({"prompt": "x", "reference": []}, [], "field 'reference'"),
    ({"prompt": "x"}, ["judge=pairwise:"], "judge"),
    ({"prompt": "x"}, ["judge=nonsense@x"], "judge"),
    ({"prompt": "x"}, ["judge=pairwise:no/such/dir"], "judge"),
])
def test_bad_references_and_judges_are_one_line_before_any_model_loads(tmp_path, capsys, tiny_model, record, extra,
                                                                         fragment):
    prompts = write_jsonl(tmp_path / "p.jsonl", [record])
    assert main(["evaluate", f"models=[{tiny_model},{tiny_model}]", "names=[a,b]", f"dataset={prompts}", *extra,
                 f"output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
