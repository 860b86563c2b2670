"""The demo: write a bilingual corpus, bootstrap a tiny model on it, run SFT, and compare answers on
held-out prompts before and after.

    python -m vietnamese_ai.demo [--out runs/demo] [--fast]

Stages (each writes a normal run directory under --out):
  base/   tokenizer trained on the corpus + a tiny Qwen2 model pre-trained on plain-text documents
  sft/    SFT of base on chat-formatted prompt-completion data (completion-only loss, packing)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time

from vietnamese_ai.data.types import Message
from vietnamese_ai.demo.corpus import chat_record, exchanges, pretraining_documents, split_heldout
from vietnamese_ai.models.generation import generate
from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
from vietnamese_ai.models.tiny import build_tiny_model
from vietnamese_ai.recipes.common import quiet_transformers
from vietnamese_ai.recipes.sft import SFTConfig, run_sft

log = logging.getLogger("vietnamese_ai")

MODEL = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "max_position_embeddings": 256}


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def bootstrap(out: str, documents: list[str], chats: list[dict], steps: int) -> str:
    """Tokenizer + tiny model, pre-trained on plain documents with the LM recipe (SFT on `text`)."""
    init = os.path.join(out, "init")
    texts = documents + [r["prompt"][0]["content"] + " " + r["completion"][0]["content"] for r in chats]
    build_tiny_model(init, texts, vocab_size=2048, **MODEL)
    config = SFTConfig(model_name_or_path=init, dataset=os.path.join(out, "data", "pretrain.jsonl"),
                       output_dir=os.path.join(out, "base"), overwrite_output_dir=True, learning_rate=3e-3,
                       max_steps=steps, per_device_train_batch_size=16, warmup_ratio=0.05,
                       lr_scheduler_type="cosine", max_length=256, logging_steps=25, save_steps=0, weight_decay=0.01)
    return run_sft(config).final_dir


def show(prompts: list[str], before: list[str], after: list[str]) -> None:
    for prompt, b, a in zip(prompts, before, after):
        print(f"\nprompt: {prompt}\n  before SFT: {b[:120]!r}\n  after SFT:  {a[:120]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vietnamese_ai.demo")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--fast", action="store_true", help="fewer steps (for tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[vietnamese-ai] %(message)s")
    quiet_transformers()
    started = time.perf_counter()
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "data"))

    train_qa, heldout_qa = split_heldout(exchanges())
    chats = [chat_record(qa) for qa in train_qa]
    documents = pretraining_documents(train_qa)
    write_jsonl(os.path.join(out, "data", "pretrain.jsonl"), [{"text": d} for d in documents])
    sft_path = write_jsonl(os.path.join(out, "data", "sft.jsonl"), chats)
    eval_path = write_jsonl(os.path.join(out, "data", "sft_eval.jsonl"), [chat_record(qa) for qa in heldout_qa])
    write_jsonl(os.path.join(out, "heldout_prompts.jsonl"), [{"prompt": qa.prompt} for qa in heldout_qa])
    log.info("corpus: %d training exchanges, %d held out", len(train_qa), len(heldout_qa))

    base = bootstrap(out, documents, chats, steps=60 if args.fast else 1000)
    sft = run_sft(SFTConfig(model_name_or_path=base, dataset=sft_path, eval_dataset=eval_path,
                            output_dir=os.path.join(out, "sft"), overwrite_output_dir=True, learning_rate=1e-3,
                            num_train_epochs=1 if args.fast else 4, per_device_train_batch_size=16,
                            warmup_ratio=0.05, max_length=256, logging_steps=10, eval_steps=50, save_steps=0))

    sample = heldout_qa[:8]
    prompts = [[Message("user", qa.prompt)] for qa in sample]
    answers = {}
    for name, path in (("before", base), ("after", sft.final_dir)):
        model, tokenizer = load_causal_lm(path), load_tokenizer(path)
        answers[name] = generate(model, tokenizer, prompts, max_new_tokens=40, temperature=0)
    show([qa.prompt for qa in sample], answers["before"], answers["after"])
    eval_losses = sft.series("eval/loss")
    print(f"\nheld-out SFT loss: {eval_losses[0]:.3f} (first eval) -> {eval_losses[-1]:.3f} (last)")
    print(f"demo finished in {time.perf_counter() - started:.0f}s; models in {base} and {sft.final_dir}")
    return 0
