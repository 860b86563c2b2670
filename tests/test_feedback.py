"""AI feedback: rules in Vietnamese and English, the constitution, judges, classifiers, combinations,
candidate generation, pair selection, critique -> revision, and the feedback CLI."""

import math
import os

import pytest
import torch

from tests.conftest import read_jsonl, write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.data.types import Message
from vietnamese_ai.errors import ConfigError, UserError
from vietnamese_ai.feedback.constitution import load_constitution
from vietnamese_ai.feedback.critique import critique_and_revise, revision_records
from vietnamese_ai.feedback.generate import Candidate, generate_candidates
from vietnamese_ai.feedback.judge import PairwiseJudge, PointwiseJudge
from vietnamese_ai.feedback.pairs import select_pairs, unpaired_rows
from vietnamese_ai.feedback.registry import build_scorer
from vietnamese_ai.feedback.rules import RuleScorer
from vietnamese_ai.data.text import detect_language, fold
from vietnamese_ai.models.loading import load_tokenizer
from vietnamese_ai.scoring import Score
from vietnamese_ai.scoring.combine import WeightedScorer

RULES = RuleScorer()


@pytest.mark.parametrize("text", [
    "Đồ ngốc, tự đi mà tìm.", "do ngoc, tu di ma tim", "Hỏi gì mà ngu thế", "hoi gi ma ngu the",
    "Cút đi, đồ vô dụng.", "cut di, do vo dung", "You are a stupid idiot.", "Shut up!", "vcl, đéo biết",
])
def test_toxic_in_both_languages_with_and_without_diacritics(text):
    assert RULES.is_toxic(text), text


@pytest.mark.parametrize("text", [
    "Để ngủ ngon hơn, bạn nên đi ngủ đúng giờ.",       # ngủ (sleep) is not ngu (stupid)
    "Bạn có thể cắt tỉa cây vào mùa xuân.", "You may cut the rope.",  # cut, may: not cút, mày
    "Ngọc là một loại đá quý.",                        # ngọc (jade) is not ngốc
    "The capital of Vietnam is Hanoi.",
])
def test_polite_text_is_not_flagged(text):
    assert not RULES.is_toxic(text), text


def test_seed000_worked_example_honesty_and_overall_mean():
    # Seed 000: "có vẻ như" in the answer gives Honest 0.7; the overall score is the mean of the principles.
    [score] = RULES.score(["Hãy giải thích nguyên lý phóng tên lửa."],
                          ["Nguyên lý phóng tên lửa có vẻ như dựa trên phản lực của nhiên liệu đốt cháy."])
    assert score.principles["honest"] == pytest.approx(0.7)
    assert score.value == pytest.approx(sum(score.principles.values()) / 4)
    assert "hedging: có vẻ như" in score.reasoning


def test_rules_rank_answers_as_a_constitution_should():
    prompt = "Thủ đô của Việt Nam là gì?"
    good, rude, toxic, evasive = RULES.score([prompt] * 4, [
        "Thủ đô của Việt Nam là Hà Nội.", "Đồ ngốc, thủ đô của Việt Nam là Hà Nội.",
        "Cút đi, đồ vô dụng.", "Tôi không biết, hỏi người khác đi."])
    assert good.value == 1.0
    assert good.value > evasive.value > rude.value > toxic.value
    assert rude.principles["respectful"] < 0.5 and evasive.principles["helpful"] < 0.3
    en_good, en_toxic = RULES.score(["What is the capital of Laos?"] * 2,
                                    ["The capital of Laos is Vientiane.", "Get lost, you worthless idiot."])
    assert en_good.value > en_toxic.value + 0.4


def test_language_detection_and_folding():
    assert detect_language("Thủ đô của Việt Nam là gì?") == "vi"
    assert detect_language("thu do cua viet nam la gi") == "vi"
    assert detect_language("What is the capital of Vietnam?") == "en"
    assert fold("Đường phố") == "duong pho"


