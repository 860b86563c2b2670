"""Dataset shapes beyond the canonical ones: the UltraFeedback-binarized pairs (a prompt string repeated as
the first user turn of whole chosen/rejected conversations, the Zephyr DPO data) and the `columns`
mapping that renames a dataset's own field names to the canonical ones."""

import pytest

from tests.conftest import write_jsonl
from vietnamese_ai.data.loading import load_records
from vietnamese_ai.data.preference import to_pair, to_unpaired
from vietnamese_ai.data.records import rename_columns
from vietnamese_ai.data.tokenize import prepare_sft
from vietnamese_ai.data.types import Message, PreferencePair, UnpairedExample
from vietnamese_ai.errors import ConfigError, DataError
from vietnamese_ai.models.loading import load_tokenizer
from vietnamese_ai.recipes.common import read_splits
from vietnamese_ai.recipes.dpo import DPOConfig, run_dpo
from vietnamese_ai.recipes.preference import read_pairs
from vietnamese_ai.recipes.sft import SFTConfig


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def ultrafeedback(prompt, good, bad):
    """One row as HuggingFaceH4/ultrafeedback_binarized writes it (its score and id columns aside)."""
    return {"prompt": prompt, "chosen": [user(prompt), assistant(good)], "rejected": [user(prompt), assistant(bad)]}


def one(row, name="prefs"):
    return load_records([row], name=name)[0]


def test_an_ultrafeedback_row_is_the_hand_written_conversational_pair():
    by_hand = {"prompt": [user("Thủ đô của Việt Nam là gì?")], "chosen": [assistant("Hà Nội.")],
               "rejected": [assistant("Không biết.")]}
    expected = PreferencePair([Message("user", "Thủ đô của Việt Nam là gì?")], [Message("assistant", "Hà Nội.")],
                              [Message("assistant", "Không biết.")])
    assert to_pair(one(by_hand)) == expected
    assert to_pair(one(ultrafeedback("Thủ đô của Việt Nam là gì?", "Hà Nội.", "Không biết."))) == expected


def test_kto_reads_the_ultrafeedback_shape_as_two_conversational_examples():
    good, bad = to_unpaired(one(ultrafeedback("Hỏi?", "Đúng.", "Sai.")))
    assert good == UnpairedExample([Message("user", "Hỏi?")], [Message("assistant", "Đúng.")], True)
    assert bad == UnpairedExample([Message("user", "Hỏi?")], [Message("assistant", "Sai.")], False)
    [single] = to_unpaired(one({"prompt": "Hỏi?", "completion": [user("Hỏi?"), assistant("Đúng.")], "label": True}))
    assert single == good


def test_a_multi_turn_conversation_keeps_its_earlier_turns_in_the_prompt():
    history = [user("Xin chào"), assistant("Chào bạn."), user("Thủ đô?")]
    row = {"prompt": "Xin chào", "chosen": history + [assistant("Hà Nội.")], "rejected": history + [assistant("Huế.")]}
    pair = to_pair(one(row))
    assert pair.prompt == [Message("user", "Xin chào"), Message("assistant", "Chào bạn."), Message("user", "Thủ đô?")]
    assert (pair.chosen, pair.rejected) == ([Message("assistant", "Hà Nội.")], [Message("assistant", "Huế.")])
    # a prompt field holding the latest question (the last shared user turn) is the same pair
    assert to_pair(one({**row, "prompt": "Thủ đô?"})) == pair


def test_conversations_that_go_different_ways_after_the_prompt_keep_their_own_turns():
    row = {"prompt": "p", "chosen": [user("p"), assistant("a"), user("q"), assistant("b")],
           "rejected": [user("p"), assistant("c")]}
    pair = to_pair(one(row))
    assert pair.prompt == [Message("user", "p")]
    assert pair.chosen == [Message("assistant", "a"), Message("user", "q"), Message("assistant", "b")]


@pytest.mark.parametrize("row, message", [
    ({"prompt": "Hỏi?", "chosen": [user("Khác?"), assistant("a")], "rejected": [user("Hỏi?"), assistant("b")]},
     "prefs: record 1: field 'chosen': its first user turn is not the prompt"),
    ({"prompt": "Hỏi?", "chosen": [user("Hỏi?"), assistant("a")], "rejected": [user("Khác?"), assistant("b")]},
     "prefs: record 1: field 'rejected': its first user turn is not the prompt"),
    ({"prompt": "Hỏi?", "chosen": [assistant("a")], "rejected": [assistant("b")]},
     "prefs: record 1: field 'chosen': its first user turn is not the prompt"),
    ({"prompt": "Hỏi?", "completion": [user("Khác?"), assistant("a")], "label": True},
     "prefs: record 1: field 'completion': its first user turn is not the prompt"),
    ({"prompt": [user("Hỏi?")], "completion": "a", "label": True},
     "prefs: record 1: field 'prompt': prompt and completion must both be strings or both be message lists"),
])
def test_a_prompt_that_the_conversations_do_not_start_with_is_one_line(row, message):
    convert = to_unpaired if "label" in row else to_pair
    with pytest.raises(DataError) as err:
        convert(one(row))
    assert str(err.value) == message


