"""DPO, ORPO and KTO on a tiny model: they must move in the expected direction; the reference model
options agree with each other; the CLI and the seed-003 DPOTrainer work."""

import os
import random

import pytest

from tests.conftest import read_jsonl, write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.recipes.dpo import DPOConfig, run_dpo
from vietnamese_ai.recipes.kto import KTOConfig, run_kto
from vietnamese_ai.recipes.orpo import ORPOConfig, run_orpo

TOPICS = ["thủ đô của Việt Nam", "trí tuệ nhân tạo", "cách học tiếng Anh", "the capital of Japan", "machine learning",
          "how to sleep better", "món phở", "Python"]
GOOD = [" Cảm ơn bạn đã hỏi, tôi rất vui được giúp.", " Thank you for asking, I am happy to help."]
BAD = [" Đồ ngốc, tự đi mà tìm.", " You are stupid, go away."]


def separable_pairs(n=32, seed=0):
    rng = random.Random(seed)
    return [{"prompt": f"Câu hỏi {i}: {rng.choice(TOPICS)}?", "chosen": rng.choice(GOOD), "rejected": rng.choice(BAD)}
            for i in range(n)]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIETNAMESE_AI_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def pref_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", separable_pairs())


def _common(tmp_path, name, tiny_model, data, **kw):
    values = dict(model_name_or_path=tiny_model, dataset=data, output_dir=str(tmp_path / name), learning_rate=2e-3,
                  per_device_train_batch_size=8, logging_steps=1, save_steps=0, disable_tqdm=True, seed=1)
    values.update(kw)
    return values


def test_dpo_learns_a_separable_preference(tmp_path, tiny_model, pref_file):
    result = run_dpo(DPOConfig(**_common(tmp_path, "dpo", tiny_model, pref_file, num_train_epochs=4)))
    accuracies, margins = result.series("rewards/accuracies"), result.series("rewards/margins")
    assert min(accuracies[-4:]) >= 0.9
    assert margins[-1] > margins[0] + 1.0
    assert result.series("loss")[-1] < 0.5 * result.series("loss")[0]
    row = result.history[-1]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"):
        assert key in row, key
    assert row["rewards/margins"] == pytest.approx(row["rewards/chosen"] - row["rewards/rejected"], abs=1e-5)


@pytest.mark.parametrize("loss_type", ["ipo", "hinge", "robust", "rpo", "simpo"])
def test_every_variant_trains_towards_the_chosen(tmp_path, tiny_model, pref_file, loss_type):
    extra = {"beta": 2.0, "gamma": 0.5} if loss_type == "simpo" else {"label_smoothing": 0.1}
    result = run_dpo(DPOConfig(**_common(tmp_path, loss_type, tiny_model, pref_file, num_train_epochs=3,
                                         loss_type=loss_type, **extra)))
    margins = result.series("rewards/margins")
    assert margins[-1] > margins[0] and result.series("rewards/accuracies")[-1] >= 0.75


def test_orpo_raises_the_chosen_likelihood(tmp_path, tiny_model, pref_file):
    result = run_orpo(ORPOConfig(**_common(tmp_path, "orpo", tiny_model, pref_file, num_train_epochs=3)))
    chosen, rejected = result.series("logps/chosen"), result.series("logps/rejected")
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731  (batches differ in length: compare 4-step averages)
    assert mean(chosen[-4:]) > mean(chosen[:4]) + 10.0  # the NLL term pulls the chosen response up
    assert mean(chosen[-4:]) - mean(rejected[-4:]) > mean(chosen[:4]) - mean(rejected[:4])
    assert result.series("nll_loss")[-1] < result.series("nll_loss")[0]


def test_kto_trains_from_unpaired_data(tmp_path, tiny_model):
    rows = []
    for pair in separable_pairs(32):
        rows.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
        rows.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
    data = write_jsonl(tmp_path / "unpaired.jsonl", rows)
    result = run_kto(KTOConfig(**_common(tmp_path, "kto", tiny_model, data, num_train_epochs=3)))
    chosen, rejected = result.series("rewards/chosen"), result.series("rewards/rejected")
    assert chosen[-1] > 0 > rejected[-1]
    assert result.series("loss")[-1] < result.series("loss")[0]
    assert "kl" in result.history[-1]


def _first_step(tmp_path, name, tiny_model, data, **kw):
    return run_dpo(DPOConfig(**_common(tmp_path, name, tiny_model, data, learning_rate=0.0, max_steps=1,
                                       per_device_train_batch_size=32, **kw))).history[0]


