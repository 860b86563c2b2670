"""Exact tensors for completion-only masking and for packing, with a tokenizer whose ids are written by
hand (CharTokenizer: 'a' = 1, 'b' = 2, ..., space = 27, EOS = 0)."""

import torch

from tests.conftest import CharTokenizer
from vietnamese_ai.data.layout import Piece, attention_allowed, layout, sft_sequence
from vietnamese_ai.data.tokenize import tokenize_sft
from vietnamese_ai.data.types import PromptCompletion, TextExample, TokenizedExample, TruncationReport

IGN = -100


def tok(example, max_length=None, **kw):
    report = TruncationReport()
    return tokenize_sft(example, CharTokenizer(), max_length, report, **kw), report


def test_completion_only_masking_exact():
    got, _ = tok(PromptCompletion("ab", "cd"))
    assert got.input_ids == [1, 2, 3, 4, 0]  # EOS (0) ends the completion
    assert got.labels == [IGN, IGN, 3, 4, 0]


def test_full_sequence_loss_when_completion_only_is_off_and_for_text():
    got, _ = tok(PromptCompletion("ab", "cd"), completion_only_loss=False)
    assert got.labels == [1, 2, 3, 4, 0]
    text, _ = tok(TextExample("abc"))
    assert text.input_ids == text.labels == [1, 2, 3, 0]


def test_prompt_cut_from_the_left_first_and_reported():
    got, report = tok(PromptCompletion("abcdef", "xy"), max_length=5)
    assert got.input_ids == [5, 6, 24, 25, 0]  # 'ef' kept: the end of the prompt is what the answer answers
    assert got.labels == [IGN, IGN, 24, 25, 0]
    assert report.prompt_truncated == 1 and report.dropped == 0


def test_completion_longer_than_max_length_is_dropped_and_counted():
    got, report = tok(PromptCompletion("ab", "wxyz"), max_length=4)
    assert got is None and report.dropped == 1
    assert "1 dropped" in report.summary("train") and "completion longer than max_length" in report.summary("train")


def test_language_modelling_is_cut_at_the_end():
    got, report = tok(TextExample("abcdef"), max_length=3)
    assert got.input_ids == [1, 2, 3] and report.end_truncated == 1


def test_pretokenised_kept_exactly_as_given():
    example = TokenizedExample([1, 2, 3, 4, 5], [IGN, IGN, 3, 4, 5])
    got, _ = tok(example)
    assert got.input_ids == [1, 2, 3, 4, 5] and got.labels == [IGN, IGN, 3, 4, 5]


def test_packing_exact_tensors():
    a, b, c = (tok(PromptCompletion(p, q))[0] for p, q in (("ab", "cd"), ("x", "y"), ("e", "f")))
    batch = layout([sft_sequence(e.input_ids, e.labels, group=g) for g, e in enumerate((a, b, c))], pack=True,
                   pad_token_id=0, pair_cost=0.0)
    # pair_cost 0 (attention free): one row, longest first, no padding at all
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 0, 24, 25, 0, 5, 6, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2]]
    assert batch.segment_ids.tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2]]
    # a predicts 3, 4, 0 from columns 1, 2, 3; b predicts 25, 0 from 5, 6; c predicts 6, 0 from 8, 9
    assert batch.logits_mask.nonzero()[:, 1].tolist() == [1, 2, 3, 5, 6, 8, 9]
    assert batch.targets.tolist() == [3, 4, 0, 25, 0, 6, 0]
    assert batch.target_groups.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert batch.num_items == 7 and batch.num_tokens == 11


def test_packing_two_sequences_in_one_row_exact():
    # With attention this expensive (pair_cost 0.2), rows of 4 beat one row of 8:
    # cost = rows * width * (1 + width * pair_cost) = 2 * 4 * 1.8 = 14.4 < 1 * 8 * 2.6 = 20.8
    batch = layout([sft_sequence([1, 2, 3, 4], [IGN, IGN, 3, 4]), sft_sequence([5, 6], [5, 6], group=1),
                    sft_sequence([7, 8], [IGN, 8], group=2)], pack=True, pair_cost=0.2)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]  # restarts per sequence
    assert batch.segment_ids.tolist() == [[0, 0, 0, 0], [0, 0, 1, 1]]
    assert batch.logits_mask.tolist() == [[False, True, True, False], [True, False, True, False]]
    assert batch.targets.tolist() == [3, 4, 6, 8]
    assert batch.target_index.tolist() == [0, 1, 2, 3]
    assert batch.target_groups.tolist() == [0, 0, 1, 2]
    allowed = attention_allowed(batch.segment_ids, batch.branch_ids)[1, 0].int().tolist()
    assert allowed == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]  # no attention across the boundary


def test_unpacked_layout_pads_each_sequence_in_its_own_row():
    batch = layout([sft_sequence([1, 2, 3], [1, 2, 3]), sft_sequence([4], [4])], pack=False, pad_token_id=9)
    assert batch.input_ids.tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch.segment_ids.tolist() == [[0, 0, 0], [0, -1, -1]]
    assert not batch.packed
    assert batch.targets.tolist() == [2, 3]  # the first token of a sequence is never a target


def test_branches_share_the_trunk_and_never_see_each_other():
    seq = [Piece([1, 2], [IGN, IGN]), Piece([3, 4], [3, 4], branch=1, group=0), Piece([5], [5], branch=2, group=1)]
    batch = layout([seq], pack=True)
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 2]]  # the second branch restarts after the trunk
    assert batch.targets.tolist() == [3, 4, 5]
    # the last trunk token (column 1) predicts the first token of both branches
    assert batch.logits_mask.tolist() == [[False, True, True, False, False]]
    assert batch.target_index.tolist() == [0, 1, 0]
    allowed = attention_allowed(batch.segment_ids, batch.branch_ids)[0, 0].int()
    assert allowed[4].tolist() == [1, 1, 0, 0, 1]


def test_padding_rows_attend_to_themselves_so_softmax_is_never_empty():
    allowed = attention_allowed(torch.tensor([[0, -1]]), torch.tensor([[0, 0]]))
    assert allowed.any(-1).all()


def test_empty_prompt_piece_does_not_make_the_first_response_token_a_target():
    # Regression: an empty trunk piece used to leave "the last trunk token" at column -1, so the first
    # response token was predicted from the previous row's last position.
    for share in (True, False):
        pieces = [Piece([], []), Piece([3, 4], [3, 4], branch=1 if share else 0)]
        batch = layout([pieces], pack=True)
        assert batch.targets.tolist() == [4] and batch.target_index.tolist() == [0]
        assert batch.logits_mask.tolist() == [[True, False]]