def test_dpo_trains_on_ultrafeedback_shaped_data(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("VIETNAMESE_AI_CACHE", str(tmp_path / "cache"))
    rows = [ultrafeedback(f"Câu hỏi {i}: thủ đô của Việt Nam?", "Cảm ơn bạn, Hà Nội.", "Đồ ngốc, tự tìm đi.")
            for i in range(16)]
    data = write_jsonl(tmp_path / "uf.jsonl", rows)
    result = run_dpo(DPOConfig(model_name_or_path=tiny_model, dataset=data, output_dir=str(tmp_path / "dpo"),
                               learning_rate=2e-3, per_device_train_batch_size=8, num_train_epochs=3, logging_steps=1,
                               save_steps=0, disable_tqdm=True, seed=1))
    margins = result.series("rewards/margins")
    assert margins[-1] > margins[0]
    assert result.series("loss")[-1] < result.series("loss")[0]


# The `columns` mapping ---------------------------------------------------------------------------------


def _splits(config_cls, tmp_path, rows, eval_rows, **values):
    tmp_path.mkdir(exist_ok=True)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    held_out = write_jsonl(tmp_path / "eval.jsonl", eval_rows)
    config = config_cls(dataset=train, eval_dataset=held_out, output_dir=str(tmp_path / "run"), **values)
    return read_splits(config)


def test_columns_give_sft_the_same_tokenised_examples_as_the_canonical_names(tmp_path, tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    canonical = [{"prompt": f"Câu hỏi {i}?", "completion": f" Trả lời {i}."} for i in range(3)]
    own = [{"instruction": r["prompt"], "output": r["completion"], "id": i} for i, r in enumerate(canonical)]
    columns = {"instruction": "prompt", "output": "completion"}
    expected = [prepare_sft(split, tokenizer, 64, None)[0] for split in _splits(SFTConfig, tmp_path / "a", canonical, canonical)]
    got = [prepare_sft(split, tokenizer, 64, None)[0] for split in _splits(SFTConfig, tmp_path / "b", own, own, columns=columns)]
    assert got == expected and len(got[1]) == 3  # both the training and the evaluation split


def test_columns_give_dpo_the_same_tokenised_pairs_as_the_canonical_names(tmp_path, tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    canonical = [{"prompt": f"Câu hỏi {i}?", "chosen": " Hà Nội.", "rejected": " Huế."} for i in range(3)]
    own = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in canonical]
    columns = {"question": "prompt", "good": "chosen", "bad": "rejected"}
    expected = [read_pairs(split, tokenizer, 64, "x") for split in _splits(DPOConfig, tmp_path / "a", canonical, canonical)]
    got = [read_pairs(split, tokenizer, 64, "x") for split in _splits(DPOConfig, tmp_path / "b", own, own, columns=columns)]
    assert got == expected and len(got[1]) == 3


def test_a_column_missing_from_an_eval_record_names_the_file_and_record(tmp_path):
    rows = [{"question": "p", "good": " a", "bad": " b"}]
    with pytest.raises(DataError) as err:
        _splits(DPOConfig, tmp_path, rows, rows + [{"question": "p", "good": " a"}],
                columns={"question": "prompt", "good": "chosen", "bad": "rejected"})
    assert str(err.value) == (f"{tmp_path / 'eval.jsonl'}: line 2: field 'bad': missing (the columns setting "
                              f"maps it to 'rejected')")


@pytest.mark.parametrize("columns, message", [
    ({"question": "promt"}, "key 'columns': 'question' -> 'promt': 'promt' is not a field any method reads; "
                            "did you mean 'prompt'?"),
    ({"q": "prompt", "question": "prompt"}, "key 'columns': 'q' and 'question' both map to 'prompt'"),
])
def test_a_bad_mapping_is_one_config_line(columns, message):
    with pytest.raises(ConfigError) as err:
        DPOConfig(columns=columns)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_record_with_both_the_column_and_its_target_is_one_line():
    records = load_records([{"question": "p", "prompt": "q"}], name="train data")
    with pytest.raises(DataError) as err:
        rename_columns(records, {"question": "prompt"})
    assert str(err.value) == ("train data: record 1: field 'prompt': given as well as 'question', which the columns "
                              "setting maps to it; drop one")


def test_columns_is_a_command_line_setting(tmp_path):
    from vietnamese_ai.training.config import load_config

    config = load_config(DPOConfig, None, ["columns={question: prompt, good: chosen, bad: rejected}"])
    assert config.columns == {"question": "prompt", "good": "chosen", "bad": "rejected"}