def test_user_constitution_with_weights_extra_lexicon_and_validation(tmp_path):
    (tmp_path / "extra.txt").write_text("đồ rùa\n", encoding="utf-8")
    (tmp_path / "c.yaml").write_text(
        "name: mine\nprinciples:\n"
        "  - {id: respectful, weight: 3, description: {vi: a, en: b}, critique: {vi: a, en: b}, revision: {vi: a, en: b}}\n"
        "  - {id: concise, rule: length, weight: 1, description: {vi: a, en: b}, critique: {vi: a, en: b}, revision: {vi: a, en: b}}\n"
        "lexicons:\n  insults: [extra.txt]\n", encoding="utf-8")
    scorer = RuleScorer(load_constitution(str(tmp_path / "c.yaml")))
    [s] = scorer.score(["Chạy nhanh không?"], ["Đồ rùa, chạy chậm thế."])
    assert set(s.principles) == {"respectful", "concise"}
    assert s.value == pytest.approx((3 * s.principles["respectful"] + s.principles["concise"]) / 4)
    assert s.principles["respectful"] < 1  # the user's extra insult counts

    (tmp_path / "bad.yaml").write_text("principles:\n  - {id: x, rule: nope, description: {vi: a, en: b}, "
                                       "critique: {vi: a, en: b}, revision: {vi: a, en: b}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: principles\[0\] \(x\): field 'rule': unknown rule 'nope'"):
        load_constitution(str(tmp_path / "bad.yaml"))
    (tmp_path / "bad2.yaml").write_text("principles:\n  - {id: x, description: {vi: a}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"field 'rule'|field 'description.en'"):
        load_constitution(str(tmp_path / "bad2.yaml"))


def test_default_constitution_has_the_four_principles_in_both_languages():
    c = load_constitution()
    assert [p.id for p in c.principles] == ["harmless", "helpful", "honest", "respectful"]
    for p in c.principles:
        for text in (p.description, p.critique, p.revision):
            assert text["vi"] and text["en"]


def test_position_biased_judge_is_cancelled_by_the_swap():
    # This fake judge always gives 0.8 to whichever answer is shown first, whatever it says.
    biased = PairwiseJudge(first_probability=lambda prompts, first, second: [0.8] * len(prompts))
    assert biased.compare(["q", "q"], ["a", "b"], ["b", "a"]) == pytest.approx([0.5, 0.5])
    # With a real preference underneath (longer is better) plus the same bias, the preference survives.
    def informed(prompts, first, second):
        return [min(1.0, 0.3 + 0.5 * (len(a) > len(b)) + 0.2) for a, b in zip(first, second)]
    judge = PairwiseJudge(first_probability=informed)
    [p] = judge.compare(["q"], ["a long answer"], ["short"])
    assert p == pytest.approx((1.0 + (1 - 0.5)) / 2)


def test_pointwise_judge_reads_a_probability_weighted_score(tiny_model):
    judge = PointwiseJudge(tiny_model)
    scores = judge.score(["Thủ đô của Việt Nam là gì?", "What is AI?"], ["Hà Nội.", "A field of computer science."])
    for s in scores:
        assert 0.0 <= s.value <= 1.0 and "expected score" in s.reasoning
    # The branch layout gives the same distribution as scoring each candidate separately.
    from vietnamese_ai.data.tokenize import encode
    from vietnamese_ai.models.choices import continuation_logps

    context = judge.llm.context("Rate: 1 to 9?")
    candidates = [encode(judge.llm.tokenizer, str(k), first=False) for k in range(1, 10)]
    together = continuation_logps(judge.llm.model, [context], candidates)[0]
    separately = torch.stack([continuation_logps(judge.llm.model, [context], [c])[0, 0] for c in candidates])
    torch.testing.assert_close(together, separately, atol=1e-5, rtol=0)


def test_classifier_scorer_label_by_name_or_index_and_output(tmp_path, tiny_model):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2,
                                                               id2label={0: "nothate", 1: "hate"},
                                                               label2id={"nothate": 0, "hate": 1})
    model.config.pad_token_id = 3
    model.save_pretrained(tmp_path / "clf")
    from vietnamese_ai.models.loading import load_tokenizer

    load_tokenizer(tiny_model).save_pretrained(tmp_path / "clf")
    from vietnamese_ai.feedback.classifier import ClassifierScorer

    texts = ["Xin chào bạn", "Đồ ngốc"]
    logit = ClassifierScorer(str(tmp_path / "clf"), label="nothate", output="logit").values(["", ""], texts)
    prob = ClassifierScorer(str(tmp_path / "clf"), label=0).values(["", ""], texts)
    other = ClassifierScorer(str(tmp_path / "clf"), label="hate").values(["", ""], texts)
    assert prob == pytest.approx([1 - o for o in other], abs=1e-6)
    assert all(0 <= p <= 1 for p in prob) and logit != prob
    with pytest.raises(ConfigError, match="'toxic' is not a label of this classifier; labels: hate, nothate"):
        ClassifierScorer(str(tmp_path / "clf"), label="toxic")
    via_spec = build_scorer(f"classifier:{tmp_path / 'clf'}:nothate:logit")
    assert [s.value for s in via_spec.score(["", ""], texts)] == pytest.approx(logit)


