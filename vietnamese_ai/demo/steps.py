"""The demo's own stages, the ones that are not toolkit commands: they are `python` stages of
`demo.yaml`, each called as step(output_dir=<its directory>, **args) and writing only there.

corpus       the bilingual corpus (pre-training documents, chat data, prompts, held-out prompts,
             classifier texts)
tiny_model   a byte-level BPE tokenizer and a tiny Qwen2 model, initialised at random
classifier   the toxicity classifier, trained on the corpus's own style labels
"""

from __future__ import annotations

import json
import os
from typing import Any

from vietnamese_ai.demo.corpus import STYLE_MIX, chat_record, exchanges, mixed_answers, pretraining_documents, split_heldout
from vietnamese_ai.recipes.common import write_jsonl


def _chat_prompt(text: str) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": text}]}


def corpus(output_dir: str, classifier_corpora: int = 3) -> dict[str, Any]:
    """Training and held-out prompts never overlap; answers are 45% helpful, the rest rude, toxic or
    evasive (demo/corpus.py)."""
    train_qa, heldout_qa = split_heldout(exchanges())
    chats = [chat_record(qa, answer) for qa, _, answer in mixed_answers(train_qa, seed=1)]
    documents = pretraining_documents(train_qa, copies=3, mix=STYLE_MIX)
    write_jsonl(os.path.join(output_dir, "pretrain.jsonl"), [{"text": d} for d in documents])
    write_jsonl(os.path.join(output_dir, "sft.jsonl"), chats)
    write_jsonl(os.path.join(output_dir, "train_prompts.jsonl"), [_chat_prompt(qa.prompt) for qa in train_qa])
    # The corpus's helpful answer is each held-out prompt's reference: evaluate checks answers against it.
    write_jsonl(os.path.join(output_dir, "heldout_prompts.jsonl"),
                [{**_chat_prompt(qa.prompt), "reference": qa.answer} for qa in heldout_qa])
    # The tokenizer is trained on the documents and the user turns, so that every prompt is in vocabulary.
    write_jsonl(os.path.join(output_dir, "tokenizer_texts.jsonl"),
                [{"text": t} for t in documents + [c["prompt"][0]["content"] for c in chats]])
    texts = [(answer, style) for seed in range(1, classifier_corpora + 1) for _, style, answer in mixed_answers(train_qa, seed=seed)]
    write_jsonl(os.path.join(output_dir, "classifier.jsonl"), [{"text": t, "style": s} for t, s in texts])
    return {"training_prompts": len(train_qa), "heldout_prompts": len(heldout_qa), "chats": len(chats)}


def _texts(path: str, field: str = "text") -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)[field] for line in f if line.strip()]


def tiny_model(output_dir: str, texts: str, vocab_size: int = 2048, hidden_size: int = 128, num_layers: int = 4,
               num_heads: int = 4, num_kv_heads: int = 2, max_position_embeddings: int = 256) -> dict[str, Any]:
    """A tokenizer trained on `texts` (a JSONL file of {"text"}) and a randomly initialised model."""
    from vietnamese_ai.models.tiny import build_tiny_model
    from vietnamese_ai.recipes.common import quiet_transformers

    quiet_transformers()
    build_tiny_model(output_dir, _texts(texts), vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers,
                     num_heads=num_heads, num_kv_heads=num_kv_heads, max_position_embeddings=max_position_embeddings)
    return {"vocab_size": vocab_size, "hidden_size": hidden_size, "num_layers": num_layers}


def classifier(output_dir: str, base: str, texts: str, epochs: int = 2) -> dict[str, Any]:
    """The toxicity classifier (demo/classifier.py) from the pre-trained base model."""
    from vietnamese_ai.demo.classifier import train_toxicity_classifier

    return train_toxicity_classifier(base, _texts(texts), _texts(texts, "style"), output_dir, epochs=epochs)
