"""Candidate responses for AI feedback: N samples per prompt over several temperatures and top-p values.

Every (temperature, top_p, sample) setting is one batched, KV-cached, left-padded pass over all
prompts (models.generation), seeded from the setting, so the whole set is reproducible. A loop
that calls `generate` once per prompt is far slower; benchmarks/generation_speed.py measures the difference.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

from vietnamese_ai.data.types import PromptOrMessages
from vietnamese_ai.models.generation import GenerationStats, generate


@dataclass
class Candidate:
    prompt_index: int
    text: str
    temperature: float
    top_p: float
    sample: int

    @property
    def sampling(self) -> dict[str, float]:
        return {"temperature": self.temperature, "top_p": self.top_p, "sample": self.sample}


def setting_seed(seed: int, temperature: float, top_p: float, sample: int) -> int:
    """A stable seed per sampling setting (independent of the order settings are run in)."""
    digest = hashlib.sha256(f"{seed}:{temperature}:{top_p}:{sample}".encode()).hexdigest()
    return int(digest[:8], 16)


def generate_candidates(model: Any, tokenizer: Any, prompts: list[PromptOrMessages],
                        temperatures: tuple[float, ...] = (0.7, 1.0), top_ps: tuple[float, ...] = (1.0,),
                        samples_per_setting: int = 1, max_new_tokens: int = 64, batch_size: int = 32,
                        seed: int = 0, progress: bool = True) -> tuple[list[Candidate], GenerationStats]:
    """All candidates, grouped by setting; returns them and the overall generation speed."""
    candidates: list[Candidate] = []
    stats: list[GenerationStats] = []
    for temperature, top_p, sample in itertools.product(temperatures, top_ps, range(samples_per_setting)):
        texts = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                         batch_size=batch_size, seed=setting_seed(seed, temperature, top_p, sample),
                         progress=progress, stats=stats)
        candidates += [Candidate(i, text, temperature, top_p, sample) for i, text in enumerate(texts)]
    total = GenerationStats(sum(s.responses for s in stats), sum(s.seconds for s in stats), sum(s.tokens for s in stats))
    return candidates, total