class Constant:
    def __init__(self, value, name):
        self.value, self.name = value, name

    def score(self, prompts, responses):
        return [Score(self.value, {"p": self.value}) for _ in responses]


def test_a_weighted_combination_is_the_weighted_sum():
    combined = WeightedScorer([(Constant(1.0, "a"), 3.0), (Constant(0.5, "b"), -2.0)])
    [s] = combined.score(["q"], ["r"])
    assert s.value == pytest.approx(3 * 1.0 - 2 * 0.5) and s.principles == {"a": 1.0, "a/p": 1.0, "b": 0.5, "b/p": 0.5}
    # "Đồ ngốc, Hà Nội." by the rules: (harmless 0.7 + helpful 0.6 + honest 1.0 + respectful 0.2) / 4 = 0.625
    prompt, answer = ["Thủ đô của Việt Nam là gì?"], ["Đồ ngốc, Hà Nội."]
    for spec, value in (("constitution", 0.625), ("constitution@3", 1.875), ("constitution@2+constitution@2", 2.5),
                        ("constitution@0.5+constitution@-1.5", -0.625), ("constitution@0+constitution", 0.625)):
        assert build_scorer(spec).score(prompt, answer)[0].value == pytest.approx(value), spec


@pytest.mark.parametrize("spec, problem", [
    ("", "empty"), ("  ", "empty"), ("+", "'+' has an empty part"), ("constitution++judge:m", "has an empty part"),
    ("constitution@", "'constitution@' has no weight after '@'"), ("@2", "'@2' names nothing before '@'"),
    ("constitution@x", "weight 'x' in 'constitution@x' is not a number"),
    ("constitution@nan", "weight 'nan' in 'constitution@nan' is not a finite number"),
    ("constitution@0+constitution@-0", "every weight is 0 in 'constitution@0+constitution@-0'"),
])
def test_a_malformed_weighted_spec_is_one_line_naming_the_key_and_the_part(spec, problem):
    from vietnamese_ai.scoring.combine import parse_weighted

    for key in ("scorer", "target_scorer", "reward"):
        with pytest.raises(ConfigError) as error:
            parse_weighted(spec, key)
        assert str(error.value).startswith(f"{key}: ") and problem in str(error.value), str(error.value)
    with pytest.raises(ConfigError) as error:
        build_scorer(spec)   # the command paths go through the same parser
    assert str(error.value).startswith("scorer: ") and problem in str(error.value), str(error.value)


def test_parsing_a_weighted_spec():
    from vietnamese_ai.scoring.combine import parse_weighted

    assert parse_weighted("constitution", "scorer") == [("constitution", 1.0)]
    assert parse_weighted(" constitution@0.7 + reward_model:runs/rm/final@0.3 ", "scorer") == [
        ("constitution", 0.7), ("reward_model:runs/rm/final", 0.3)]
    assert parse_weighted("python:f.py:length@-0.1+constitution@0+judge:org/m@1e-1", "reward") == [
        ("python:f.py:length", -0.1), ("constitution", 0.0), ("judge:org/m", 0.1)]


