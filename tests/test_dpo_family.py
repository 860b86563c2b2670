"""DPO, ORPO and KTO on a tiny model: every variant's first-step loss equals its equation computed by hand
from an independent forward pass; they must move in the expected direction; the reference model options
agree with each other; the CLI and the seed-003 DPOTrainer work."""

import functools
import math
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


# ---- the first step of every variant, by hand through the loss_type dispatch ----
#
# The recipe runs one step on 8 pairs (one batch, so the logged loss is the mean over the pairs). An
# independent forward pass (one unpacked sequence per response, no prefix sharing) gives each response's
# summed log-probability; each variant's loss follows from those by its equation. With the reference
# equal to the policy (the default), h = 0 and most have a closed form: sigmoid, cDPO and robust log 2,
# hinge 1, IPO (1 / (2 beta))^2. A different reference makes h non-zero, so that label smoothing and the
# robust loss's normalisation show.

FIRST_STEP_PAIRS = separable_pairs(8, seed=5)


@functools.lru_cache(maxsize=None)
def _sequence_logps(model_dir):
    """(chosen, rejected, chosen lengths, rejected lengths) of FIRST_STEP_PAIRS, one plain forward pass per response."""
    pairs = FIRST_STEP_PAIRS
    import torch
    from transformers import AutoModelForCausalLM

    from vietnamese_ai.data.preference import tokenize_responses
    from vietnamese_ai.models.loading import load_tokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir).eval(), load_tokenizer(model_dir)
    out = {"w": [], "l": [], "len_w": [], "len_l": []}
    with torch.no_grad():
        for pair in pairs:
            prompt_ids, responses = tokenize_responses(tokenizer, pair["prompt"], [pair["chosen"], pair["rejected"]])
            for side, response_ids in zip("wl", responses):
                ids = torch.tensor([prompt_ids + response_ids])
                logps = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
                targets = ids[0, len(prompt_ids):]
                out[side].append(logps[len(prompt_ids) - 1:].gather(1, targets[:, None]).sum().item())
                out[f"len_{side}"].append(len(response_ids))
    return out


@pytest.fixture(scope="module")
def other_reference(tmp_path_factory, tiny_model):
    """The tiny model with noise on every weight: a reference the policy differs from at step 1."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("other_reference") / "model"
    shutil.copytree(tiny_model, path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(path)
    return str(path)


def _mean(values):
    return sum(values) / len(values)


def _logsigmoid(x):
    return -math.log1p(math.exp(-x))


def _by_hand(loss_type, c, pi, ref):
    """Each variant's mean loss over the pairs, from its equation (losses/preference.py cites them)."""
    beta, eps = c.get("beta", 0.1), c.get("label_smoothing", 0.0)
    rows = list(zip(pi["w"], pi["l"], ref["w"], ref["l"], pi["len_w"], pi["len_l"]))
    h = [(pw - rw) - (pl - rl) for pw, pl, rw, rl, _, _ in rows]
    sigmoid = [-(1 - eps) * _logsigmoid(beta * x) - eps * _logsigmoid(-beta * x) for x in h]
    if loss_type == "sigmoid":
        return _mean(sigmoid)
    if loss_type == "robust":
        return _mean([(-(1 - eps) * _logsigmoid(beta * x) + eps * _logsigmoid(-beta * x)) / (1 - 2 * eps) for x in h])
    if loss_type == "hinge":
        return _mean([max(0.0, 1 - beta * x) for x in h])
    if loss_type == "ipo":
        return _mean([((pw - rw) / lw - (pl - rl) / ll - 1 / (2 * beta)) ** 2 for pw, pl, rw, rl, lw, ll in rows])
    if loss_type == "rpo":
        return _mean([s + c["rpo_alpha"] * (-pw / lw) for s, (pw, _, _, _, lw, _) in zip(sigmoid, rows)])
    assert loss_type == "simpo"
    return _mean([-_logsigmoid(beta * pw / lw - beta * pl / ll - c["gamma"]) for pw, pl, _, _, lw, ll in rows])