def test_reference_options_agree(tmp_path, tiny_model, pref_file):
    """Precomputed, a separate model each step, unshared and unpacked layouts: the same first step."""
    base = _first_step(tmp_path, "a", tiny_model, pref_file, ref_model_name_or_path=tiny_model,
                       precompute_ref_log_probs=False, prefix_sharing=False, packing=False)
    variants = [dict(), dict(precompute_ref_log_probs=False), dict(ref_model_name_or_path=tiny_model)]
    for i, kw in enumerate(variants):
        row = _first_step(tmp_path, f"v{i}", tiny_model, pref_file, **kw)
        for key in ("loss", "logps/chosen", "logps/rejected", "rewards/chosen"):
            assert row[key] == pytest.approx(base[key], abs=1e-4), (kw, key)


def test_lora_reference_is_the_policy_without_adapters(tmp_path, tiny_model, pref_file):
    result = run_dpo(DPOConfig(**_common(tmp_path, "lora", tiny_model, pref_file, use_lora=True, lora_r=4,
                                         learning_rate=1e-2, num_train_epochs=2, precompute_ref_log_probs=False)))
    assert result.history[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)  # adapters start as the identity
    assert result.series("rewards/margins")[-1] > 0.1
    assert "adapter_model.safetensors" in os.listdir(result.final_dir)


def test_reference_log_probs_are_cached_and_reused(tmp_path, tiny_model, pref_file, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="vietnamese_ai")
    _first_step(tmp_path, "c1", tiny_model, pref_file)
    assert any("computed for 32 examples" in r.message for r in caplog.records)
    caplog.clear()
    _first_step(tmp_path, "c2", tiny_model, pref_file)
    assert any("loaded from cache" in r.message for r in caplog.records)


def test_cli_dpo_orpo_kto(tmp_path, tiny_model, pref_file, capsys):
    for method in ("dpo", "orpo", "kto"):
        out = tmp_path / method
        assert main([method, f"model_name_or_path={tiny_model}", f"dataset={pref_file}", f"output_dir={out}",
                     "max_steps=2", "per_device_train_batch_size=8", "logging_steps=1", "disable_tqdm=true"]) == 0, method
        assert sorted(os.listdir(out)) == ["config.yaml", "final", "metrics.jsonl", "run.json"]
        assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    assert main(["dpo", f"model_name_or_path={tiny_model}", "loss_type=dpo2"]) == 2
    assert "key 'loss_type'" in capsys.readouterr().err
    assert main(["dpo", "--help"]) == 0
    assert "prefix_sharing (bool; default: True)" in capsys.readouterr().out


def test_seed003_dpo_example_runs_as_written(tmp_path, tiny_model, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ref_model = AutoModelForCausalLM.from_pretrained(tiny_model)

    from vietnamese_ai import DPOTrainer
    trainer = DPOTrainer(
        so_vong=1,
        beta=0.1,
        toc_do_hoc=5e-7,
        label_smoothing=0.0,
    )
    # Dữ liệu preference
    preference_data = [
        {
            "prompt": "Giải thích AI là gì?",
            "chosen": "AI là trí tuệ nhân tạo, giúp máy tính học và ra quyết định.",
            "rejected": "AI là robot biết suy nghĩ như con người.",
        },
        {
            "prompt": "Viết code Python in Hello World",
            "chosen": "print('Hello World')",
            "rejected": "Bạn cần cài Python trước, sau đó mở terminal...",
        },
    ]
    ket_qua = trainer.huan_luyen(model, ref_model, preference_data)
    print(f"Loss: {ket_qua['train_loss_min']:.4f}")
    print(f"Reward margin: {ket_qua['final_reward_margin']:.4f}")

    assert ket_qua["train_loss_min"] == pytest.approx(0.6931, abs=1e-3)  # one tiny step from the reference
    assert len(ket_qua["chosen_rewards"]) == len(ket_qua["rejected_rewards"]) == len(ket_qua["reward_margin"]) == 1
    assert ket_qua["final_reward_margin"] == ket_qua["reward_margin"][-1]


def test_seed003_dpo_without_ref_model_uses_the_default_reference(tmp_path, tiny_model, pref_file):
    from vietnamese_ai import DPOTrainer

    trainer = DPOTrainer(so_vong=2, toc_do_hoc=2e-3, output_dir=str(tmp_path / "d"))
    ket_qua = trainer.huan_luyen(tiny_model, None, pref_file)
    assert ket_qua["final_reward_margin"] > ket_qua["reward_margin"][0]
    assert trainer.model is not None
