"""Reward models, the Scorer interface, `vietnamese-ai score`, and score-regularised fine-tuning."""

import json
import math
import os
import random

import pytest
import torch

from tests.conftest import read_jsonl, write_jsonl
from tests.test_dpo_family import BAD, GOOD, TOPICS, separable_pairs
from vietnamese_ai.cli import main
from vietnamese_ai.data.layout import layout
from vietnamese_ai.data.preference import pair_sequences, tokenize_pair
from vietnamese_ai.data.types import PreferencePair, TruncationReport
from vietnamese_ai.errors import DataError
from vietnamese_ai.losses.reward import bradley_terry_loss, score_regression_loss
from vietnamese_ai.models.loading import load_tokenizer
from vietnamese_ai.models.reward import load_reward_for_scoring, load_reward_model, read_reward_stats, sequence_rewards
from vietnamese_ai.recipes.reward import RewardConfig, run_reward
from vietnamese_ai.recipes.score_sft import ScoreSFTConfig, run_score_sft
from vietnamese_ai.scoring import Score, Scorer
from vietnamese_ai.scoring.reward_model import RewardModelScorer


def test_bradley_terry_by_hand():
    r_w, r_l = torch.tensor([2.0]), torch.tensor([1.0])
    assert bradley_terry_loss(r_w, r_l).item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-6)   # -log sigma(1)
    assert bradley_terry_loss(r_w, r_l, torch.tensor([1.0])).item() == pytest.approx(math.log(2), abs=1e-6)  # margin 1
    centred = bradley_terry_loss(r_w, r_l, center_coefficient=0.5).item()
    assert centred == pytest.approx(math.log1p(math.exp(-1)) + 0.5 * 9.0, abs=1e-6)     # + 0.5 * (2 + 1)^2
    assert score_regression_loss(torch.tensor([0.25]), torch.tensor([1.0])).item() == 0.5625


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory, tiny_model):
    """A reward model trained on separable pairs, with a held-out split of unseen prompts."""
    tmp = tmp_path_factory.mktemp("rm")
    train = write_jsonl(tmp / "train.jsonl", separable_pairs(64, seed=0))
    rng = random.Random(7)
    heldout = [{"prompt": f"Hỏi {i}: {rng.choice(TOPICS)}!", "chosen": rng.choice(GOOD), "rejected": rng.choice(BAD)}
               for i in range(24)]
    evaluation = write_jsonl(tmp / "eval.jsonl", heldout)
    result = run_reward(RewardConfig(model_name_or_path=tiny_model, dataset=train, eval_dataset=evaluation,
                                     output_dir=str(tmp / "rm"), learning_rate=2e-3, num_train_epochs=3,
                                     per_device_train_batch_size=8, logging_steps=4, save_steps=0, disable_tqdm=True))
    return result, evaluation


def test_reward_model_separates_held_out_pairs(trained_rm):
    result, _ = trained_rm
    assert result.series("eval/accuracy")[-1] >= 0.95
    assert result.series("margin")[-1] > result.series("margin")[0]
    row = result.history[-1]
    assert {"loss", "accuracy", "margin", "mean_reward"} <= set(row)


def test_final_loads_as_sequence_classification_with_statistics(trained_rm):
    from transformers import AutoModelForSequenceClassification

    result, _ = trained_rm
    model = AutoModelForSequenceClassification.from_pretrained(result.final_dir)
    stats = read_reward_stats(result.final_dir)
    assert stats["count"] == 128 and stats["std"] > 0
    assert model.config.reward_mean == pytest.approx(stats["mean"]) and model.config.num_labels == 1


def test_saved_and_reloaded_model_scores_identically(trained_rm, tiny_model):
    result, _ = trained_rm
    prompts, responses = ["Câu hỏi: Python?", "Hello"], [GOOD[0], BAD[1]]
    in_memory = RewardModelScorer(result.model, load_tokenizer(tiny_model)).rewards(prompts, responses)
    reloaded = RewardModelScorer(result.final_dir).rewards(prompts, responses)
    assert reloaded == pytest.approx(in_memory, abs=1e-6)
    assert in_memory[0] > in_memory[1]


