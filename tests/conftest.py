"""Shared fixtures: tiny models built on the spot (nothing is downloaded), and helpers."""

from __future__ import annotations

import contextlib
import json
import os

# Tests never reach the hub: fail fast instead of retrying a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

CORPUS = [
    "Xin chào, tôi có thể giúp gì cho bạn?", "Hello, how can I help you today?",
    "Thủ đô của Việt Nam là Hà Nội.", "The capital of Vietnam is Hanoi.",
    "Trí tuệ nhân tạo giúp máy tính học từ dữ liệu.", "Artificial intelligence lets computers learn from data.",
    "Đồ ngốc, ngu quá.", "You are stupid.", "Tôi không biết, có lẽ vậy.", "I am not sure, maybe.",
] * 20


class CharTokenizer:
    """A tokenizer whose ids can be written by hand: 'a' -> 1 ... 'z' -> 26, space -> 27, EOS = 0."""

    eos_token_id, eos_token, pad_token_id, bos_token_id, chat_template = 0, "</s>", 0, None, None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [27 if c == " " else ord(c) - 96 for c in text]


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path)


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_only_dir(path, monkeypatch):
    """Make a directory read-only for this process. Root writes through mode bits, so as root os.access
    answers as it does on a read-only file system."""
    path.mkdir()
    os.chmod(path, 0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if (mode & os.W_OK and os.path.realpath(p) ==
                                                                          os.path.realpath(path)) else real(p, mode, **kw))
    return path


def _build(path, **kwargs) -> str:
    from vietnamese_ai.models.tiny import build_tiny_model

    return build_tiny_model(str(path), CORPUS, vocab_size=320, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, max_position_embeddings=256, **kwargs)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Directory of a tiny Qwen2 model + byte-level BPE tokenizer (no dropout)."""
    return _build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_dropout_model(tmp_path_factory) -> str:
    """The same tiny model with attention dropout, for tests where the RNG matters."""
    return _build(tmp_path_factory.mktemp("tiny_dropout"), attention_dropout=0.2)


@pytest.fixture
def sft_file(tmp_path) -> str:
    rows = [{"prompt": f"Câu hỏi số {i}: thủ đô của Việt Nam là gì?", "completion": " Thủ đô của Việt Nam là Hà Nội." + " nhé" * (i % 4)}
            for i in range(12)]
    return write_jsonl(tmp_path / "train.jsonl", rows)


# Online RL: chat prompts and reward functions with TRL's signature.
QUESTIONS = ["Thủ đô của Việt Nam là gì?", "What is AI?", "Xin chào", "Hello there", "Tôi không biết",
             "The capital of Vietnam?", "Học máy là gì?", "Cảm ơn bạn"]
REWARDS = '''
import math

def even_tokens(prompts, completions, completion_ids, **kwargs):
    return [sum(1 for t in ids if t % 2 == 0) / len(ids) for ids in completion_ids]

def constant(prompts, completions, **kwargs):
    return [1.0] * len(completions)

def raises(prompts, completions, **kwargs):
    raise ValueError("the judge is down")

def too_few(prompts, completions, **kwargs):
    return [1.0]

def not_a_number(prompts, completions, **kwargs):
    return [math.nan] * len(completions)

def sees_columns(prompts, completions, completion_ids, topic, trainer_state, **kwargs):
    assert len(topic) == len(completions) and isinstance(completions[0], list)
    assert completions[0][0]["role"] == "assistant" and prompts[0][0]["role"] == "user"
    return [float(t == "geo") for t in topic]
'''


@pytest.fixture
def prompts_file(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": [{"role": "user", "content": q}],
                                                     "topic": "geo" if "capital" in q or "Thủ đô" in q else "other"}
                                                    for q in QUESTIONS])


@pytest.fixture
def rewards_file(tmp_path):
    path = tmp_path / "rewards.py"
    path.write_text(REWARDS)
    return str(path)


@pytest.fixture(scope="session")
def seeded_reward_model(tmp_path_factory, tiny_model):
    """The tiny model with a seeded scalar head: a reward model that shares the policy's tokenizer."""
    from transformers import AutoModelForSequenceClassification

    from vietnamese_ai.models.loading import load_tokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    torch.nn.init.normal_(model.score.weight, std=0.5)
    model.config.pad_token_id = load_tokenizer(tiny_model).pad_token_id
    path = str(tmp_path_factory.mktemp("rm"))
    model.save_pretrained(path)
    load_tokenizer(tiny_model).save_pretrained(path)
    return path


# Multi-process runs (tests/test_fsdp.py, tests/test_deepspeed.py). torch's gloo backend may abort a process
# while the interpreter shuts down, after its run has finished and written everything: a worker thread
# releasing a finished all-gather needs the GIL that Python's exit no longer hands out (std::terminate;
# about one 2-process FSDP2 run in fifteen on a loaded 2-core machine). That exit is accepted once the
# result is written; any other failure is not.
EXIT_RACE = "terminate called without an active exception"


@contextlib.contextmanager
def report_page(path):
    """A headless Chromium page on the report at `path`, its plots drawn; yields (page, errors, requests):
    the console and page errors, and every request that leaves the machine. Skips where Chromium or
    playwright is missing."""
    from vietnamese_ai.report.png import find_chromium

    browser_path = find_chromium()
    if browser_path is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium; `make test` installs it as root)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    errors, requests = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:", "about:"))
                    else None)
            page.goto(path.as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
            yield page, errors, requests
        finally:
            browser.close()


def run_result(run, path):
    """The JSON a multi-process run's rank 0 wrote to `path`, once the run succeeded (or hit EXIT_RACE after)."""
    assert run.returncode == 0 or (EXIT_RACE in run.stderr and os.path.isfile(path)), run.stderr[-3000:]
    with open(path) as f:
        return json.load(f)


def check_killed_checkpoint_write_resumes(tmp_path, phase):
    """ddp_worker.py's `kill` phases, run by `phase(name)`: every process SIGKILLed inside the step-4
    checkpoint write leaves only its temporary directory beside step 2, and the resumed run ends as the
    uninterrupted one, bit for bit (losses and every final weight)."""
    from safetensors.torch import load_file

    full = phase("full")
    killed = phase("killed")
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    leftovers = sorted(os.listdir(tmp_path / "killed" / "checkpoints"))
    assert leftovers[0].startswith(".tmp-step-000004-") and leftovers[1:] == ["step-000002"]
    resumed = phase("resumed")
    assert run_result(full, tmp_path / "full.json") == run_result(resumed, tmp_path / "resumed.json")
    a = load_file(tmp_path / "full" / "final" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def online_worker_pair(tmp_path, port, model, prompts, reward, *extra, **env):
    """tests/online_worker.py under torchrun with 2 processes (accumulation 1) into tmp_path/ddp, and alone
    (accumulation 2) into tmp_path/single: the result line each printed. Skips where gloo is missing."""
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(here), OMP_NUM_THREADS="1", **env)
    worker = os.path.join(here, "online_worker.py")
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(port), worker, model, prompts, reward, str(tmp_path / "ddp"), "1", *extra],
                         capture_output=True, text=True, env=env, timeout=300)
    if ddp.returncode != 0 and "gloo" in ddp.stderr.lower() and "not available" in ddp.stderr.lower():
        pytest.skip("torch.distributed gloo backend not available")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, worker, model, prompts, reward, str(tmp_path / "single"), "2", *extra],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    return tuple(json.loads(run.stdout.strip().splitlines()[-1]) for run in (ddp, single))
