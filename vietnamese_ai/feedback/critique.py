"""Critique -> revision: the supervised stage of constitutional AI (Bai et al., 2022, Section 3).

For each (prompt, response) a principle is sampled; the model is asked, in the prompt's language, to
critique its response against that principle, then to revise it in the light of the critique. The
revisions become SFT data (prompt -> revision) and pairs that prefer the revision to the original.

A model's revision can be worse than its answer (a polite answer "revised" into an insult), so a
scorer filters both: by default a revision becomes an SFT row or a pair only when it scores higher
than its original. Every row records both scores.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vietnamese_ai.data.types import Conversation, Message, PromptOrMessages, message_dicts, prompt_text
from vietnamese_ai.feedback.constitution import Constitution
from vietnamese_ai.data.text import detect_language
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


@dataclass
class RevisionRecords:
    sft: list[dict[str, Any]]       # prompt -> revision rows
    pairs: list[dict[str, Any]]     # revision (chosen) over original (rejected)
    revisions: int                  # non-empty revisions
    not_better: int                 # of those, scored no higher than their original (None scorer: 0)
    worse: int                      # of those, scored lower


def revision_records(revisions: list[Revision], scorer: Scorer | None = None, filter_sft: bool = True,
                     filter_pairs: bool = True) -> RevisionRecords:
    """SFT rows and preference rows from revisions. With a scorer, every row carries the revision's and
    the original's scores, and a filtered kind keeps only revisions that score higher than their
    original (a revision the scorer rates worse must not be taught). Without one, nothing is filtered:
    every non-empty revision is an SFT row and every changed one a pair."""
    written = [r for r in revisions if r.revision.strip()]
    if scorer is not None and written:
        prompts = [r.prompt for r in written]
        before = [s.value for s in scorer.score(prompts, [r.original for r in written])]
        after = [s.value for s in scorer.score(prompts, [r.revision for r in written])]
    else:
        before = after = [None] * len(written)
    better = [a is None or a > b for a, b in zip(after, before)]
    provenance = {} if scorer is None else {"scorer": scorer.name}
    sft, pairs = [], []
    for r, b, a, good in zip(written, before, after, better):
        scores = {} if a is None else {"revision_score": a, "original_score": b}
        if good or not filter_sft:
            sft.append({"prompt": message_dicts(r.prompt), "completion": [{"role": "assistant", "content": r.revision}],
                        "principle": r.principle, "critique": r.critique, "original": r.original, **scores, **provenance})
        if (good or not filter_pairs) and r.revision.strip() != r.original.strip():
            gap = {} if a is None else {"chosen_score": a, "rejected_score": b, "score_gap": a - b}
            pairs.append({"prompt": message_dicts(r.prompt), "chosen": [{"role": "assistant", "content": r.revision}],
                          "rejected": [{"role": "assistant", "content": r.original}], "principle": r.principle,
                          "critique": r.critique, **gap, **provenance})
    worse = sum(a is not None and a < b for a, b in zip(after, before))
    return RevisionRecords(sft, pairs, len(written), better.count(False), worse)


def model_generate_fn(model: Any, tokenizer: Any, max_new_tokens: int = 96, temperature: float = 0.0,
                      batch_size: int = 16, seed: int = 0) -> GenerateFn:
    """A GenerateFn backed by a causal LM (greedy by default)."""
    from vietnamese_ai.models.generation import generate

    return lambda conversations: generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                                          temperature=temperature, batch_size=batch_size, seed=seed)
