"""Critique -> revision: the supervised stage of constitutional AI (Bai et al., 2022, Section 3).

For each (prompt, response) a principle is sampled; the model is asked, in the prompt's language, to
critique its response against that principle, then to revise it in the light of the critique. The
revisions are SFT data (prompt -> revision); optionally, pairs prefer the revision to the original,
kept only when a scorer agrees that the revision is better.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vietnamese_ai.data.types import Conversation, Message, PromptOrMessages, message_dicts, prompt_text
from vietnamese_ai.feedback.constitution import Constitution
from vietnamese_ai.feedback.text import detect_language
from vietnamese_ai.scoring import Scorer

# Conversations in, one generated reply per conversation out.
GenerateFn = Callable[[list[Conversation]], list[str]]


@dataclass
class Revision:
    prompt: PromptOrMessages
    original: str
    principle: str
    critique: str
    revision: str


def _as_conversation(prompt: PromptOrMessages) -> Conversation:
    return [Message("user", prompt)] if isinstance(prompt, str) else list(prompt)


def critique_and_revise(generate_fn: GenerateFn, prompts: list[PromptOrMessages], responses: list[str],
                        constitution: Constitution, seed: int = 0) -> list[Revision]:
    rng = random.Random(seed)
    principles = [rng.choice(constitution.principles) for _ in prompts]
    langs = [detect_language(prompt_text(p)) for p in prompts]
    base = [_as_conversation(p) + [Message("assistant", r)] for p, r in zip(prompts, responses)]
    critique_turns = [b + [Message("user", principle.critique[lang])] for b, principle, lang in zip(base, principles, langs)]
    critiques = generate_fn(critique_turns)
    revision_turns = [c + [Message("assistant", critique), Message("user", principle.revision[lang])]
                      for c, critique, principle, lang in zip(critique_turns, critiques, principles, langs)]
    revisions = generate_fn(revision_turns)
    return [Revision(p, r, principle.id, c, v) for p, r, principle, c, v in
            zip(prompts, responses, principles, critiques, revisions)]


def revision_records(revisions: list[Revision], scorer: Scorer | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(SFT rows: prompt -> revision, preference rows: revision over original). With a scorer, only
    revisions that score higher than their original become pairs."""
    sft = [{"prompt": message_dicts(r.prompt), "completion": [{"role": "assistant", "content": r.revision}],
            "principle": r.principle, "critique": r.critique, "original": r.original}
           for r in revisions if r.revision.strip()]
    candidates = [r for r in revisions if r.revision.strip() and r.revision.strip() != r.original.strip()]
    if scorer is not None and candidates:
        prompts = [r.prompt for r in candidates]
        before = scorer.score(prompts, [r.original for r in candidates])
        after = scorer.score(prompts, [r.revision for r in candidates])
        candidates = [r for r, b, a in zip(candidates, before, after) if a.value > b.value]
    pairs = [{"prompt": message_dicts(r.prompt), "chosen": [{"role": "assistant", "content": r.revision}],
              "rejected": [{"role": "assistant", "content": r.original}], "principle": r.principle,
              "critique": r.critique} for r in candidates]
    return sft, pairs


def model_generate_fn(model: Any, tokenizer: Any, max_new_tokens: int = 96, temperature: float = 0.0,
                      batch_size: int = 16, seed: int = 0) -> GenerateFn:
    """A GenerateFn backed by a causal LM (greedy by default)."""
    from vietnamese_ai.models.generation import generate

    return lambda conversations: generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                                          temperature=temperature, batch_size=batch_size, seed=seed)
