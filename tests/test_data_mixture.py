"""Several datasets mixed by weight in one run, dataset_text_field, ShareGPT conversations, and `columns`
where prompts and answers are read outside training (score, evaluate, feedback)."""

import os

import pytest

from tests.conftest import read_jsonl, write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.data import loading
from vietnamese_ai.data.loading import load_records
from vietnamese_ai.data.records import to_sft_example
from vietnamese_ai.data.types import ChatExample, Message, TextExample
from vietnamese_ai.errors import ConfigError, DataError
from vietnamese_ai.recipes.common import read_split
from vietnamese_ai.recipes.sft import SFTConfig, run_sft


def _files(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"tài liệu A số {i}"} for i in range(4)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"content": f"document B number {i}"} for i in range(6)])
    return a, b


def _texts(config):
    return [r.data.get("text") for r in read_split(config, "train")]


def test_weights_scale_each_source_and_the_draw_is_seeded(tmp_path):
    a, b = _files(tmp_path)
    mixture = [{"path": a, "weight": 2}, {"path": b, "weight": 0.5, "columns": {"content": "text"}}]
    texts = _texts(SFTConfig(dataset=mixture, seed=1))
    a_texts = [f"tài liệu A số {i}" for i in range(4)]
    assert texts[:8] == a_texts * 2                        # weight 2: every record twice
    drawn = texts[8:]
    assert len(drawn) == 3 and len(set(drawn)) == 3        # round(0.5 x 6), without repeats
    assert all(t.startswith("document B") for t in drawn)
    assert drawn == sorted(drawn, key=lambda t: int(t.rsplit(" ", 1)[1]))   # in file order
    assert _texts(SFTConfig(dataset=mixture, seed=1)) == texts                # rebuilt identically (resume)
    seeds = {tuple(_texts(SFTConfig(dataset=mixture, seed=s))[8:]) for s in range(6)}
    assert len(seeds) > 1                                  # the half drawn depends on the seed


def test_a_mixture_trains_exactly_as_the_file_of_its_records(tmp_path, tiny_model):
    a, _ = _files(tmp_path)
    twice = write_jsonl(tmp_path / "twice.jsonl", read_jsonl(a) * 2)
    common = dict(model_name_or_path=tiny_model, max_steps=3, per_device_train_batch_size=2, logging_steps=1,
                  save_steps=0, disable_tqdm=True, learning_rate=1e-3)
    mixed = run_sft(SFTConfig(dataset=[{"path": a, "weight": 2}], output_dir=str(tmp_path / "mixed"), **common))
    plain = run_sft(SFTConfig(dataset=twice, output_dir=str(tmp_path / "plain"), **common))
    assert [r["loss"] for r in mixed.history] == [r["loss"] for r in plain.history]


def test_a_resume_with_other_weights_is_refused_even_when_the_count_is_the_same(tmp_path, tiny_model):
    a, _ = _files(tmp_path)
    b = write_jsonl(tmp_path / "b4.jsonl", [{"text": f"document B number {i}"} for i in range(4)])
    common = dict(model_name_or_path=tiny_model, per_device_train_batch_size=4, logging_steps=1, save_steps=1,
                  disable_tqdm=True, output_dir=str(tmp_path / "run"))
    run_sft(SFTConfig(dataset=[{"path": a, "weight": 2}, b], max_steps=2, **common))
    swapped = [a, {"path": b, "weight": 2}]                  # 12 records either way
    with pytest.raises(ConfigError, match="resume_from_checkpoint: mixture was"):
        run_sft(SFTConfig(dataset=swapped, max_steps=3, resume_from_checkpoint="latest", **common))
    resumed = run_sft(SFTConfig(dataset=[{"path": a, "weight": 2}, b], max_steps=3, resume_from_checkpoint="latest",
                                **common))                   # the same mixture resumes
    assert resumed.global_step == 3


def test_each_source_reads_its_own_split_and_subset(tmp_path, monkeypatch):
    calls = []

    def fake_hub(path, split, subset):
        calls.append((path, split, subset))
        return [loading.Record(f"{path}[{split}]: record 1", {"text": "x"})]

    monkeypatch.setattr(loading, "_read_hub", fake_hub)
    config = SFTConfig(dataset=["org/one", {"path": "org/two", "split": "train_sft", "subset": "vi"}],
                       dataset_split="train", dataset_subset="default")
    read_split(config, "train")
    assert calls == [("org/one", "train", "default"), ("org/two", "train_sft", "vi")]


