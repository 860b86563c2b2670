"""SFT loss values derived by hand.

A bigram "model" makes the numbers easy: its logits at a position depend only on the token there.
With vocabulary {0, 1, 2, 3}:
    token 1 -> logits [0, 0, 0, 0]        softmax = [1/4, 1/4, 1/4, 1/4]
    token 2 -> logits [ln 3, 0, 0, 0]     softmax = [1/2, 1/6, 1/6, 1/6]
    others  -> logits [0, 0, 0, 0]

Batch: sequence A = [1, 2, 3, 0] with the prompt [1] masked, so targets 2 (after 1) and 3 (after 2)
and 0 (after 3):  -log(1/4) - log(1/6) - log(1/4) = 2 ln 4 + ln 6
       sequence B = [2, 0] with every token a target: target 0 after 2: -log(1/2) = ln 2
Mean over the 4 targets: (2 ln 4 + ln 6 + ln 2) / 4.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from vietnamese_ai.data.layout import layout, sft_sequence
from vietnamese_ai.losses import rdrop_kl, sequence_logps, target_logps
from vietnamese_ai.recipes.sft import sft_loss


class Bigram(torch.nn.Module):
    def __init__(self):
        super().__init__()
        table = torch.zeros(4, 4)
        table[2, 0] = math.log(3)
        self.table = torch.nn.Parameter(table)
        self.config = SimpleNamespace(_attn_implementation="sdpa", vocab_size=4)

    def forward(self, input_ids, position_ids=None, attention_mask=None, use_cache=False):
        return SimpleNamespace(logits=self.table[input_ids])


EXPECTED = (2 * math.log(4) + math.log(6) + math.log(2)) / 4


@pytest.mark.parametrize("pack", [True, False])
def test_sft_loss_by_hand(pack):
    batch = layout([sft_sequence([1, 2, 3, 0], [-100, 2, 3, 0]), sft_sequence([2, 0], [2, 0])], pack=pack)
    out = sft_loss(Bigram(), batch)
    assert batch.num_items == 4
    assert out.loss.item() / batch.num_items == pytest.approx(EXPECTED, abs=1e-6)


def test_target_logps_by_hand():
    logits = torch.tensor([[math.log(3), 0.0, 0.0, 0.0]])
    got = target_logps(logits, torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert got.tolist() == pytest.approx([math.log(1 / 2), math.log(1 / 6)], abs=1e-6)


def test_sequence_logps_sums_per_group_and_empty_group_is_zero():
    got = sequence_logps(torch.tensor([-1.0, -2.0, -4.0]), torch.tensor([0, 2, 2]), 4)
    assert got.tolist() == [-1.0, 0.0, -6.0, 0.0]


def test_rdrop_kl_by_hand():
    # P = [1/2, 1/2], Q = [3/4, 1/4]: 1/2 * sum (P - Q)(log P - log Q)
    #   = 1/2 * ((-1/4)(log 2/3) + (1/4)(log 2)) = 1/8 * (log 2 - log 2/3) = 1/8 log 3
    got = rdrop_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]]))
    assert got.item() == pytest.approx(math.log(3) / 8, abs=1e-6)
    assert rdrop_kl(torch.randn(3, 5), torch.randn(3, 5)).min() >= 0
