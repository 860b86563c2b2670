"""The demo's toxicity classifier: a real AutoModelForSequenceClassification, trained on the corpus's
own style labels (rude and toxic answers are "toxic", helpful and evasive ones "not_toxic") and saved
in Hugging Face format. It plays the part of the off-the-shelf hate-speech model in the PPO
detoxification recipe: its "not_toxic" logit is the PPO reward, its "toxic" probability the
evaluation's toxicity.

It starts from the pre-trained base model (its tokenizer and body) with a fresh two-way head, and a
few hundred steps of cross-entropy are enough on a corpus this regular.
"""

from __future__ import annotations

import random

import torch

LABELS = {0: "not_toxic", 1: "toxic"}   # index 0 is the "not hate" side, as in the seed recipe's classifier
TOXIC_STYLES = ("rude", "toxic")


def train_toxicity_classifier(base: str, texts: list[str], styles: list[str], output_dir: str, epochs: int = 3,
                              batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 0) -> dict[str, float]:
    """Train on (text, style) and save to `output_dir`; returns the training accuracy of the last epoch."""
    from transformers import AutoModelForSequenceClassification

    from vietnamese_ai.models.loading import load_tokenizer

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    labels = [int(s in TOXIC_STYLES) for s in styles]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    order = list(range(len(texts)))
    rng = random.Random(seed)
    model.train()
    for _ in range(epochs):
        rng.shuffle(order)
        correct = 0
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in chunk], padding=True, return_tensors="pt")
            target = torch.tensor([labels[i] for i in chunk])
            logits = model(**enc).logits
            loss = torch.nn.functional.cross_entropy(logits, target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            correct += int((logits.argmax(-1) == target).sum())
    model.eval()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return {"train_accuracy": correct / len(texts), "examples": len(texts), "toxic_share": sum(labels) / len(labels)}
