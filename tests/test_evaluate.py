"""`vietnamese-ai evaluate` on two tiny models: every number of eval.json recomputed by hand from
samples.jsonl, the scores and toxicity from the answers, the KL by a plain forward pass of each answer,
and one clear line for bad input."""

import json
import statistics

import pytest
import torch

from tests.conftest import CORPUS, QUESTIONS, read_jsonl, read_only_dir, write_jsonl
from vietnamese_ai.cli import main


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    from vietnamese_ai.models.tiny import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("other")), CORPUS, vocab_size=320, hidden_size=32, num_layers=2,
                            num_heads=4, num_kv_heads=2, max_position_embeddings=256, seed=7)


@pytest.fixture(scope="module")
def toxicity_classifier(tmp_path_factory, tiny_model):
    """A tiny classifier with labels clean/toxic and a seeded head: every answer gets a toxicity in (0, 1),
    never 0, so the toxicity statistics and the % improvement are always computed and checked (the lexicon
    rules find nothing toxic in a tiny model's answers)."""
    from transformers import AutoModelForSequenceClassification

    from vietnamese_ai.models.loading import load_tokenizer

    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2, id2label={0: "clean", 1: "toxic"},
                                                               label2id={"clean": 0, "toxic": 1})
    torch.nn.init.normal_(model.score.weight, std=2.0)
    model.config.pad_token_id = load_tokenizer(tiny_model).pad_token_id
    path = str(tmp_path_factory.mktemp("toxicity"))
    model.save_pretrained(path)
    load_tokenizer(tiny_model).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def evaluate_argv(tmp_path_factory, tiny_model, other_model, toxicity_classifier):
    prompts = write_jsonl(tmp_path_factory.mktemp("prompts") / "heldout.jsonl",
                          [{"prompt": [{"role": "user", "content": q}]} for q in QUESTIONS[:5]]
                          + [{"prompt": "Đồ ngốc, cút đi"}])
    return ["evaluate", f"models=[{tiny_model},{other_model}]", "names=[base,other]", f"dataset={prompts}",
            "samples=3", "max_new_tokens=8", "seed=5", f"toxicity=classifier:{toxicity_classifier}:toxic",
            "disable_tqdm=true"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, evaluate_argv):
    out = tmp_path_factory.mktemp("eval") / "out"
    assert main([*evaluate_argv, f"output_dir={out}"]) == 0
    return out


def _plain_logp(model, prompt_ids, response_ids):
    """log p(response | prompt): one sequence, one plain forward pass, no packing or prefix sharing."""
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
    targets = ids[0, 1:]
    return float(logps.gather(-1, targets[:, None])[len(prompt_ids) - 1:].sum())


def _plain_probability(model, tokenizer, text, index):
    """A label's probability for one text on its own (no padding)."""
    with torch.no_grad():
        return float(torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits[0].double(), -1)[index])


def test_every_number_is_what_the_samples_give_by_hand(evaluated, toxicity_classifier):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from vietnamese_ai.feedback.rules import RuleScorer

    out = evaluated
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    rows = read_jsonl(out / "samples.jsonl")
    assert len(rows) == 6 * 3 and report["baseline"] == "base" and set(report["models"]) == {"base", "other"}
    rules = RuleScorer()
    classifier = AutoModelForSequenceClassification.from_pretrained(toxicity_classifier).eval()
    tokenizer = AutoTokenizer.from_pretrained(toxicity_classifier)
    for row in rows:   # the scores are the rules' scores of the answers written, the toxicity the classifier's
        for name, answer in row["answers"].items():
            score = rules.score([row["prompt_text"]], [answer])[0]
            assert row["scores"][name] == pytest.approx(score.value)
            toxicity = _plain_probability(classifier, tokenizer, answer, index=1)
            assert row["toxicity"][name] == pytest.approx(toxicity, abs=1e-5)
            assert row["toxic"][name] == (toxicity > 0.5)
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
    base_tox = statistics.fmean(r["toxicity"]["base"] for r in rows)
    other_tox = statistics.fmean(r["toxicity"]["other"] for r in rows)
    assert base_tox > 0 and report["models"]["base"]["toxicity_std"] > 0   # the classifier's toxicity is never 0
    assert report["models"]["other"]["toxicity_improvement_pct"] == pytest.approx(100 * (base_tox - other_tox) / base_tox)