def test_batched_scoring_equals_one_by_one(trained_rm):
    result, evaluation = trained_rm
    rows = read_jsonl(evaluation)
    prompts = [r["prompt"] for r in rows] * 2
    responses = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    scorer = RewardModelScorer(result.final_dir, batch_size=16)
    batched = scorer.rewards(prompts, responses)
    single = [scorer.rewards([p], [r])[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(single, abs=1e-5)
    scores = scorer.score(prompts[:2], responses[:2])
    assert isinstance(scorer, Scorer) and all(isinstance(s, Score) for s in scores)


def test_sharing_and_packing_give_the_same_rewards(tiny_model):
    torch.manual_seed(0)
    model = load_reward_model(tiny_model).eval()
    tokenizer = load_tokenizer(tiny_model)
    model.config.pad_token_id = tokenizer.pad_token_id
    pairs = [tokenize_pair(PreferencePair(p, c, r), tokenizer, None, TruncationReport())
             for p, c, r in (("Xin chào?", " Chào bạn.", " Cút."), ("", " Hello there.", " No."),
                             ("Trí tuệ nhân tạo là gì?", " Là máy học.", " Không biết, đừng hỏi."))]
    with torch.no_grad():
        shared = sequence_rewards(model, layout(pair_sequences(pairs, True), pack=True, num_groups=6))
        plain = sequence_rewards(model, layout(pair_sequences(pairs, False), pack=False, num_groups=6))
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=0)


def test_lora_reward_model_trains_and_saves_its_head(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "p.jsonl", separable_pairs(32))
    result = run_reward(RewardConfig(model_name_or_path=tiny_model, dataset=data, output_dir=str(tmp_path / "lora"),
                                     use_lora=True, lora_r=4, learning_rate=1e-2, num_train_epochs=2,
                                     per_device_train_batch_size=8, logging_steps=2, disable_tqdm=True))
    assert "adapter_model.safetensors" in os.listdir(result.final_dir)
    assert result.series("accuracy")[-1] >= 0.9
    tokenizer = load_tokenizer(tiny_model)
    reloaded = RewardModelScorer(load_reward_for_scoring(result.final_dir), tokenizer).rewards(["p"], [GOOD[0]])
    in_memory = RewardModelScorer(result.model, tokenizer).rewards(["p"], [GOOD[0]])
    assert reloaded == pytest.approx(in_memory, abs=1e-5)  # the trained head was saved with the adapter


def test_own_head_for_any_backbone(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "p.jsonl", separable_pairs(32))
    result = run_reward(RewardConfig(model_name_or_path=tiny_model, dataset=data, output_dir=str(tmp_path / "own"),
                                     own_head=True, learning_rate=2e-3, num_train_epochs=2,
                                     per_device_train_batch_size=8, logging_steps=2, disable_tqdm=True))
    assert "scalar_head.safetensors" in os.listdir(result.final_dir)
    assert result.series("accuracy")[-1] >= 0.9
    tokenizer = load_tokenizer(tiny_model)
    reloaded = RewardModelScorer(result.final_dir).rewards(["p"], [GOOD[0]])
    assert reloaded == pytest.approx(RewardModelScorer(result.model, tokenizer).rewards(["p"], [GOOD[0]]), abs=1e-6)


def test_margin_field_raises_the_bar(tmp_path, tiny_model):
    rows = [dict(r, margin=5.0) for r in separable_pairs(16)]
    common = dict(model_name_or_path=tiny_model, learning_rate=0.0, max_steps=1, per_device_train_batch_size=16,
                  disable_tqdm=True, seed=0)
    plain = run_reward(RewardConfig(dataset=write_jsonl(tmp_path / "a.jsonl", separable_pairs(16)),
                                    output_dir=str(tmp_path / "a"), **common)).history[0]["loss"]
    with_margin = run_reward(RewardConfig(dataset=write_jsonl(tmp_path / "b.jsonl", rows),
                                          output_dir=str(tmp_path / "b"), **common)).history[0]["loss"]
    assert with_margin > plain + 1.0  # -log sigma(d - 5) is far larger than -log sigma(d) near d = 0


def test_cli_reward_score_and_score_sft(tmp_path, trained_rm, tiny_model, capsys):
    result, evaluation = trained_rm
    out = tmp_path / "rm"
    pairs = write_jsonl(tmp_path / "p.jsonl", separable_pairs(16))
    assert main(["reward", f"model_name_or_path={tiny_model}", f"dataset={pairs}", f"output_dir={out}", "max_steps=2",
                 "per_device_train_batch_size=8", "disable_tqdm=true"]) == 0
    assert os.path.isfile(out / "final" / "reward_stats.json")

    to_score = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "Xin chào?", "response": GOOD[0]},
                                                   {"prompt": "Xin chào?", "response": BAD[0]},
                                                   {"text": "Cảm ơn bạn"}])
    assert main(["score", f"model_name_or_path={result.final_dir}", f"dataset={to_score}",
                 f"output={tmp_path / 'scores.jsonl'}", "disable_tqdm=true"]) == 0
    scored = read_jsonl(tmp_path / "scores.jsonl")
    assert [set(r) for r in scored] == [{"prompt", "response", "score"}] * 2 + [{"text", "score"}]
    assert scored[0]["score"] > scored[1]["score"]

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x"}])
    assert main(["score", f"model_name_or_path={result.final_dir}", f"dataset={bad}", f"output={tmp_path / 'o.jsonl'}"]) == 2
    assert "line 1: no 'response', 'completion' or 'text' field" in capsys.readouterr().err

    sft_data = write_jsonl(tmp_path / "t.jsonl", [{"prompt": r["prompt"], "completion": r["chosen"]} for r in separable_pairs(16)])
    assert main(["score-sft", f"model_name_or_path={tiny_model}", f"dataset={sft_data}", f"output_dir={tmp_path / 'ss'}",
                 f"target_scorer=reward_model:{result.final_dir}", "max_steps=2", "disable_tqdm=true"]) == 0
    assert "score_head.safetensors" in os.listdir(tmp_path / "ss" / "final")