FIRST_STEP = [   # (loss_type, config, the closed form when the reference is the policy, or None)
    pytest.param("sigmoid", {"beta": 0.1}, math.log(2), id="dpo"),
    pytest.param("sigmoid", {"beta": 0.5, "label_smoothing": 0.3}, math.log(2), id="cdpo"),
    pytest.param("robust", {"beta": 0.5, "label_smoothing": 0.2}, math.log(2), id="robust"),
    pytest.param("hinge", {"beta": 0.1}, 1.0, id="hinge"),
    pytest.param("ipo", {"beta": 0.25}, 4.0, id="ipo"),                # (0 - 1 / (2 * 0.25))^2
    pytest.param("rpo", {"beta": 0.1, "rpo_alpha": 0.5}, None, id="rpo"),   # log 2 + alpha * the chosen NLL per token
    pytest.param("simpo", {"beta": 2.0, "gamma": 0.5}, None, id="simpo"),   # no reference: from the log-probs alone
]


@pytest.mark.parametrize("reference", ["policy", "other"])
@pytest.mark.parametrize("loss_type,values,closed_form", FIRST_STEP)
def test_the_first_step_loss_of_every_variant_by_hand(tmp_path, tiny_model, other_reference, reference, loss_type,
                                                       values, closed_form):
    if reference == "other" and loss_type == "simpo":
        pytest.skip("SimPO has no reference")
    data = write_jsonl(tmp_path / "pairs.jsonl", FIRST_STEP_PAIRS)
    ref_dir = tiny_model if reference == "policy" else other_reference
    extra = {} if reference == "policy" else {"ref_model_name_or_path": other_reference}
    run_dpo(DPOConfig(**_common(tmp_path, "run", tiny_model, data, max_steps=1, loss_type=loss_type, **values, **extra)))
    logged = read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]
    pi = _sequence_logps(tiny_model)
    expected = _by_hand(loss_type, values, pi, pi if loss_type == "simpo" else _sequence_logps(ref_dir))
    assert logged["step"] == 1 and logged["loss"] == pytest.approx(expected, abs=2e-5)
    if reference == "policy" and closed_form is not None:
        assert logged["loss"] == pytest.approx(closed_form, abs=2e-5)
    if reference == "other" and closed_form is not None:
        assert abs(expected - closed_form) > 1e-3   # h is really not 0 here


def test_the_first_step_loss_of_orpo_by_hand(tmp_path, tiny_model):
    """ORPO (no reference): -log P(y_w) - lambda log sigma(log odds ratio), with P(y) = exp(mean token
    log-prob), from the same independent forward pass."""
    data = write_jsonl(tmp_path / "pairs.jsonl", FIRST_STEP_PAIRS)
    run_orpo(ORPOConfig(**_common(tmp_path, "orpo", tiny_model, data, max_steps=1, beta=0.5)))
    logged = read_jsonl(tmp_path / "orpo" / "metrics.jsonl")[0]
    pi = _sequence_logps(tiny_model)
    expected = []
    for pw, pl, lw, ll in zip(pi["w"], pi["l"], pi["len_w"], pi["len_l"]):
        avg_w, avg_l = pw / lw, pl / ll
        log_odds = (avg_w - avg_l) - (math.log(1 - math.exp(avg_w)) - math.log(1 - math.exp(avg_l)))
        expected.append(-avg_w - 0.5 * _logsigmoid(log_odds))
    assert logged["step"] == 1 and logged["loss"] == pytest.approx(_mean(expected), abs=2e-5)


def test_the_first_step_loss_of_kto_by_hand(tmp_path, tiny_model):
    """KTO at step 1: the policy is its reference, so r = 0 and the KL estimate z0 = 0; every example's loss
    is its weight times 1 - sigma(0) = 1/2. Four desirable examples (weight 2) and three undesirable (weight 1):
    (4 * 2.0 * 0.5 + 3 * 1.0 * 0.5) / 7 = 5.5 / 7."""
    rows = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in FIRST_STEP_PAIRS[:4] for side in ("chosen", "rejected")][:-1]
    data = write_jsonl(tmp_path / "unpaired.jsonl", rows)
    run_kto(KTOConfig(**_common(tmp_path, "kto", tiny_model, data, max_steps=1, desirable_weight=2.0)))
    logged = read_jsonl(tmp_path / "kto" / "metrics.jsonl")[0]
    assert logged["step"] == 1 and logged["loss"] == pytest.approx(5.5 / 7, abs=2e-5)