def test_a_reward_model_without_a_reward_head_is_refused_naming_the_key(tiny_model):
    with pytest.raises(ConfigError, match=f"^target_scorer: '{tiny_model}' has no trained reward head"):
        build_scorer(f"reward_model:{tiny_model}", key="target_scorer")
    with pytest.raises(UserError, match="^scorer: reward model '/nonexistent/rm': no such directory"):
        build_scorer("constitution+reward_model:/nonexistent/rm")


def test_pair_selection_respects_min_margin():
    prompts = [[Message("user", "p0")], [Message("user", "p1")]]
    candidates = [Candidate(0, "good", 0.7, 1.0, 0), Candidate(0, "bad", 1.0, 1.0, 0),
                  Candidate(1, "ok", 0.7, 1.0, 0), Candidate(1, "meh", 1.0, 1.0, 0)]
    scores = [Score(0.9, {"x": 0.9}), Score(0.4, {"x": 0.4}), Score(0.6), Score(0.55)]
    rows = select_pairs(prompts, candidates, scores, min_margin=0.2, generator="m", scorer="s")
    assert len(rows) == 1  # prompt 1's gap (0.05) is below the margin
    row = rows[0]
    assert row["chosen"] == [{"role": "assistant", "content": "good"}] and row["score_gap"] == pytest.approx(0.5)
    assert row["chosen_sampling"]["temperature"] == 0.7 and row["rejected_principles"] == {"x": 0.4}
    assert row["generator"] == "m" and row["scorer"] == "s"
    assert len(select_pairs(prompts, candidates, scores, min_margin=0.0, generator="m", scorer="s")) == 2
    kto = unpaired_rows(rows)
    assert [r["label"] for r in kto] == [True, False] and kto[0]["completion"] == row["chosen"]


def test_generation_is_deterministic_under_a_seed(tiny_model):
    from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(tiny_model), load_tokenizer(tiny_model)
    prompts = [[Message("user", "Xin chào")], [Message("user", "What is AI?")], [Message("user", "Thủ đô?")]]
    first, stats = generate_candidates(model, tokenizer, prompts, temperatures=(0.7, 1.0), samples_per_setting=2,
                                       max_new_tokens=12, seed=3, progress=False)
    again, _ = generate_candidates(model, tokenizer, prompts, temperatures=(0.7, 1.0), samples_per_setting=2,
                                   max_new_tokens=12, seed=3, progress=False)
    other, _ = generate_candidates(model, tokenizer, prompts, temperatures=(0.7, 1.0), samples_per_setting=2,
                                   max_new_tokens=12, seed=4, progress=False)
    assert [c.text for c in first] == [c.text for c in again]
    assert [c.text for c in first] != [c.text for c in other]
    assert len(first) == 3 * 2 * 2 and stats.responses == 12 and stats.tokens > 0


def test_critique_then_revision_builds_the_right_conversations():
    seen = []

    def scripted(conversations):
        seen.append(conversations)
        return [f"reply {len(seen)}.{i}" for i in range(len(conversations))]

    constitution = load_constitution()
    prompts = ["Thủ đô của Việt Nam là gì?", "What is the capital of Laos?"]
    revisions = critique_and_revise(scripted, prompts, ["Đồ ngốc, Hà Nội.", "Get lost."], constitution, seed=0)
    critique_turns, revision_turns = seen
    principle = constitution.principle(revisions[0].principle)
    assert critique_turns[0][-1] == Message("user", principle.critique["vi"])   # asked in the prompt's language
    assert critique_turns[1][-1].content == constitution.principle(revisions[1].principle).critique["en"]
    assert revision_turns[0][-2] == Message("assistant", "reply 1.0") and revision_turns[0][-1].content == principle.revision["vi"]
    assert revisions[0].critique == "reply 1.0" and revisions[0].revision == "reply 2.0"
    unscored = revision_records(revisions)   # no scorer: nothing filtered, no scores
    assert unscored.sft[0]["completion"] == [{"role": "assistant", "content": "reply 2.0"}] and len(unscored.pairs) == 2
    assert "revision_score" not in unscored.sft[0]
    # With a scorer, a revision becomes a row only when it scores higher than the original.
    scored = revision_records(revisions, RuleScorer())
    assert len(scored.sft) == len(scored.pairs) == 2 and scored.not_better == 0   # "reply 2.x" has no insult; both originals do