def _scored_rows(n=48, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = rng.random() < 0.5
        rows.append({"prompt": f"Câu hỏi {i}: {rng.choice(TOPICS)}?", "completion": rng.choice(GOOD if good else BAD),
                     "score": 0.9 if good else 0.1})
    return rows


def test_score_regularised_sft_lowers_both_terms(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "scored.jsonl", _scored_rows())
    result = run_score_sft(ScoreSFTConfig(model_name_or_path=tiny_model, dataset=data, output_dir=str(tmp_path / "ss"),
                                          learning_rate=3e-3, num_train_epochs=6, per_device_train_batch_size=8,
                                          logging_steps=6, score_alpha=1.0, disable_tqdm=True))
    lm, mse = result.series("lm_loss"), result.series("reward_mse")
    assert lm[-1] < 0.8 * lm[0]
    assert mse[-1] < 0.5 * mse[0]
    row = result.history[-1]
    assert row["loss"] == pytest.approx(row["lm_loss"] + 1.0 * row["reward_mse"], rel=1e-5)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(result.final_dir)  # a plain causal LM; the head is beside it
    assert "score_head.safetensors" in os.listdir(result.final_dir)


def test_score_sft_needs_a_numeric_target(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "p", "completion": " c", "score": "high"}])
    with pytest.raises(DataError, match="line 1: field 'score': expected a number, got str"):
        run_score_sft(ScoreSFTConfig(model_name_or_path=tiny_model, dataset=data, output_dir=str(tmp_path / "o")))


