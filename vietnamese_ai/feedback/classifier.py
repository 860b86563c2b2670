"""Any Hugging Face sequence classifier as a Scorer: a chosen label's probability or raw logit.

A detoxification run can reward the "not hate" logit of a toxicity model:

    ClassifierScorer("facebook/roberta-hate-speech-dynabench-r4-target", label="nothate", output="logit")
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from vietnamese_ai.data.types import PromptOrMessages, prompt_text
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.scoring import Score, check_lengths


class ClassifierScorer:
    def __init__(self, model: Any, label: str | int = 0, output: Literal["probability", "logit"] = "probability",
                 tokenizer: Any = None, batch_size: int = 32, include_prompt: bool = False, max_length: int = 512,
                 trust_remote_code: bool = False):
        from vietnamese_ai.models.loading import load_sequence_classifier, load_tokenizer

        path = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "classifier")
        self.model = load_sequence_classifier(model, trust_remote_code) if isinstance(model, str) else model
        self.tokenizer = tokenizer or load_tokenizer(path, trust_remote_code)
        if output not in ("probability", "logit"):
            raise ConfigError(f"output: expected 'probability' or 'logit', got '{output}'")
        self.index = self._label_index(label)
        self.output, self.batch_size, self.include_prompt, self.max_length = output, batch_size, include_prompt, max_length
        self.name = f"classifier:{path}:{label}"

    def _label_index(self, label: str | int) -> int:
        config = self.model.config
        if isinstance(label, int) or (isinstance(label, str) and label.isdigit()):
            index = int(label)
            if not 0 <= index < config.num_labels:
                raise ConfigError(f"label: index {index} is out of range for {config.num_labels} labels")
            return index
        names = {str(name).lower(): int(i) for name, i in (config.label2id or {}).items()}
        if label.lower() not in names:
            raise ConfigError(f"label: '{label}' is not a label of this classifier; labels: {', '.join(sorted(names))}")
        return names[label.lower()]

    @torch.no_grad()
    def values(self, prompts: list[PromptOrMessages], responses: list[str]) -> list[float]:
        check_lengths(prompts, responses)
        texts = [f"{prompt_text(p)}\n{r}" if self.include_prompt else r for p, r in zip(prompts, responses)]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(device)
            logits = self.model(**enc).logits.float()
            column = logits[:, self.index] if self.output == "logit" else torch.softmax(logits, -1)[:, self.index]
            out += column.tolist()
        self.model.train(was_training)
        return out

    def score(self, prompts: list[PromptOrMessages], responses: list[str]) -> list[Score]:
        return [Score(v) for v in self.values(prompts, responses)]
