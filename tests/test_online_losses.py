"""The pure functions of online RL, with values derived by hand."""

import math

import pytest
import torch

from vietnamese_ai.losses.online import (
    STD_EPSILON,
    aggregate,
    clipped_surrogate,
    group_advantages,
    k3_kl,
    leave_one_out_advantages,
)


def test_group_advantages_in_every_scale_mode():
    rewards = torch.tensor([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]])
    # group 1: mean 1, unbiased std 1; group 2: all equal, so 0 whatever the scale
    assert group_advantages(rewards, "none").tolist() == [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    group = group_advantages(rewards, "group")
    assert group[0].tolist() == pytest.approx([-1 / (1 + STD_EPSILON), 0.0, 1 / (1 + STD_EPSILON)])
    assert group[1].tolist() == [0.0, 0.0, 0.0]
    # batch: the same centring, divided by the std of all six rewards
    values = [0.0, 1.0, 2.0, 5.0, 5.0, 5.0]
    mean = sum(values) / 6
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 5)
    assert group_advantages(rewards, "batch")[0].tolist() == pytest.approx([-1 / (std + STD_EPSILON), 0.0,
                                                                            1 / (std + STD_EPSILON)])
    with pytest.raises(ValueError, match="scale_rewards: expected group, batch or none, got 'groups'"):
        group_advantages(rewards, "groups")


def test_leave_one_out_baseline_by_hand():
    # rewards 1, 2, 6: baselines (2+6)/2=4, (1+6)/2=3.5, (1+2)/2=1.5
    assert leave_one_out_advantages(torch.tensor([[1.0, 2.0, 6.0]])).tolist() == [[-3.0, -1.5, 4.5]]
    # G=2: each is the other's baseline
    assert leave_one_out_advantages(torch.tensor([[3.0, 1.0]])).tolist() == [[2.0, -2.0]]
    # the advantages of a group always sum to 0
    assert float(leave_one_out_advantages(torch.randn(4, 5)).sum(1).abs().max()) < 1e-6


def test_clipped_surrogate_by_hand():
    # ratios 1.5, 0.5, 1.1, 0.7 with advantages +1, -1, -2, +3 and epsilon 0.2:
    #   1.5, A=+1: min(1.5, 1.2) = 1.2 -> loss -1.2, clipped high
    #   0.5, A=-1: min(-0.5, -0.8) = -0.8 -> loss 0.8, clipped low
    #   1.1, A=-2: min(-2.2, -2.2) -> 2.2, inside
    #   0.7, A=+3: min(2.1, 2.4) = 2.1 -> -2.1 (a ratio below 1-eps with A>0 is not clipped)
    ratios, advantages = torch.tensor([1.5, 0.5, 1.1, 0.7]), torch.tensor([1.0, -1.0, -2.0, 3.0])
    loss, low, high = clipped_surrogate(ratios.log(), torch.zeros(4), advantages, 0.2, 0.2)
    assert loss.tolist() == pytest.approx([-1.2, 0.8, 2.2, -2.1])
    assert low.tolist() == [False, True, False, False] and high.tolist() == [True, False, False, False]
    # clip-higher: epsilon_high 0.6 leaves 1.5 unclipped
    loss, _, high = clipped_surrogate(ratios.log(), torch.zeros(4), advantages, 0.2, 0.6)
    assert loss[0] == pytest.approx(-1.5) and not high[0]
    # delta caps the unclipped ratio: A<0 and ratio 3 -> min(3, 2) * -1 = -2 vs clip 1.2 * -1: min is -2 -> 2
    loss, _, _ = clipped_surrogate(torch.tensor([math.log(3.0)]), torch.zeros(1), torch.tensor([-1.0]), 0.2, 0.2, delta=2.0)
    assert loss.tolist() == pytest.approx([2.0])


def test_the_ratio_is_one_on_policy_and_the_gradient_is_the_policy_gradient():
    logps = torch.tensor([-1.0, -2.0], requires_grad=True)
    advantages = torch.tensor([0.5, -1.5])
    loss, low, high = clipped_surrogate(logps, logps.detach(), advantages, 0.2, 0.2)
    loss.sum().backward()
    assert not low.any() and not high.any()
    assert logps.grad.tolist() == pytest.approx([-0.5, 1.5])   # d(-ratio * A)/d logp = -A at ratio 1


def test_k3_kl_by_hand():
    # log pi = -1, log ref = 0: exp(1) - 1 - 1 = e - 2; equal log-probs: 0; always >= 0
    assert k3_kl(torch.tensor([-1.0, -0.3]), torch.tensor([0.0, -0.3])).tolist() == pytest.approx([math.e - 2, 0.0])
    assert float(k3_kl(torch.randn(100), torch.randn(100)).min()) >= 0


def test_loss_aggregations_by_hand():
    # two completions: tokens (1, 3) and (5), so token losses 1, 3 | 5
    loss, groups, mask = torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 1]), torch.ones(3)
    # grpo: per-completion means 2 and 5, summed (the loop divides by 2 completions): 7
    assert float(aggregate(loss, mask, groups, 2, "grpo", 4)) == 7.0
    # dr_grpo: token sums 4 and 5 over max_completion_length 4: 2.25 (the loop divides by 2)
    assert float(aggregate(loss, mask, groups, 2, "dr_grpo", 4)) == 2.25
    # dapo: all tokens summed (the loop divides by the 3 tokens)
    assert float(aggregate(loss, mask, groups, 2, "dapo", 4)) == 9.0
    # a masked (truncated) completion counts for nothing
    masked = torch.tensor([1.0, 1.0, 0.0])
    assert float(aggregate(loss, masked, groups, 2, "grpo", 4)) == 2.0
    assert float(aggregate(loss, masked, groups, 2, "dapo", 4)) == 4.0
