"""Loading every file format, record kinds, and the one-line error for every bad input."""

import json

import pytest

from tests.conftest import CharTokenizer, write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.data.loading import load_records
from vietnamese_ai.data.records import to_sft_examples
from vietnamese_ai.data.tokenize import prepare_sft
from vietnamese_ai.data.types import ChatExample, Message, PromptCompletion, TextExample, TokenizedExample
from vietnamese_ai.errors import DataError

ROWS = [{"prompt": "Xin chào", "completion": "Chào bạn"}, {"prompt": "Hello", "completion": "Hi"}]


def test_all_local_formats_give_the_same_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "d.json").write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "d.csv").write_text("prompt,completion\nXin chào,Chào bạn\nHello,Hi\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    for ext in ("jsonl", "json", "csv", "parquet"):
        assert [r.data for r in load_records(str(tmp_path / f"d.{ext}"))] == ROWS, ext


def test_record_kinds_become_canonical_types():
    records = load_records([
        {"text": "abc"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"prompt": "p", "completion": "c"},
        {"prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "assistant", "content": "c"}]},
        {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, 4, 5]},
        {"instruction": "Dịch", "input": "xin chào", "output": "hello"},
    ])
    kinds = [type(e) for e in to_sft_examples(records)]
    assert kinds == [TextExample, ChatExample, PromptCompletion, PromptCompletion, TokenizedExample, PromptCompletion]
    alpaca = to_sft_examples(records)[-1]
    assert alpaca.prompt == [Message("user", "Dịch\n\nxin chào")] and alpaca.completion == [Message("assistant", "hello")]


def _write(tmp_path, content: bytes, name="bad.jsonl"):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


BAD = {
    # name: (file bytes, expected pieces of the message)
    "missing field": (b'{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n', ["line 2", "field 'completion'", "missing"]),
    "mistyped field": (b'{"prompt": "a", "completion": 5}\n', ["line 1", "field 'completion'", "expected a string, got int"]),
    "empty completion": (b'{"prompt": "a", "completion": "  "}\n', ["line 1", "field 'completion'", "is empty"]),
    "empty file": (b"\n\n", ["file is empty"]),
    "invalid json": (b'{"prompt": "a", "completion": "b"}\n{"prompt": "a" "completion": "b"}\n', ["line 2", "invalid JSON"]),
    "invalid utf-8": (b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff", "completion": "b"}\n', ["line 2", "not valid UTF-8"]),
    "not an object": (b'[1, 2]\n', ["line 1", "expected a JSON object"]),
    "bad role": (b'{"messages": [{"role": "bot", "content": "x"}]}\n', ["line 1", "field 'messages[0].role'"]),
    "labels length": (b'{"input_ids": [1, 2, 3], "labels": [1, 2]}\n', ["line 1", "field 'labels'", "has 2 entries"]),
    "ids not ints": (b'{"input_ids": [1, "a"]}\n', ["line 1", "field 'input_ids[1]'", "expected an integer, got str 'a'"]),
    "nothing to learn": (b'{"input_ids": [1, 2], "labels": [-100, -100]}\n', ["line 1", "field 'labels'", "nothing to learn"]),
    "unknown fields": (b'{"question": "a"}\n', ["line 1", "no known fields", "'question'"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_one_line_error_naming_file_record_and_field(tmp_path, case):
    content, pieces = BAD[case]
    path = _write(tmp_path, content)
    with pytest.raises(DataError) as err:
        to_sft_examples(load_records(path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(path)
    for piece in pieces:
        assert piece in message, (case, message)


def test_out_of_vocabulary_ids_name_the_record(tmp_path):
    path = write_jsonl(tmp_path / "ids.jsonl", [{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [1, 999], "labels": [1, 999]}])
    with pytest.raises(DataError, match=r"ids.jsonl: line 2: field 'input_ids': token id 999 is out of range"):
        prepare_sft(load_records(path), CharTokenizer(), 16, vocab_size=50)


def test_missing_file_and_hub_failure_are_one_line(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_records(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError) as err:
        load_records("no-such-org/no-such-dataset-xyz")  # offline in tests: the hub cannot provide it
    assert "Hugging Face hub" in str(err.value) and "\n" not in str(err.value)


def test_cli_prints_the_error_without_a_traceback(tmp_path, tiny_model, capsys):
    path = _write(tmp_path, b'{"prompt": "a", "completion": ""}\n')
    code = main(["sft", f"model_name_or_path={tiny_model}", f"dataset={path}", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"vietnamese-ai: error: {path}: line 1: field 'completion': is empty"]


def test_a_scored_answer_is_an_sft_pair_whose_response_is_the_assistant_turn():
    from vietnamese_ai.data.loading import Record
    from vietnamese_ai.data.records import to_sft_example
    from vietnamese_ai.data.types import Message, PromptCompletion

    chat = to_sft_example(Record("c.jsonl: line 1", {"prompt": [{"role": "user", "content": "Xin chào"}], "response": "Chào bạn"}))
    assert chat == PromptCompletion([Message("user", "Xin chào")], [Message("assistant", "Chào bạn")])
    plain = to_sft_example(Record("c.jsonl: line 2", {"prompt": "Hi", "response": " there"}))
    assert plain == PromptCompletion("Hi", " there")
    import pytest
    from vietnamese_ai.errors import DataError

    with pytest.raises(DataError, match="c.jsonl: line 3: field 'response'"):
        to_sft_example(Record("c.jsonl: line 3", {"prompt": "Hi", "response": 3}))