def test_seed003_reward_model_example_runs_as_written(tmp_path, tiny_model, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)

    from vietnamese_ai import RewardModel
    rm = RewardModel(toc_do_hoc=1e-5)
    # Train từ preference pairs
    preference_data = [
        {"chosen": "Trả lời chính xác và đầy đủ", "rejected": "Trả lời sai"},
        {"chosen": "Giải thích rõ ràng", "rejected": "Mơ hồ không rõ"},
    ]
    ket_qua = rm.huan_luyen(model, preference_data, so_vong=3)
    print(f"Accuracy: {ket_qua['final_accuracy']:.4f}")
    # Đánh giá scores
    scores = rm.diem_danh_gia(model, ["văn bản 1", "văn bản 2"])
    for s in scores:
        print(f"{s['van_ban']}: score={s['score']:.4f}")

    assert [s["van_ban"] for s in scores] == ["văn bản 1", "văn bản 2"]
    assert ket_qua["steps"] == 3 and len(ket_qua["accuracy_history"]) == 3
    # the scores come from the trained reward model, exactly as scoring it directly
    direct = RewardModelScorer(rm.model, rm.tokenizer).rewards(["", ""], ["văn bản 1", "văn bản 2"])
    assert [s["score"] for s in scores] == pytest.approx(direct, abs=1e-6)
    assert json.dumps(scores, ensure_ascii=False)


def test_an_existing_reward_checkpoint_loads_as_is_and_a_multi_label_classifier_is_refused(tmp_path, trained_rm, tiny_model):
    from transformers import AutoModelForSequenceClassification

    from vietnamese_ai.errors import ConfigError

    result, _ = trained_rm
    reloaded = load_reward_model(result.final_dir)
    saved = AutoModelForSequenceClassification.from_pretrained(result.final_dir)
    assert torch.equal(reloaded.score.weight, saved.score.weight)  # the trained head, not a new one
    two = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    two.save_pretrained(tmp_path / "two")
    with pytest.raises(ConfigError, match="is a classifier with 2 labels; a reward model has one"):
        load_reward_model(str(tmp_path / "two"))


def test_final_accuracy_is_the_last_steps_share_of_pairs_ranked_right(tmp_path, tiny_model, monkeypatch):
    """`final_accuracy` by hand. With learning rate 0 the model never changes, so the one logged step's
    accuracy, margin and mean reward are those of the model as returned, scored pair by pair by a separate
    path (the Scorer, padded one text at a time): the share of pairs with r_chosen > r_rejected, and means."""
    from transformers import AutoModelForCausalLM

    from vietnamese_ai import RewardModel

    monkeypatch.chdir(tmp_path)
    pairs = separable_pairs(8, seed=3)
    for pair in pairs[:3]:   # the untrained head ranks the rude answers first: some pairs ranked right, some not
        pair["chosen"], pair["rejected"] = pair["rejected"], pair["chosen"]
    rm = RewardModel(toc_do_hoc=0.0, kich_thuoc_batch=8)
    ket_qua = rm.huan_luyen(AutoModelForCausalLM.from_pretrained(tiny_model), pairs, so_vong=1)
    scorer = RewardModelScorer(rm.model, rm.tokenizer, batch_size=1)
    chosen = scorer.rewards([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rejected = scorer.rewards([p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    right = sum(w > l for w, l in zip(chosen, rejected))
    assert 0 < right < len(pairs), "pick pairs the untrained head ranks partly right, or any accuracy would do"
    assert ket_qua["steps"] == 1 and ket_qua["final_accuracy"] == right / len(pairs)
    assert ket_qua["margin_history"][-1] == pytest.approx(sum(chosen) / 8 - sum(rejected) / 8, abs=1e-4)


def test_final_accuracy_reaches_one_on_pairs_a_reward_model_must_separate(tmp_path, tiny_model, monkeypatch):
    """Trained on separable pairs (polite against rude answers), the last logged step ranks every pair right,
    and final_accuracy is that step's accuracy, not the first or a mean of the history."""
    from transformers import AutoModelForCausalLM

    from vietnamese_ai import RewardModel

    monkeypatch.chdir(tmp_path)
    rm = RewardModel(toc_do_hoc=2e-3, kich_thuoc_batch=8)
    ket_qua = rm.huan_luyen(AutoModelForCausalLM.from_pretrained(tiny_model), separable_pairs(16, seed=0), so_vong=4)
    logged = [r["accuracy"] for r in read_jsonl(os.path.join(ket_qua["output_dir"], "metrics.jsonl")) if "accuracy" in r]
    assert ket_qua["accuracy_history"] == logged and len(logged) == 8
    assert min(logged[:2]) < 1.0 and ket_qua["final_accuracy"] == 1.0
