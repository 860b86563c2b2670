"""The Vietnamese-named RLHFPipeline, every snippet of its documentation page as printed, with a tiny
model bound to `model`, `ref_model` and `reward_model`. The page's `[...]` and `"..."` placeholders
are filled with small real data; nothing else is changed."""

import os

import pytest


@pytest.fixture
def models(tiny_model, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(tmp_path)   # the pipeline writes runs/rlhf-<time>/ under the working directory
    return (AutoModelForCausalLM.from_pretrained(tiny_model), AutoModelForCausalLM.from_pretrained(tiny_model),
            AutoModelForCausalLM.from_pretrained(tiny_model))


def test_step_by_step_as_printed(models):
    model, ref_model, reward_model = models

    from vietnamese_ai import RLHFPipeline
    pipeline = RLHFPipeline()
    # Bước 1: SFT
    sft_data = [{"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, 4, 5]}]
    pipeline.sft(model, sft_data)
    # Bước 2: Train Reward Model
    preference_data = [{"chosen": "Trả lời chính xác và đầy đủ", "rejected": "Trả lời sai"}]
    pipeline.train_reward_model(reward_model, preference_data)
    # Bước 3: DPO
    dpo_data = [{"prompt": "Giải thích AI là gì?", "chosen": "AI là trí tuệ nhân tạo.", "rejected": "AI là robot."}]
    pipeline.rlhf(model, ref_model, dpo_data)

    stats = pipeline.thong_ke()
    assert list(stats) == ["sft", "reward_model", "rlhf"]
    assert [s["method"] for s in stats.values()] == ["sft", "reward", "dpo"]
    for name, s in stats.items():
        assert os.path.isdir(s["final_dir"]) and s["seconds"] > 0 and s["steps"] >= 1, name
        assert s["output_dir"].startswith(pipeline.output_dir)
    assert pipeline.results["rlhf"]["final_reward_margin"] is not None
    # The one pair, scored by the saved reward model: the last logged step ranked it the same way (a learning
    # rate of 1e-5 moves the margin by about 1e-3 a step; it stays a few hundredths from 0).
    from vietnamese_ai.scoring.reward_model import RewardModelScorer

    chosen, rejected = RewardModelScorer(stats["reward_model"]["final_dir"]).rewards(
        ["", ""], [preference_data[0]["chosen"], preference_data[0]["rejected"]])
    assert abs(chosen - rejected) > 0.01
    assert pipeline.results["reward_model"]["final_accuracy"] == float(chosen > rejected)
    assert pipeline.results["reward_model"]["margin_history"][-1] == pytest.approx(chosen - rejected, abs=5e-3)
    table = str(stats)
    assert "reward margin" in table and "accuracy" in table and stats["rlhf"]["final_dir"] in table


def test_everything_at_once_with_custom_configs_as_printed(models, capsys):
    model, ref_model, reward_model = models
    from vietnamese_ai import RLHFPipeline

    sft_data = [{"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, 4, 5]}, {"input_ids": [6, 7, 8], "labels": [-100, 7, 8]}]
    preference_data = [{"chosen": "Trả lời chính xác và đầy đủ", "rejected": "Trả lời sai"},
                       {"chosen": "Giải thích rõ ràng", "rejected": "Mơ hồ không rõ"}]

    pipeline = RLHFPipeline()
    ket_qua = pipeline.chay_day_du(
        model=model,
        ref_model=ref_model,
        reward_model=reward_model,
        sft_data=sft_data,
        preference_data=preference_data,
    )
    # Xem kết quả
    print(pipeline.thong_ke())
    assert set(ket_qua) == {"sft", "reward_model", "rlhf"}
    assert "train_loss_min" in ket_qua["sft"] and "final_accuracy" in ket_qua["reward_model"]
    assert "final_reward_margin" in ket_qua["rlhf"]
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("stage") and len(printed.strip().splitlines()) == 4

    pipeline = RLHFPipeline(
        sft_config={"so_vong": 3, "toc_do_hoc": 2e-5},
        dpo_config={"beta": 0.2, "so_vong": 1},
        reward_config={"toc_do_hoc": 1e-5},
    )
    ket_qua = pipeline.chay_day_du(model=model, ref_model=ref_model, reward_model=reward_model, sft_data=sft_data,
                                   preference_data=preference_data)
    assert ket_qua["sft"]["steps"] == 3   # so_vong=3, one step per epoch
    import yaml

    dpo = yaml.safe_load(open(os.path.join(ket_qua["rlhf"]["output_dir"], "config.yaml"), encoding="utf-8"))
    assert dpo["beta"] == 0.2 and dpo["num_train_epochs"] == 1
    reward = yaml.safe_load(open(os.path.join(ket_qua["reward_model"]["output_dir"], "config.yaml"), encoding="utf-8"))
    assert reward["learning_rate"] == 1e-5


def test_ppo_as_the_rlhf_stage_is_rewarded_by_the_trained_reward_model(models):
    model, _, reward_model = models
    from vietnamese_ai import RLHFPipeline

    pipeline = RLHFPipeline(rlhf="ppo", ppo_config={"batch_size": 4, "mini_batch_size": 2, "max_new_tokens": 6,
                                                    "max_steps": 2})
    with pytest.raises(Exception, match="call train_reward_model first"):
        pipeline.rlhf(model, None, [{"prompt": "Xin chào"}])
    pipeline.train_reward_model(reward_model, [{"chosen": "Cảm ơn bạn", "rejected": "Đồ ngốc"}] * 2)
    ket_qua = pipeline.rlhf(model, None, [{"prompt": q} for q in ("Xin chào", "Hello", "AI là gì?", "Thủ đô?")])
    import yaml

    config = yaml.safe_load(open(os.path.join(ket_qua["output_dir"], "config.yaml"), encoding="utf-8"))
    assert config["reward"] == [f"reward_model:{pipeline.results['reward_model']['final_dir']}"]
    assert pipeline.thong_ke()["rlhf"]["method"] == "ppo" and ket_qua["final_reward"] is not None


def test_bad_pipeline_configs_name_the_keyword_as_typed():
    from vietnamese_ai import RLHFPipeline
    from vietnamese_ai.errors import ConfigError

    with pytest.raises(ConfigError, match="sft_config: unknown keyword 'so_vongg'; did you mean 'so_vong'"):
        RLHFPipeline(sft_config={"so_vongg": 3})
    with pytest.raises(ConfigError, match="'toc_do_hoc'"):
        RLHFPipeline(reward_config={"toc_do_hoc": -1})
    with pytest.raises(ConfigError, match="rlhf must be 'dpo' or 'ppo'"):
        RLHFPipeline(rlhf="sft")


# ---- each stage starts from the previous stage's result ----

CHAIN_SFT = [{"prompt": "Xin chào", "completion": " Chào bạn, tôi có thể giúp gì?"},
             {"prompt": "AI là gì?", "completion": " AI là trí tuệ nhân tạo."}]
CHAIN_PAIRS = [{"prompt": "Giải thích AI là gì?", "chosen": " AI là trí tuệ nhân tạo.", "rejected": " AI là robot."},
               {"prompt": "Xin chào", "chosen": " Chào bạn.", "rejected": " Đi đi."}]
# A high learning rate, so that the SFT model is measurably different from the one it started from.
CHAIN_SFT_CONFIG = {"toc_do_hoc": 1e-2, "so_vong": 2, "warmup_ratio": 0.0}


def _starting_model(start, tiny_model):
    """The `model` argument: a path, or a fresh object (an object is trained in place)."""
    if start == "object":
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(tiny_model)
    return tiny_model


def _first_rewards(ket_qua):
    from tests.conftest import read_jsonl

    first = read_jsonl(os.path.join(ket_qua["output_dir"], "metrics.jsonl"))[0]
    assert first["step"] == 1
    return first["rewards/chosen"], first["rewards/rejected"]


def _resolved(ket_qua):
    import yaml

    with open(os.path.join(ket_qua["output_dir"], "config.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("start", ["path", "object", "lora"])
def test_dpo_starts_from_the_sft_result_whatever_model_is(start, tiny_model, tmp_path):
    """Regression: given a directory, the DPO stage started again from that directory, not from the SFT
    result, while thong_ke() showed the stages as chained. DPO's step-1 rewards are beta * (policy -
    reference) log-ratios: exactly 0 against the SFT model only when the policy starts from it."""
    from vietnamese_ai import RLHFPipeline

    sft_config = {**CHAIN_SFT_CONFIG, **({"use_lora": True, "lora_r": 4, "lora_alpha": 8} if start == "lora" else {})}
    exact = start != "lora"   # a frozen reference merges the adapter: equal up to rounding

    # Everything at once, ref_model=None: the reference is the SFT model too.
    out = str(tmp_path / "all")
    pipeline = RLHFPipeline(sft_config=sft_config, output_dir=out)
    ket_qua = pipeline.chay_day_du(model=_starting_model(start, tiny_model), sft_data=CHAIN_SFT, preference_data=CHAIN_PAIRS)
    sft_final = os.path.join(out, "sft", "final")
    assert ket_qua["sft"]["final_dir"] == sft_final
    dpo = _resolved(ket_qua["rlhf"])
    assert dpo["model_name_or_path"] == sft_final and dpo["ref_model_name_or_path"] is None
    chosen, rejected = _first_rewards(ket_qua["rlhf"])
    assert (chosen, rejected) == ((0.0, 0.0) if exact else (pytest.approx(0, abs=1e-6), pytest.approx(0, abs=1e-6)))
    assert pipeline.thong_ke()["rlhf"]["started_from"] == sft_final

    # Step by step, the SFT model's final/ given as the reference: the policy must be the SFT model.
    out = str(tmp_path / "steps")
    pipeline = RLHFPipeline(sft_config=sft_config, output_dir=out)
    model = _starting_model(start, tiny_model)
    pipeline.sft(model, CHAIN_SFT)
    ket_qua = pipeline.rlhf(model, os.path.join(out, "sft", "final"), CHAIN_PAIRS)
    assert _resolved(ket_qua)["model_name_or_path"] == os.path.join(out, "sft", "final")
    chosen, rejected = _first_rewards(ket_qua)
    assert (chosen, rejected) == ((0.0, 0.0) if exact else (pytest.approx(0, abs=1e-6), pytest.approx(0, abs=1e-6)))


def test_ppo_starts_from_the_sft_result(tiny_model, tmp_path):
    from vietnamese_ai import RLHFPipeline

    out = str(tmp_path / "ppo")
    pipeline = RLHFPipeline(rlhf="ppo", sft_config=CHAIN_SFT_CONFIG, reward_config={"so_vong": 1}, output_dir=out,
                            ppo_config={"batch_size": 2, "mini_batch_size": 2, "max_new_tokens": 4, "max_steps": 1})
    ket_qua = pipeline.chay_day_du(model=tiny_model, reward_model=tiny_model, sft_data=CHAIN_SFT,
                                   preference_data=CHAIN_PAIRS)
    assert _resolved(ket_qua["rlhf"])["model_name_or_path"] == os.path.join(out, "sft", "final")
    assert pipeline.thong_ke()["rlhf"]["started_from"] == os.path.join(out, "sft", "final")
    assert pipeline.thong_ke()["reward_model"]["started_from"] == tiny_model
