"""`vietnamese-ai chat`: one-shot answers equal an independent decode, seeds reproduce, adapters and run
directories load, the REPL (through a pseudo-terminal) and piped stdin carry the whole conversation,
streaming never splits a character, and bad input is one line before any model loads."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time

import pytest
import torch

from vietnamese_ai.cli import main
from vietnamese_ai.data.types import Message
from vietnamese_ai.models.generation import generate
from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
from vietnamese_ai.recipes import chat

Q1, Q2, Q3 = "Xin chào", "Thủ đô của Việt Nam là gì?", "Hello"
SHORT = ["--max-new-tokens", "16"]


@pytest.fixture(scope="module")
def lively_model(tmp_path_factory, tiny_model) -> str:
    """The tiny model with large random weights: its freshly initialised twin greedily answers every
    prompt with the same newlines, which could not tell one conversation from another."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(std=0.3)
    path = str(tmp_path_factory.mktemp("lively"))
    model.save_pretrained(path)
    load_tokenizer(tiny_model).save_pretrained(path)
    return path


def user(*turns: str) -> list[Message]:
    """A conversation from alternating user and assistant texts, starting with the user."""
    return [Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]


def decode(path: str, conversation: list[Message], **kwargs) -> str:
    """The answer models.generation.generate gives (greedy unless a temperature is given)."""
    kwargs = {"temperature": 0.0, "max_new_tokens": 16, **kwargs}
    return generate(load_causal_lm(path), load_tokenizer(path), [conversation], **kwargs)[0]


def one_shot(capsys, *argv: str) -> str:
    assert main(["chat", *argv]) == 0
    return capsys.readouterr().out


def test_one_shot_prints_the_greedy_answer(lively_model, capsys):
    expected = decode(lively_model, user(Q2))
    assert expected.strip()
    assert one_shot(capsys, lively_model, "--prompt", Q2, "--temperature", "0", *SHORT) == expected + "\n"
    system = [Message("system", "Bạn là trợ lý."), *user(Q2)]
    with_system = decode(lively_model, system)
    assert with_system != expected   # so the next line can tell whether the system prompt was used
    assert one_shot(capsys, lively_model, "--system", "Bạn là trợ lý.", "--prompt", Q2, "--temperature", "0",
                    *SHORT) == with_system + "\n"


def test_the_same_seed_gives_the_same_sampled_answer(lively_model, capsys):
    first = one_shot(capsys, lively_model, "--prompt", Q1, "--seed", "3", "--top-k", "50", *SHORT)
    assert one_shot(capsys, lively_model, "--prompt", Q1, "--seed", "3", "--top-k", "50", *SHORT) == first
    assert first == decode(lively_model, user(Q1), temperature=0.7, top_k=50, seed=3) + "\n"
    assert one_shot(capsys, lively_model, "--prompt", Q1, "--seed", "4", "--top-k", "50", *SHORT) != first


def test_settings_also_read_as_key_value_like_every_other_command(lively_model, capsys):
    flags = one_shot(capsys, lively_model, "--prompt", Q1, "--seed", "3", "--top-k", "50", *SHORT)
    assert one_shot(capsys, lively_model, f"prompt={Q1}", "seed=3", "top_k=50", *SHORT) == flags
    assert main(["chat", lively_model, "--prompt", Q1, "trust_remote_code=maybe"]) == 2
    assert "trust_remote_code: expected true or false, got 'maybe'" in capsys.readouterr().err


def test_a_lora_adapter_directory_talks_through_its_base(lively_model, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(lively_model)
    adapted = get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                              task_type="CAUSAL_LM", init_lora_weights=False))
    adapter = tmp_path / "adapter"
    adapted.save_pretrained(adapter)
    assert not (adapter / "config.json").exists() and not (adapter / "tokenizer.json").exists()
    expected = generate(adapted, load_tokenizer(lively_model), [user(Q2)], temperature=0.0, max_new_tokens=16)[0]
    assert expected != decode(lively_model, user(Q2))   # the adapter changes the answer
    assert one_shot(capsys, str(adapter), "--prompt", Q2, "--temperature", "0", *SHORT) == expected + "\n"