@pytest.mark.parametrize("entry, message", [
    ({"path": "a.jsonl", "weight": 0}, "entry 1 (a.jsonl): field 'weight': expected a number > 0, got 0"),
    ({"path": "a.jsonl", "wieght": 2}, "entry 1: unknown field 'wieght'"),
    ({"weight": 2}, "entry 1: field 'path': required"),
    ({"path": "a.jsonl", "columns": {"q": "promt"}}, "did you mean 'prompt'?"),
])
def test_a_bad_mixture_entry_is_one_line_before_any_model_loads(tmp_path, entry, message, capsys):
    import json

    code = main(["sft", "model_name_or_path=/no/such/model", f"dataset=[{json.dumps(entry)}]",
                 f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "key 'dataset'" in err and message in err, err


def test_a_weight_that_takes_no_record_is_one_line(tmp_path):
    a, _ = _files(tmp_path)
    with pytest.raises(DataError, match=r"a.jsonl: weight 0.1 takes no record of its 4"):
        read_split(SFTConfig(dataset=[{"path": a, "weight": 0.1}]), "train")


def test_dataset_text_field_names_the_text(tmp_path):
    _, b = _files(tmp_path)
    records = read_split(SFTConfig(dataset=b, dataset_text_field="content"), "train")
    assert to_sft_example(records[0]) == TextExample("document B number 0")
    with pytest.raises(ConfigError, match="dataset_text_field: 'content' and columns both name the 'text' field"):
        read_split(SFTConfig(dataset=b, dataset_text_field="content", columns={"body": "text"}), "train")


def test_a_sharegpt_record_is_the_same_conversation_as_messages():
    sharegpt = {"system": "Trả lời ngắn gọn.", "conversations": [
        {"from": "human", "value": "Thủ đô?"}, {"from": "gpt", "value": "Hà Nội."},
        {"from": "human", "value": "Còn Nhật?"}, {"from": "gpt", "value": "Tokyo."}]}
    messages = {"messages": [{"role": "system", "content": "Trả lời ngắn gọn."}, {"role": "user", "content": "Thủ đô?"},
                             {"role": "assistant", "content": "Hà Nội."}, {"role": "user", "content": "Còn Nhật?"},
                             {"role": "assistant", "content": "Tokyo."}]}
    a, b = load_records([sharegpt, messages])
    assert to_sft_example(a) == to_sft_example(b)
    assert to_sft_example(a).messages[1] == Message("user", "Thủ đô?") and isinstance(to_sft_example(a), ChatExample)
    bad = load_records([{"conversations": [{"from": "bot", "value": "?"}]}], name="sft")[0]
    with pytest.raises(DataError, match=r"sft: record 1: field 'conversations\[0\].from': expected one of"):
        to_sft_example(bad)


def test_columns_rename_the_prompts_of_generate_evaluate_and_score(tmp_path, tiny_model, capsys):
    prompts = write_jsonl(tmp_path / "q.jsonl", [{"question": "Xin chào?"}, {"question": "What is AI?"}])
    out = tmp_path / "cand.jsonl"
    assert main(["feedback", "generate", f"model_name_or_path={tiny_model}", f"prompts={prompts}", f"output={out}",
                 "columns={question: prompt}", "temperatures=[1.0]", "num_samples=1", "max_new_tokens=2",
                 "disable_tqdm=true"]) == 0
    assert [r["prompt"] for r in read_jsonl(out)] == [[{"role": "user", "content": "Xin chào?"}],
                                                     [{"role": "user", "content": "What is AI?"}]]
    # Renamed before the records are checked: without columns the prompt is missing; with them the
    # next thing checked (the model) is what fails.
    for command in (["evaluate", f"dataset={prompts}", "models=[/no/such/model,/no/such/model2]", f"output_dir={tmp_path / 'ev'}"],
                    ["score", f"dataset={write_jsonl(tmp_path / 's.jsonl', [{'question': 'Hỏi?', 'answer': 'Đáp.'}])}",
                     "model_name_or_path=/no/such/model", f"output={tmp_path / 's_out.jsonl'}"]):
        assert main(command) != 0
        assert ("field 'prompt': missing" if command[0] == "evaluate" else "no 'response'") in capsys.readouterr().err
        mapping = "columns={question: prompt}" if command[0] == "evaluate" else "columns={question: prompt, answer: response}"
        assert main(command + [mapping]) != 0
        err = capsys.readouterr().err
        assert "field 'prompt'" not in err and "no 'response'" not in err and "/no/such/model" in err, err
    assert not os.path.exists(tmp_path / "s_out.jsonl")