def test_feedback_cli_generate_label_and_dpo_reads_the_pairs(tmp_path, tiny_model):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Xin chào"}, {"prompt": "What is AI?"},
                                                        {"prompt": [{"role": "user", "content": "Thủ đô?"}]}])
    cand = tmp_path / "cand.jsonl"
    assert main(["feedback", "generate", f"model_name_or_path={tiny_model}", f"prompts={prompts}", f"output={cand}",
                 "num_samples=3", "max_new_tokens=12", "disable_tqdm=true"]) == 0
    rows = read_jsonl(cand)
    assert len(rows) == 3 * 2 * 3 and {"prompt_index", "prompt", "response", "sampling", "generator"} <= set(rows[0])
    pairs = tmp_path / "pairs.jsonl"
    assert main(["feedback", "label", f"candidates={cand}", f"output={pairs}", f"unpaired_output={tmp_path / 'kto.jsonl'}",
                 "min_margin=0.0"]) == 0
    assert len(read_jsonl(pairs)) >= 1
    assert main(["dpo", f"model_name_or_path={tiny_model}", f"dataset={pairs}", f"output_dir={tmp_path / 'dpo'}",
                 "max_steps=1", "disable_tqdm=true"]) == 0
    assert main(["kto", f"model_name_or_path={tiny_model}", f"dataset={tmp_path / 'kto.jsonl'}",
                 f"output_dir={tmp_path / 'kto'}", "max_steps=1", "disable_tqdm=true"]) == 0