def test_a_run_directory_talks_through_its_final_model(lively_model, tmp_path, capsys):
    shutil.copytree(lively_model, tmp_path / "run" / "final")
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    assert (one_shot(capsys, str(tmp_path / "run"), "--prompt", Q3, "--temperature", "0", *SHORT)
            == decode(lively_model, user(Q3)) + "\n")


def _command(model: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "vietnamese_ai.cli", "chat", model, "--temperature", "0", *(flags or SHORT)]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TERM": "dumb", "PYTHONIOENCODING": "utf-8"}


class Terminal:
    """A command on a pseudo-terminal of its own (its controlling terminal, so that Ctrl-C typed there
    is a SIGINT to it, as at a real terminal)."""

    def __init__(self, argv: list[str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:   # the child: nothing but exec
            os.execve(argv[0], argv, _env())
        self.seen = b""

    def read_until(self, marker: bytes | None, count: int = 1, after: int = 0) -> None:
        """Read until `marker` was seen `count` times after byte `after`, or (None) until the terminal closes."""
        deadline = time.monotonic() + 120
        while marker is None or self.seen[after:].count(marker) < count:
            assert time.monotonic() < deadline, self.seen.decode("utf-8", "replace")[-2000:]
            if select.select([self.fd], [], [], 1)[0]:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:   # the child closed the terminal
                    break
                if not chunk:
                    break
                self.seen += chunk

    def read_more(self) -> None:
        """Read until something more than what was already seen arrives."""
        seen = len(self.seen)
        deadline = time.monotonic() + 120
        while len(self.seen) == seen:
            assert time.monotonic() < deadline, self.seen.decode("utf-8", "replace")[-2000:]
            if select.select([self.fd], [], [], 1)[0]:
                self.seen += os.read(self.fd, 65536)

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def finish(self) -> tuple[int, str]:
        """The exit code and everything written, with the terminal's CR LF as LF."""
        try:
            self.read_until(None)
            _, status = os.waitpid(self.pid, 0)
        finally:
            os.close(self.fd)
        return os.waitstatus_to_exitcode(status), self.seen.decode("utf-8").replace("\r\n", "\n")

    def kill(self) -> None:
        try:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.fixture
def terminal():
    started: list[Terminal] = []
    yield lambda argv: started.append(Terminal(argv)) or started[-1]
    for t in started:
        t.kill()


def test_the_repl_on_a_terminal_answers_each_turn_from_the_whole_conversation(lively_model, terminal):
    a1 = decode(lively_model, user(Q1))
    a2 = decode(lively_model, user(Q1, a1, Q2))
    assert a2 != decode(lively_model, user(Q2))   # the first exchange matters to the second answer
    term = terminal(_command(lively_model))
    for k, line in enumerate([Q1, Q2, "/exit"], start=1):
        term.read_until(b"you> ", k)
        term.type(line + "\n")
    code, out = term.finish()
    assert code == 0
    assert "/reset clears the conversation" in out
    first = out.index(a1 + "\n\n", out.index(Q1))
    assert out.index(a2 + "\n\n", out.index(Q2, first + len(a1))) > first


def test_ctrl_c_on_a_terminal_stops_the_answer_and_forgets_that_turn(lively_model, terminal):
    long = ["--max-new-tokens", "200"]
    expected = decode(lively_model, user(Q3), max_new_tokens=200)
    term = terminal(_command(lively_model, *long))
    term.read_until(b"you> ")
    term.type(Q1 + "\n")
    echoed = len(term.seen)
    term.read_until(b"\n", 1, after=echoed)   # the echo of the line
    term.read_more()                            # the first piece of the answer
    term.type("\x03")                           # Ctrl-C while it generates
    term.read_until(b"you> ", 2)
    term.type(Q3 + "\n")
    term.read_until(b"you> ", 3)
    term.type("\x04")                           # Ctrl-D: the end
    code, out = term.finish()
    assert code == 0
    assert "(answer stopped; it is not kept in the conversation)" in out
    assert out.index(expected + "\n\n", out.index("stopped")) > 0   # answered as if Q1 had never been asked


def test_piped_stdin_is_one_user_turn_per_line(lively_model):
    a1 = decode(lively_model, user(Q1))
    b2 = decode(lively_model, user(Q2))
    b3 = decode(lively_model, user(Q2, b2, Q3))
    run = subprocess.run(_command(lively_model), input=f"{Q1}\n\n   \n/reset\n{Q2}\n{Q3}\n", capture_output=True,
                         text=True, env=_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout == f"{a1}\n{b2}\n{b3}\n"
    assert "(conversation cleared)" in run.stderr


def test_streaming_writes_each_character_whole():
    """Byte-level tokens split 'ệ' (3 UTF-8 bytes): nothing is written until its last byte arrives."""
    class ByteTokenizer:   # one token per byte, decoded as transformers' byte-level BPE decodes
        def decode(self, ids, skip_special_tokens=True):
            return bytes(ids).decode("utf-8", errors="replace")

    written: list[str] = []
    printer = chat.SuffixPrinter(ByteTokenizer(), written.append)
    printer.put(torch.tensor([[1, 2, 3]]))   # the prompt: never written
    text = "Việt Nam"
    for b in text.encode("utf-8"):
        printer.put(torch.tensor([b]))
    printer.end()
    assert "".join(written) == text == printer.text
    assert all("\ufffd" not in piece for piece in written)
    assert len(written) == len(text)   # one piece per character: streamed, not written at the end


def test_answers_stream_token_by_token(lively_model):
    model, tokenizer = load_causal_lm(lively_model), load_tokenizer(lively_model)
    pieces: list[str] = []
    reply = chat.answer(model, tokenizer, user(Q2), chat.Sampling(temperature=0, max_new_tokens=16), 0, pieces.append)
    assert reply == "".join(pieces) == decode(lively_model, user(Q2))
    assert len(pieces) > 3


def test_ctrl_c_stops_an_answer_and_drops_that_turn():
    asked: list[list[Message]] = []
    seeds: list[int] = []

    def respond(messages, seed):
        asked.append(messages)
        seeds.append(seed)
        if len(asked) == 1:
            raise KeyboardInterrupt
        return f"answer {len(asked)}"

    told: list[str] = []
    chat.converse(["first", "second", "third", "/quit", "never"], respond, "sys", 10, lambda s: None, told.append,
                  interactive=True)
    assert asked == [[Message("system", "sys"), *user("first")], [Message("system", "sys"), *user("second")],
                     [Message("system", "sys"), *user("second", "answer 2", "third")]]
    assert seeds == [10, 10, 11]   # answer k of the conversation draws from seed + k
    assert any("stopped" in t for t in told)
    asked.clear()
    with pytest.raises(KeyboardInterrupt):   # piped input: Ctrl-C ends the run
        chat.converse(["first", "second"], respond, None, 0, lambda s: None, told.append, interactive=False)
    assert len(asked) == 1


@pytest.mark.parametrize("case", [
    ("{missing}", "chat: '{missing}': no such directory"),
    ("{empty}", "is not a model directory (no config.json or adapter_config.json) nor a run directory"),
    ("{reward}", "is a sequence-classification checkpoint (Qwen2ForSequenceClassification), not a causal"),
    ("{model} --temperature -1", "chat: --temperature must be >= 0 (0 is greedy), got -1"),
    ("{model} --top-p 0", "chat: --top-p must be in (0, 1], got 0"),
    ("{model} --top-p 1.5", "chat: --top-p must be in (0, 1], got 1.5"),
    ("{model} --top-k -2", "chat: --top-k must be >= 0"),
    ("{model} --max-new-tokens 0", "chat: --max-new-tokens must be >= 1, got 0"),
    ("{model} --temperature hot", "vietnamese-ai chat: argument --temperature: invalid float value: 'hot'"),
    ("{model} --dtype float8", "argument --dtype: invalid choice: 'float8'"),
    ("{model} --stream", "vietnamese-ai chat: unrecognized arguments: --stream"),
    ("", "the following arguments are required: MODEL"),
], ids=lambda c: c[0].split()[-1] if c[0] else "none")
def test_bad_input_is_one_line_before_any_model_loads(case, tmp_path, tiny_model, seeded_reward_model, capsys,
                                                      monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(chat, "load_causal_lm", refuse)
    monkeypatch.setattr(chat, "load_tokenizer", refuse)
    (tmp_path / "empty").mkdir()
    paths = {"missing": str(tmp_path / "nope"), "empty": str(tmp_path / "empty"), "reward": seeded_reward_model,
             "model": tiny_model}
    argv, message = case
    assert main(["chat", *argv.format(**paths).split(), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("vietnamese-ai: error: ")
    assert message.format(**paths) in err
