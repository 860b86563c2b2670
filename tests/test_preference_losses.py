"""Every preference loss on numbers derived by hand.

Common inputs: pi_w = -1, pi_l = -3, ref_w = ref_l = -2, so the DPO logit
h = (pi_w - ref_w) - (pi_l - ref_l) = 1 - (-1) = 2, and with beta = 0.5, beta h = 1.
Useful values: log(1 + e^-1) = 0.3132617, log(1 + e^1) = 1.3132617.
"""

import math

import pytest
import torch

from vietnamese_ai.losses.preference import (
    LossType,
    hinge_loss,
    ipo_loss,
    kto_kl_estimate,
    kto_loss,
    orpo_loss,
    robust_loss,
    rpo_loss,
    sigmoid_loss,
    simpo_loss,
)

PI_W, PI_L, REF_W, REF_L = (torch.tensor([v]) for v in (-1.0, -3.0, -2.0, -2.0))
SP1, SPM1 = math.log1p(math.exp(-1)), math.log1p(math.exp(1))  # -log sigma(1), -log sigma(-1)


def value(result):
    return result[0].item()


def test_sigmoid_is_dpo_and_rewards_are_beta_log_ratios():
    losses, rewards_w, rewards_l = sigmoid_loss(PI_W, PI_L, REF_W, REF_L, beta=0.5)
    assert losses.item() == pytest.approx(SP1, abs=1e-6)            # -log sigma(1)
    assert (rewards_w.item(), rewards_l.item()) == (0.5, -0.5)      # 0.5 * (-1 + 2), 0.5 * (-3 + 2)


def test_cdpo_label_smoothing():
    # 0.8 * -log sigma(1) + 0.2 * -log sigma(-1)
    assert value(sigmoid_loss(PI_W, PI_L, REF_W, REF_L, beta=0.5, label_smoothing=0.2)) == pytest.approx(
        0.8 * SP1 + 0.2 * SPM1, abs=1e-6)


def test_hinge():
    assert value(hinge_loss(PI_W, PI_L, REF_W, REF_L, beta=0.5)) == 0.0                          # max(0, 1 - 1)
    assert value(hinge_loss(PI_W, PI_L, REF_W, REF_L, beta=0.25)) == pytest.approx(0.5)          # max(0, 1 - 0.5)


def test_ipo_averages_log_ratios_per_token():
    # |y_w| = 2, |y_l| = 4: h_avg = 1/2 - (-1)/4 = 0.75; target 1/(2 * 0.5) = 1; (0.75 - 1)^2
    got = ipo_loss(PI_W, PI_L, REF_W, REF_L, torch.tensor([2.0]), torch.tensor([4.0]), beta=0.5)
    assert value(got) == pytest.approx(0.0625, abs=1e-7)


def test_robust():
    # [0.8 * -log sigma(1) + 0.2 * log sigma(-1)] / (1 - 0.4)
    expected = (0.8 * SP1 - 0.2 * SPM1) / 0.6
    assert value(robust_loss(PI_W, PI_L, REF_W, REF_L, beta=0.5, label_smoothing=0.2)) == pytest.approx(expected, abs=1e-6)
    assert value(robust_loss(PI_W, PI_L, REF_W, REF_L, beta=0.5, label_smoothing=0.0)) == pytest.approx(SP1, abs=1e-6)


def test_rpo_adds_the_chosen_nll_per_token():
    # DPO + alpha * (-pi_w / |y_w|) = -log sigma(1) + 1.5 * (1 / 2)
    got = rpo_loss(PI_W, PI_L, REF_W, REF_L, torch.tensor([2.0]), beta=0.5, alpha=1.5)
    assert value(got) == pytest.approx(SP1 + 0.75, abs=1e-6)


def test_simpo_is_reference_free_and_length_normalised():
    # beta = 2: rewards 2 * (-2 / 2) = -2 and 2 * (-6 / 3) = -4; margin -2 + 4 - 0.5 = 1.5
    losses, rewards_w, rewards_l = simpo_loss(torch.tensor([-2.0]), torch.tensor([-6.0]), torch.tensor([2.0]),
                                              torch.tensor([3.0]), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-1.5)), abs=1e-6)
    assert (rewards_w.item(), rewards_l.item()) == (-2.0, -4.0)


def test_orpo_by_hand():
    # P(y_w) = 1/2: odds 1, log odds 0.  P(y_l) = 1/4: odds 1/3, log odds -log 3.
    # log sigma(log 3) = log(3/4);  NLL = -log(1/2) = log 2;  loss = log 2 - 0.1 * log(3/4)
    losses, rewards_w, _, nll, ratio = orpo_loss(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]), lam=0.1)
    assert losses.item() == pytest.approx(math.log(2) - 0.1 * math.log(0.75), abs=1e-6)
    assert ratio.item() == pytest.approx(math.log(0.75), abs=1e-6) and nll.item() == pytest.approx(math.log(2))
    assert rewards_w.item() == pytest.approx(0.1 * math.log(0.5))


def test_orpo_is_finite_when_the_model_is_certain():
    losses = orpo_loss(torch.tensor([-1e-7]), torch.tensor([-5.0]), lam=0.1)[0]
    assert torch.isfinite(losses).all()


def test_kto_by_hand():
    # z0 = 0.5, beta = 2. Desirable r = 1: 1 - sigma(2 * 0.5); undesirable r = -1: 2 * (1 - sigma(2 * 1.5))
    pi, ref = torch.tensor([0.0, -3.0]), torch.tensor([-1.0, -2.0])
    losses, rewards = kto_loss(pi, ref, torch.tensor([True, False]), torch.tensor(0.5), beta=2.0,
                               desirable_weight=1.0, undesirable_weight=2.0)
    sigma = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert losses.tolist() == pytest.approx([1 - sigma(1.0), 2 * (1 - sigma(3.0))], abs=1e-6)
    assert rewards.tolist() == [2.0, -2.0]


def test_kto_kl_estimate_is_clamped_mean():
    assert kto_kl_estimate(torch.tensor([1.0, -3.0]), torch.tensor([0.0, 0.0])).item() == 0.0   # mean -1 -> 0
    assert kto_kl_estimate(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])).item() == 1.0


def test_loss_type_knows_what_it_needs():
    assert not LossType.simpo.needs_reference
    assert all(t.needs_reference for t in LossType if t is not LossType.simpo)
    assert LossType.ipo.needs_lengths and not LossType.sigmoid.needs_lengths