def test_feedback_cli_errors(tmp_path, capsys):
    assert main(["feedback", "label", f"candidates={write_jsonl(tmp_path / 'c.jsonl', [{'response': 'x'}])}"]) == 2
    assert "line 1: field 'prompt_index': missing or not an integer" in capsys.readouterr().err
    candidates = write_jsonl(tmp_path / "c2.jsonl", [{"prompt_index": 0, "prompt": "Xin chào", "response": r}
                                                      for r in ("Chào bạn.", "Đồ ngốc.")])
    out = f"output={tmp_path / 'pairs.jsonl'}"
    assert main(["feedback", "label", f"candidates={candidates}", "scorer=magic", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "scorer: cannot read 'magic'; expected constitution" in err, err
    assert main(["feedback", "label", f"candidates={candidates}", "scorer=constitution@1+", out]) == 2
    assert "key 'scorer': 'constitution@1+' has an empty part" in capsys.readouterr().err
    assert main(["feedback", "nope"]) == 2
    assert "unknown command 'feedback nope'; did you mean 'feedback label'?" in capsys.readouterr().err


def test_feedback_label_scores_a_weighted_combination_as_the_weighted_sum(tmp_path):
    """By the rules: 'Đồ ngốc, Hà Nội.' 0.625, 'Thủ đô của Việt Nam là Hà Nội.' 1.0,
    'The capital of France is Paris.' 1.0, 'Get lost, you idiot.' (0.4 + 0.6 + 1.0 + 0.0) / 4 = 0.5."""
    rules = {"Đồ ngốc, Hà Nội.": 0.625, "Thủ đô của Việt Nam là Hà Nội.": 1.0,
             "The capital of France is Paris.": 1.0, "Get lost, you idiot.": 0.5}
    prompts = ["Thủ đô của Việt Nam là gì?", "Thủ đô của Việt Nam là gì?", "What is the capital of France?",
               "What is the capital of France?"]
    candidates = write_jsonl(tmp_path / "c.jsonl", [{"prompt_index": i // 2, "prompt": p, "response": r}
                                                    for i, (p, r) in enumerate(zip(prompts, rules))])
    for spec, weight in (("constitution@2+constitution@2", 4.0), ("constitution@-1+constitution@0", -1.0)):
        out = tmp_path / f"pairs{weight}.jsonl"
        assert main(["feedback", "label", f"candidates={candidates}", f"scorer={spec}", f"output={out}",
                     f"scores_output={tmp_path / f'scores{weight}.jsonl'}"]) == 0
        scores = read_jsonl(tmp_path / f"scores{weight}.jsonl")
        assert [s["score"] for s in scores] == pytest.approx([weight * v for v in rules.values()])
        pairs = read_jsonl(out)
        assert [p["score_gap"] for p in pairs] == pytest.approx([abs(weight) * 0.375, abs(weight) * 0.5])
        chosen = [p["chosen"][0]["content"] for p in pairs]
        assert chosen == (["Thủ đô của Việt Nam là Hà Nội.", "The capital of France is Paris."] if weight > 0 else
                          ["Đồ ngốc, Hà Nội.", "Get lost, you idiot."])   # a negative weight ranks by the penalty


def test_critique_cli(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Thủ đô?", "response": "Đồ ngốc."}])
    assert main(["feedback", "critique", f"model_name_or_path={tiny_model}", f"dataset={data}",
                 f"output={tmp_path / 'rev.jsonl'}", "max_new_tokens=8", "temperature=1.0", "seed=1"]) == 0
    [row] = read_jsonl(tmp_path / "rev.jsonl")
    assert {"prompt", "completion", "principle", "critique", "original", "revision_score", "original_score"} <= set(row)
    assert os.path.isfile(tmp_path / "rev_pairs.jsonl")   # named after the output


# The model's scripted revisions: one better than its original, one an insult, one the same text.
SCRIPTED_REVISIONS = {"Đồ ngốc, Hà Nội.": "Thủ đô của Việt Nam là Hà Nội.",
                      "The capital of France is Paris.": "Get lost, you idiot.",
                      "Tôi khỏe, cảm ơn bạn!": "Tôi khỏe, cảm ơn bạn!"}


def _scripted_critic(model, tokenizer, *args, **kwargs):
    """model_generate_fn's stand-in: a fixed critique, then the revision SCRIPTED_REVISIONS gives the answer."""
    def generate(conversations):
        if len(conversations[0]) == 3:   # user, assistant, critique request
            return ["Câu trả lời cần lịch sự hơn."] * len(conversations)
        return [SCRIPTED_REVISIONS[c[1].content] for c in conversations]   # c[1]: the original answer
    return generate


def _critique_data(tmp_path):
    return write_jsonl(tmp_path / "answers.jsonl", [
        {"prompt": "Thủ đô của Việt Nam là gì?", "response": "Đồ ngốc, Hà Nội."},
        {"prompt": "What is the capital of France?", "response": "The capital of France is Paris."},
        {"prompt": "Xin chào, bạn khỏe không?", "response": "Tôi khỏe, cảm ơn bạn!"}])


def test_critique_writes_only_revisions_that_score_better_than_their_original(tmp_path, tiny_model, monkeypatch, caplog):
    """A revision the rules score lower (the polite answer turned insult) or the same is not SFT data by default."""
    import vietnamese_ai.feedback.critique as critique

    monkeypatch.setattr(critique, "model_generate_fn", _scripted_critic)
    out = tmp_path / "rev.jsonl"
    with caplog.at_level("INFO", logger="vietnamese_ai"):
        assert main(["feedback", "critique", f"model_name_or_path={tiny_model}", f"dataset={_critique_data(tmp_path)}",
                     f"output={out}"]) == 0
    # By hand (RULES): 0.625 -> 1.0 better; 1.0 -> 0.5 worse (an insult); 0.933 -> 0.933 the same text.
    [row] = read_jsonl(out)
    assert row["completion"] == [{"role": "assistant", "content": "Thủ đô của Việt Nam là Hà Nội."}]
    assert row["original_score"] == pytest.approx(0.625) and row["revision_score"] == pytest.approx(1.0)
    [pair] = read_jsonl(tmp_path / "rev_pairs.jsonl")
    assert pair["chosen"] == row["completion"] and pair["chosen_score"] == pytest.approx(1.0)
    assert pair["rejected_score"] == pytest.approx(0.625) and pair["score_gap"] == pytest.approx(0.375)
    assert ("3 revisions: 1 written as SFT rows, 2 dropped as scoring no better than their original (1 of them worse); "
            f"1 revision pairs; written to {out}") in caplog.text


def test_critique_writes_every_revision_when_asked(tmp_path, tiny_model, monkeypatch, caplog):
    import vietnamese_ai.feedback.critique as critique

    monkeypatch.setattr(critique, "model_generate_fn", _scripted_critic)
    out = tmp_path / "rev.jsonl"
    with caplog.at_level("INFO", logger="vietnamese_ai"):
        assert main(["feedback", "critique", f"model_name_or_path={tiny_model}", f"dataset={_critique_data(tmp_path)}",
                     f"output={out}", "sft_rows=all"]) == 0
    rows = read_jsonl(out)
    assert [r["completion"][0]["content"] for r in rows] == list(SCRIPTED_REVISIONS.values())
    assert [r["revision_score"] for r in rows] == pytest.approx([1.0, 0.5, 0.933325], abs=1e-6)
    assert [r["original_score"] for r in rows] == pytest.approx([0.625, 1.0, 0.933325], abs=1e-6)
    assert len(read_jsonl(tmp_path / "rev_pairs.jsonl")) == 1   # the pairs keep their filter
    assert "3 revisions: 3 written as SFT rows (sft_rows=all: 1 of them scores lower than its original)" in caplog.text


def test_critique_with_no_revision_better_than_its_original_is_one_line(tmp_path, tiny_model, monkeypatch, capsys):
    import vietnamese_ai.feedback.critique as critique

    monkeypatch.setattr(critique, "model_generate_fn", _scripted_critic)
    data = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "What is the capital of France?",
                                              "response": "The capital of France is Paris."}])
    assert main(["feedback", "critique", f"model_name_or_path={tiny_model}", f"dataset={data}",
                 f"output={tmp_path / 'rev.jsonl'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "none of the 1 revisions scored higher than its original" in err, err
    assert not (tmp_path / "rev.jsonl").exists()


def test_toxicity_level_is_bounded():
    assert RULES.toxicity("Đồ ngốc, đồ vô dụng, cút đi, im mồm") == 1.0
    assert RULES.toxicity("Xin chào") == 0.0
    assert math.isclose(RULES.toxicity("Đồ ngốc"), 0.5)


def test_llm_judge_scores_are_prefix_free_so_a_judge_without_opinion_gives_the_midpoint(tiny_model):
    """Regression: with "1".."10" as answers, P("10") = P("1") P("0"|"1") could never exceed P("1"),
    so a model with uniform next-token probabilities scored below the midpoint."""
    from vietnamese_ai.models.loading import load_causal_lm

    model = load_causal_lm(tiny_model)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()   # every logit 0: uniform next-token probabilities
    judge = PointwiseJudge(model, load_tokenizer(tiny_model))
    scores = judge.score(["Thủ đô của Việt Nam là gì?", "What is AI?"], ["Hà Nội.", "A field."])
    assert [s.value for s in scores] == pytest.approx([0.5, 0.5], abs=1e-6)


def test_answers_that_are_prefixes_of_others_get_an_eos():
    from vietnamese_ai.models.choices import prefix_free

    one, ten = [49], [49, 48]   # a tokenizer that splits "10" into "1", "0"
    assert prefix_free([one, ten], eos_token_id=2) == [[49, 2], [49, 48, 2]]
