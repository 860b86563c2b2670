"""LoRA continuation: a LoRA SFT run's final/ (an adapter directory) as the starting model of every
method. Regression: DPO either failed ("optimizer got an empty parameter list") or put a fresh adapter
on the base model, so that the policy and the reference were the base model and the SFT work was lost."""

import os

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import read_jsonl, write_jsonl
from tests.test_dpo_family import separable_pairs
from vietnamese_ai import DPOTrainer, SFTTrainer
from vietnamese_ai.evaluation.compare import sequence_logps
from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
from vietnamese_ai.recipes.dpo import DPOConfig, run_dpo
from vietnamese_ai.recipes.kto import KTOConfig, run_kto
from vietnamese_ai.recipes.orpo import ORPOConfig, run_orpo
from vietnamese_ai.recipes.reward import RewardConfig, run_reward
from vietnamese_ai.recipes.score_sft import ScoreSFTConfig, run_score_sft
from vietnamese_ai.recipes.sft import SFTConfig, run_sft

N = 12


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIETNAMESE_AI_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return separable_pairs(N, seed=3)


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory, tiny_model, pairs):
    """final/ of a LoRA SFT run that moved the model (lr 2e-2, 20 steps, lora_dropout 0.1)."""
    root = tmp_path_factory.mktemp("sft")
    data = write_jsonl(root / "sft.jsonl", [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs])
    result = run_sft(SFTConfig(model_name_or_path=tiny_model, dataset=data, output_dir=str(root / "run"), use_lora=True,
                               lora_r=8, lora_dropout=0.1, learning_rate=2e-2, max_steps=20, save_steps=0,
                               per_device_train_batch_size=4, disable_tqdm=True))
    return result.final_dir


def _mean_logps(model_path_or_object, tiny_model, pairs, side):
    model = load_causal_lm(model_path_or_object) if isinstance(model_path_or_object, str) else model_path_or_object
    values = sequence_logps(model, load_tokenizer(tiny_model), [p["prompt"] for p in pairs], [p[side] for p in pairs])
    return sum(values) / len(values)


def _first_step(config_class, run, tmp_path, name, model, data, **kw):
    values = dict(model_name_or_path=model, dataset=data, output_dir=str(tmp_path / name), learning_rate=1e-3,
                  max_steps=1, per_device_train_batch_size=N, logging_steps=1, save_steps=0, disable_tqdm=True)
    config = config_class(**{**values, **kw})
    return run(config)


@pytest.mark.parametrize("options", [dict(), dict(use_lora=True), dict(precompute_ref_log_probs=False),
                                     dict(use_lora=True, precompute_ref_log_probs=False)])
def test_dpo_from_a_lora_sft_adapter_starts_from_the_sft_policy(tmp_path, tiny_model, sft_adapter, pairs, options):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    result = _first_step(DPOConfig, run_dpo, tmp_path, "dpo", sft_adapter, data, **options)
    first = result.history[0]
    assert abs(first["rewards/chosen"]) < 1e-5 and abs(first["rewards/rejected"]) < 1e-5   # reference = policy
    sft_chosen = _mean_logps(sft_adapter, tiny_model, pairs, "chosen")
    base_chosen = _mean_logps(tiny_model, tiny_model, pairs, "chosen")
    assert abs(sft_chosen - base_chosen) > 1.0                  # the SFT run really moved the model...
    assert first["logps/chosen"] == pytest.approx(sft_chosen, abs=1e-3)   # ...and DPO starts from it
    # The SFT adapter itself was trained further, on the same base.
    trained, before = load_file(os.path.join(result.final_dir, "adapter_model.safetensors")), \
        load_file(os.path.join(sft_adapter, "adapter_model.safetensors"))
    assert trained.keys() == before.keys() and any(not torch.equal(trained[k], before[k]) for k in trained)


def test_orpo_kto_and_score_sft_continue_the_adapter(tmp_path, tiny_model, sft_adapter, pairs):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    sft_chosen = _mean_logps(sft_adapter, tiny_model, pairs, "chosen")
    orpo = _first_step(ORPOConfig, run_orpo, tmp_path, "orpo", sft_adapter, data).history[0]
    assert orpo["logps/chosen"] == pytest.approx(sft_chosen, abs=1e-3)
    kto = _first_step(KTOConfig, run_kto, tmp_path, "kto", sft_adapter, data,   # a pair gives two examples
                      per_device_train_batch_size=2 * N).history[0]
    assert abs(kto["rewards/chosen"]) < 1e-5 and kto["logps/chosen"] == pytest.approx(sft_chosen, abs=1e-3)
    scored = write_jsonl(tmp_path / "scored.jsonl", [{"prompt": p["prompt"], "completion": p["chosen"], "score": 1.0}
                                                    for p in pairs])
    result = _first_step(ScoreSFTConfig, run_score_sft, tmp_path, "score-sft", sft_adapter, scored)
    assert "adapter_model.safetensors" in os.listdir(result.final_dir)


def test_a_reward_model_from_a_lora_sft_adapter_starts_from_the_merged_sft_weights(tmp_path, tiny_model, sft_adapter,
                                                                                  pairs):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    merged = load_causal_lm(sft_adapter).merge_and_unload().state_dict()
    result = _first_step(RewardConfig, run_reward, tmp_path, "rm", sft_adapter, data, learning_rate=0.0)
    backbone = result.model.state_dict()
    key = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(backbone[key], merged[key])      # not the base model's weights
    lora = _first_step(RewardConfig, run_reward, tmp_path, "rm-lora", sft_adapter, data, use_lora=True)
    assert "config.json" in os.listdir(lora.final_dir)         # saved merged: its base exists nowhere else


def test_the_vietnamese_api_continues_a_lora_sft_model(tmp_path, tiny_model, pairs):
    sft = SFTTrainer(so_vong=3, kich_thuoc_batch=4, toc_do_hoc=2e-2, gradient_accumulation=1, use_lora=True,
                     lora_dropout=0.1, output_dir=str(tmp_path / "sft"), disable_tqdm=True)
    sft.huan_luyen(tiny_model, [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs])
    sft_chosen = _mean_logps(sft.model, tiny_model, pairs, "chosen")
    dpo = DPOTrainer(so_vong=1, kich_thuoc_batch=N, output_dir=str(tmp_path / "dpo"), disable_tqdm=True)
    ket_qua = dpo.huan_luyen(sft.model, None, pairs, tokenizer=load_tokenizer(tiny_model))
    first = read_jsonl(os.path.join(ket_qua["output_dir"], "metrics.jsonl"))[0]
    assert abs(first["rewards/chosen"]) < 1e-5 and first["logps/chosen"] == pytest.approx(sft_chosen, abs=1e-3)
