"""Shared benchmark plumbing: the workload (a tiny model and chat-like data built on the spot), a
separate virtual environment for TRL (never a dependency of ours), and timed child processes.

Each side runs in its own process, so peak memory is that process's own and imports are not shared.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "_work")
TRL_VENV = os.path.join(HERE, ".venv-trl")
TRL_VERSION = "1.16.0"

WORDS = ("xin chào bạn tôi là trợ lý hôm nay trời đẹp học máy dữ liệu mô hình ngôn ngữ thủ đô Việt Nam Hà Nội "
         "giúp đỡ câu hỏi trả lời rất tốt cảm ơn the model learns from data language question answer helpful "
         "honest kind capital city of friendly please thanks computer science training reward policy value").split()


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def word_count(rng: random.Random, lengths: str) -> int:
    """Words in one prompt or completion: log-normal (chat-like long tail) or uniform."""
    if lengths == "uniform":
        return rng.randint(5, 60)
    return max(3, min(300, round(rng.lognormvariate(math.log(30), 0.8))))


def build_model(path: str, corpus: list[str], hidden: int = 256, layers: int = 4) -> str:
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    from vietnamese_ai.models.tiny import build_tiny_model

    log(f"building benchmark model in {path}")
    return build_tiny_model(path, corpus, vocab_size=4096, hidden_size=hidden, num_layers=layers, num_heads=8,
                            num_kv_heads=4, max_position_embeddings=1024)


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def ensure_trl_venv(version: str = TRL_VERSION) -> str:
    """A separate venv with a TRL version (and torch pinned to the CPU wheel first). Returns its python."""
    venv = TRL_VENV if version == TRL_VERSION else f"{TRL_VENV}-{version}"
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, f".trl-{version}")
    if not os.path.isfile(stamp):
        log(f"creating {venv} with trl=={version}")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        pip = [python, "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)
        subprocess.run(pip + [f"trl=={version}"], check=True)
        open(stamp, "w").close()
    return python


def run_driver(python: str, driver: str, args: dict) -> dict:
    """Run a driver script in a child process; it prints one JSON line of results last."""
    command = [python, os.path.join(HERE, "drivers", driver), json.dumps(args)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=ROOT, TRANSFORMERS_VERBOSITY="error")
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{driver} failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    return result


def median_run(python: str, driver: str, args: dict, repeats: int, key: str = "train_seconds") -> dict:
    """Run a driver `repeats` times; keep the run with the median `key` time (this machine is noisy)."""
    runs = sorted((run_driver(python, driver, args) for _ in range(repeats)), key=lambda r: r[key])
    chosen = dict(runs[len(runs) // 2])
    chosen[f"{key}_all"] = [round(r[key], 2) for r in runs]
    return chosen


def table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), "-+-".join("-" * w for w in widths)]
    lines += [fmt.format(*map(str, row)) for row in rows]
    return "\n".join(lines)
