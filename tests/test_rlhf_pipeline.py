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
    assert pipeline.results["reward_model"]["final_accuracy"] in (0.0, 1.0)
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
