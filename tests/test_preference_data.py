"""Preference data: canonical pairs, implicit prompts, unpaired conversion, errors, and the layout
equivalence that prefix sharing rests on."""

import pytest
import torch

from tests.conftest import CharTokenizer
from vietnamese_ai.data.layout import layout
from vietnamese_ai.data.loading import load_records
from vietnamese_ai.data.preference import pair_sequences, to_pair, to_unpaired, tokenize_pair
from vietnamese_ai.data.types import Message, PreferencePair, TokenizedPair, TruncationReport
from vietnamese_ai.errors import DataError
from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
from vietnamese_ai.models.reference import response_logps


def test_implicit_prompt_is_the_shared_prefix():
    record = load_records([{"chosen": "Trả lời chính xác và đầy đủ", "rejected": "Trả lời sai"}])[0]
    assert to_pair(record) == PreferencePair("Trả lời", " chính xác và đầy đủ", " sai")
    chat = load_records([{"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                          "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away"}]}])[0]
    pair = to_pair(chat)
    assert pair.prompt == [Message("user", "Hi")] and pair.chosen == [Message("assistant", "Hello")]
    no_overlap = to_pair(load_records([{"chosen": "Giải thích rõ ràng", "rejected": "Mơ hồ không rõ"}])[0])
    assert no_overlap.prompt == "" and no_overlap.chosen == "Giải thích rõ ràng"


def test_pairs_become_unpaired_examples():
    [good, bad] = to_unpaired(load_records([{"prompt": "p", "chosen": " a", "rejected": " b"}])[0])
    assert (good.completion, good.desirable, bad.completion, bad.desirable) == (" a", True, " b", False)
    [one] = to_unpaired(load_records([{"prompt": "p", "completion": " a", "label": False}])[0])
    assert not one.desirable


@pytest.mark.parametrize("row, pieces", [
    ({"prompt": "p", "chosen": "a"}, ["field 'rejected'", "missing"]),
    ({"prompt": "p", "chosen": "a", "rejected": "a"}, ["field 'rejected'", "identical"]),
    ({"prompt": "p", "chosen": "a", "rejected": 3}, ["field 'rejected'", "expected a string"]),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}, ["field 'margin'", "expected a number"]),
])
def test_bad_pairs_name_the_record_and_field(row, pieces):
    with pytest.raises(DataError) as err:
        to_pair(load_records([{"prompt": "p", "chosen": " x", "rejected": " y"}, row], name="prefs")[1])
    assert str(err.value).startswith("prefs: record 2")
    for piece in pieces:
        assert piece in str(err.value)


def test_unpaired_label_must_be_a_boolean():
    with pytest.raises(DataError, match="field 'label': expected true or false, got 'yes'"):
        to_unpaired(load_records([{"prompt": "p", "completion": " a", "label": "yes"}])[0])


def test_pair_tokenisation_and_prompt_cut_from_the_left():
    report = TruncationReport()
    pair = tokenize_pair(PreferencePair("abcdef", "xy", "xyz"), CharTokenizer(), max_length=6, report=report)
    # the longest response (xyz + EOS = 4 tokens) leaves room for 2 prompt tokens: "ef"
    assert pair == TokenizedPair([5, 6], [24, 25, 0], [24, 25, 26, 0])
    assert report.prompt_truncated == 1


def test_shared_pair_layout_exact():
    batch = layout(pair_sequences([TokenizedPair([1, 2], [3, 0], [4, 5, 0])], share=True), num_groups=2, num_items=1)
    assert batch.input_ids.tolist() == [[1, 2, 3, 0, 4, 5, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 2, 3, 4]]  # rejected continues from the prompt's end
    assert batch.branch_ids.tolist() == [[0, 0, 1, 1, 2, 2, 2]]
    assert batch.targets.tolist() == [3, 0, 4, 5, 0]
    assert batch.target_groups.tolist() == [0, 0, 1, 1, 1]
    assert batch.response_lengths().tolist() == [2.0, 3.0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_sharing_and_packing_give_the_same_logps_as_plain_layout(tiny_model, attn):
    """The core claim of prefix sharing: summed log-probs equal those of separate, unpacked sequences."""
    model = load_causal_lm(tiny_model, attn_implementation=attn).eval()
    tokenizer = load_tokenizer(tiny_model)
    rows = [("Câu hỏi: thủ đô của Việt Nam là gì?", " Hà Nội.", " Đồ ngốc, tự tìm đi."),
            ("Hello, how can I help?", " I am glad to help you today.", " No."),
            ("Trí tuệ nhân tạo là gì?", " Là máy học từ dữ liệu.", " Không biết, có lẽ vậy, đừng hỏi tôi nữa."),
            ("", " Xin chào bạn.", " Cút đi.")]
    pairs = [tokenize_pair(PreferencePair(*r), tokenizer, None, TruncationReport()) for r in rows]
    with torch.no_grad():
        shared_packed = response_logps(model, layout(pair_sequences(pairs, True), pack=True, num_groups=8))[0]
        shared_rows = response_logps(model, layout(pair_sequences(pairs, True), pack=False, num_groups=8))[0]
        plain = response_logps(model, layout(pair_sequences(pairs, False), pack=False, num_groups=8))[0]
    assert shared_packed.shape == (8,) and (plain < 0).all()
    torch.testing.assert_close(shared_packed, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared_rows, plain, atol=1e-5, rtol=0)


def test_group_ends_point_at_each_response_eos_in_every_layout():
    pairs = [TokenizedPair([1, 2], [3, 0], [4, 5, 0]), TokenizedPair([6], [7, 8, 0], [9, 0])]
    for share in (True, False):
        for pack in (True, False):
            batch = layout(pair_sequences(pairs, share), pack=pack, num_groups=4, keep_ends=True)
            tokens = batch.input_ids.reshape(-1)[batch.group_ends]
            assert tokens.tolist() == [0, 0, 0, 0], (share, pack)  # every response ends with EOS (0)
            before = batch.input_ids.reshape(-1)[batch.group_ends - 1].tolist()
            assert before == [3, 5, 8, 9], (share, pack)
            kept = batch.logits_mask.reshape(-1).nonzero().squeeze(1)
            assert torch.equal(kept[batch.end_index], batch.group_ends)


def test_prefix_sharing_is_chosen_per_batch_where_it_costs_less():
    """At hidden 256 (pair cost 1/1536), by hand. Short pairs, 8 of 40+40+40 tokens: shared, 8 rows of
    120 (the cheapest packing) cost 960 (1 + 120/1536) = 1035; plain, 16 rows of 80, each one sequence
    (no mask: half the pairs), 1280 (1 + 80/1536/2) = 1313.3: shared. One long pair of 400+400+400: shared, a row of 1200 costs 1200 (1 +
    1200/1536) = 2137.5; plain, two rows of 800 (each one sequence: no mask, half the pairs), 2 x 800 (1 +
    800/1536/2) = 2016.7: plain. The collate follows, with the same flags."""
    from vietnamese_ai.data.layout import attention_pair_cost, batch_cost
    from vietnamese_ai.data.preference import sharing_pays
    from vietnamese_ai.recipes.preference import PairCollate

    cost = attention_pair_cost(256)
    short = [TokenizedPair([1] * 40, [2] * 40, [3] * 40) for _ in range(8)]
    long = [TokenizedPair([1] * 400, [2] * 400, [3] * 400)]
    assert batch_cost([120] * 8, True, cost, branched=True) == pytest.approx(960 * (1 + 120 / 1536))
    assert batch_cost([80] * 16, True, cost, branched=False) == pytest.approx(1280 * (1 + 80 / 1536 / 2))
    assert batch_cost([1200], True, cost, branched=True) == pytest.approx(1200 * (1 + 1200 / 1536))
    assert batch_cost([800, 800], True, cost, branched=False) == pytest.approx(2 * 800 * (1 + 800 / 1536 / 2))
    assert sharing_pays(short, True, cost) and not sharing_pays(long, True, cost)
    collate = PairCollate(pack=True, share=True, pad_id=0, cost=cost)
    assert int(collate(short).branch_ids.max()) > 0                  # branches: the prompt is shared
    plain = collate(long)
    assert int(plain.branch_ids.max()) == 0 and not plain.packed     # two causal rows, no mask
    assert PairCollate(pack=True, share=False, pad_id=0, cost=cost)(short).branch_ids.max() == 0
