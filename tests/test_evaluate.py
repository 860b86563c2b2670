"""`vietnamese-ai evaluate` on two tiny models: every number of eval.json recomputed by hand from
samples.jsonl, the scores from the answers, and one clear line for bad input."""

import json
import statistics

import pytest

from tests.conftest import CORPUS, QUESTIONS, read_jsonl, write_jsonl
from vietnamese_ai.cli import main


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    from vietnamese_ai.models.tiny import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("other")), CORPUS, vocab_size=320, hidden_size=32, num_layers=2,
                            num_heads=4, num_kv_heads=2, max_position_embeddings=256, seed=7)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model, other_model):
    tmp = tmp_path_factory.mktemp("eval")
    prompts = write_jsonl(tmp / "heldout.jsonl", [{"prompt": [{"role": "user", "content": q}]} for q in QUESTIONS[:5]]
                          + [{"prompt": "Đồ ngốc, cút đi"}])
    out = tmp / "out"
    assert main(["evaluate", f"models=[{tiny_model},{other_model}]", "names=[base,other]", f"dataset={prompts}",
                 "samples=3", "max_new_tokens=8", "seed=5", f"output_dir={out}", "disable_tqdm=true"]) == 0
    return out, prompts


def test_every_number_is_what_the_samples_give_by_hand(evaluated):
    from vietnamese_ai.feedback.rules import RuleScorer

    out, _ = evaluated
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    rows = read_jsonl(out / "samples.jsonl")
    assert len(rows) == 6 * 3 and report["baseline"] == "base" and set(report["models"]) == {"base", "other"}
    rules = RuleScorer()
    for row in rows:   # the scores are the rules' scores of the answers written
        for name, answer in row["answers"].items():
            score = rules.score([row["prompt_text"]], [answer])[0]
            assert row["scores"][name] == pytest.approx(score.value)
            assert row["toxicity"][name] == pytest.approx(rules.toxicity(answer))
    for name, m in report["models"].items():
        scores = [r["scores"][name] for r in rows]
        tox = [r["toxicity"][name] for r in rows]
        assert m["score_mean"] == pytest.approx(sum(scores) / len(scores))
        assert m["score_std"] == pytest.approx(statistics.pstdev(scores))
        assert m["toxic_rate"] == pytest.approx(sum(r["toxic"][name] for r in rows) / len(rows))
        assert m["toxicity_mean"] == pytest.approx(sum(tox) / len(tox))
        assert m["answers"] == len(rows)
        words = [w.lower() for r in rows for w in r["answers"][name].split()]
        bigrams = [tuple(r["answers"][name].lower().split()[i:i + 2]) for r in rows
                   for i in range(len(r["answers"][name].split()) - 1)]
        assert m["distinct_1"] == pytest.approx(len(set(words)) / len(words))
        assert m["distinct_2"] == pytest.approx(len(set(bigrams)) / len(bigrams))
        for principle, value in m["per_principle"].items():
            assert value == pytest.approx(statistics.fmean(r["principles"][name][principle] for r in rows))
    pair = report["pairs"]["other_vs_base"]
    diffs = [r["scores"]["other"] - r["scores"]["base"] for r in rows]
    assert pair["win_rate"] == pytest.approx(sum(d > 0.02 for d in diffs) / len(diffs))
    assert pair["loss_rate"] == pytest.approx(sum(d < -0.02 for d in diffs) / len(diffs))
    assert pair["win_rate"] + pair["tie_rate"] + pair["loss_rate"] == pytest.approx(1.0)
    assert isinstance(pair["kl"], float)
    base_tox = report["models"]["base"]["toxicity_mean"]
    if base_tox:
        assert report["models"]["other"]["toxicity_improvement_pct"] == pytest.approx(
            100 * (base_tox - report["models"]["other"]["toxicity_mean"]) / base_tox)


def test_the_same_seed_gives_the_same_samples(evaluated, tmp_path, tiny_model, other_model):
    out, prompts = evaluated
    again = tmp_path / "again"
    assert main(["evaluate", f"models=[{tiny_model},{other_model}]", "names=[base,other]", f"dataset={prompts}",
                 "samples=3", "max_new_tokens=8", "seed=5", f"output_dir={again}", "disable_tqdm=true"]) == 0
    assert read_jsonl(again / "samples.jsonl") == read_jsonl(out / "samples.jsonl")


def test_a_weighted_scorer_scores_every_answer_by_the_weighted_sum(tmp_path, capsys, tiny_model, other_model):
    """scorer=constitution@2+constitution@-0.5 gives each answer 2 v - 0.5 v = 1.5 v, v its rules score;
    a malformed weight is one line naming the key and the part."""
    from vietnamese_ai.feedback.rules import RuleScorer

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": q} for q in QUESTIONS[:2]])
    argv = ["evaluate", f"models=[{tiny_model},{other_model}]", f"dataset={prompts}", "samples=1",
            "max_new_tokens=6", "disable_tqdm=true"]
    assert main([*argv, "scorer=constitution@2+constitution@-0.5", f"output_dir={tmp_path / 'o'}"]) == 0
    rows = read_jsonl(tmp_path / "o" / "samples.jsonl")
    rules = RuleScorer()
    expected = [1.5 * rules.score([r["prompt_text"]], [a])[0].value for r in rows for a in r["answers"].values()]
    assert [s for r in rows for s in r["scores"].values()] == pytest.approx(expected)
    assert len(expected) == 4 and all(e != 0 for e in expected)
    assert main([*argv, "scorer=constitution@2+constitution@", f"output_dir={tmp_path / 'bad'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "key 'scorer': 'constitution@' has no weight after '@'" in err, err


@pytest.mark.parametrize("extra,fragment", [
    (["models=[{a}]"], "give two or more"),
    (["models=[{a},{b}]", "names=[x]"], "1 names for 2 models"),
    (["models=[{a},{b}]", "toxicity=lexicon"], "toxicity: expected rules, none or classifier"),
    (["models=[{a},{b}]", "samples=0"], "key 'samples'"),
    (["models=[{a},{b}]", "toxicity=classifier:/nonexistent/clf:toxic"], "toxicity: classifier '/nonexistent/clf': no such"),
    (["models=[{a},{b}]", "scorer=bogus"], "scorer: cannot read 'bogus'"),
    (["models=[{a},/nonexistent/model]"], "models: '/nonexistent/model': no such directory"),
])
def test_bad_evaluate_input_is_one_line(tmp_path, capsys, tiny_model, other_model, extra, fragment):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    argv = ["evaluate", f"dataset={data}", f"output_dir={tmp_path / 'o'}",
            *[e.format(a=tiny_model, b=other_model) for e in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err


def test_a_prompt_record_without_a_prompt_is_named_before_any_model_loads(tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}, {"question": "y"}])
    assert main(["evaluate", "models=[/nonexistent/a,/nonexistent/b]", f"dataset={data}",
                 f"output_dir={tmp_path / 'o'}"]) == 2
    assert "p.jsonl: line 2: field 'prompt': missing" in capsys.readouterr().err