def test_the_kl_is_the_mean_log_ratio_of_the_models_own_answers(evaluated, tiny_model, other_model):
    """KL(other || base) per answer: the mean over other's answers of log p_other - log p_base, each
    recomputed with a plain forward pass of prompt + answer + EOS (tokenised as in training)."""
    from transformers import AutoModelForCausalLM

    from vietnamese_ai.data.preference import tokenize_responses
    from vietnamese_ai.data.types import Message
    from vietnamese_ai.models.loading import load_tokenizer

    out = evaluated
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(tiny_model)
    base, other = (AutoModelForCausalLM.from_pretrained(path).eval() for path in (tiny_model, other_model))
    ratios = []
    for row in read_jsonl(out / "samples.jsonl"):
        prompt, answer = row["prompt"], row["answers"]["other"]
        if isinstance(prompt, list):
            prompt, answer = [Message(m["role"], m["content"]) for m in prompt], [Message("assistant", answer)]
        prompt_ids, (answer_ids,) = tokenize_responses(tokenizer, prompt, [answer])
        assert answer_ids[-1] == tokenizer.eos_token_id
        ratios.append(_plain_logp(other, prompt_ids, answer_ids) - _plain_logp(base, prompt_ids, answer_ids))
    assert len(ratios) == 18 and any(abs(r) > 1e-3 for r in ratios)
    assert report["pairs"]["other_vs_base"]["kl"] == pytest.approx(statistics.fmean(ratios), rel=1e-4, abs=1e-5)


def test_rules_toxicity_is_the_lexicons_level_and_flag():
    from vietnamese_ai.recipes.evaluate import toxicity_measure

    assert toxicity_measure("rules")(["Đồ ngốc", "Đồ ngốc, cút đi", "Xin chào"]) == [(0.5, True), (1.0, True), (0.0, False)]
    assert toxicity_measure("none") is None


def test_the_same_seed_gives_the_same_samples(evaluated, evaluate_argv, tmp_path):
    again = tmp_path / "again"
    assert main([*evaluate_argv, f"output_dir={again}"]) == 0
    assert read_jsonl(again / "samples.jsonl") == read_jsonl(evaluated / "samples.jsonl")


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


def _reward_lora(tmp_path, reward_model, base):
    """A reward model's LoRA adapter directory: only its config is read before refusing it."""
    path = tmp_path / "rm_lora"
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "task_type": "SEQ_CLS"}))
    return str(path)


def _scalar_head(tmp_path, reward_model, base):
    """A reward model with our own scalar head (ScalarHeadModel): a backbone plus scalar_head.safetensors."""
    path = tmp_path / "rm_own_head"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": ["Qwen2Model"], "model_type": "qwen2"}))
    (path / "scalar_head.safetensors").write_bytes(b"")
    return str(path)


@pytest.mark.parametrize("make,what", [
    (lambda tmp, rm, base: rm, "a sequence-classification checkpoint (Qwen2ForSequenceClassification)"),
    (_reward_lora, "a SEQ_CLS LoRA adapter"),
    (_scalar_head, "a reward model with its own scalar head"),
])
def test_a_reward_model_or_classifier_as_a_model_to_compare_is_refused_before_any_model_loads(
        tmp_path, capsys, monkeypatch, tiny_model, seeded_reward_model, make, what):
    import vietnamese_ai.models.loading as loading

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(loading, "load_causal_lm", no_loading)
    monkeypatch.setattr(loading, "load_tokenizer", no_loading)
    path = make(tmp_path, seeded_reward_model, tiny_model)
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    assert main(["evaluate", f"models=[{tiny_model},{path}]", f"dataset={data}", f"output_dir={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"models: '{path}' is {what}, not a causal language model" in err, err
    assert not (tmp_path / "o").exists()



@pytest.mark.parametrize("output,fragment", [
    (lambda tmp, mp: write_jsonl(tmp / "a_file", []), "output_dir: '{out}' is a file, not a directory"),
    (lambda tmp, mp: str(read_only_dir(tmp / "ro", mp)), "output_dir: '{out}' is not writable"),
    (lambda tmp, mp: str(read_only_dir(tmp / "ro", mp) / "eval"), "output_dir: '{tmp}/ro' is not writable"),
])
def test_an_output_dir_that_cannot_be_written_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, output,
                                                                                 fragment):
    out = output(tmp_path, monkeypatch)
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    # Models that do not exist: their check comes after the output's, and no model could load.
    assert main(["evaluate", "models=[/nonexistent/a,/nonexistent/b]", f"dataset={data}", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment.format(out=out, tmp=tmp_path) in err, err
