"""Self-Instruct (Wang et al., 2023, "Self-Instruct: Aligning Language Models with Self-Generated
Instructions"): a language model proposes new instructions after a few shown ones.

Each request shows up to `seeds_per_prompt` seed instructions and up to `generated_per_prompt`
instructions kept earlier (the paper: 8 in all, 6 human-written and 2 generated), shuffled, as a
numbered list that the model continues:

    Come up with a series of tasks:
    Task 1: <instruction>
    ...
    Task 9:

The continuation is cut at its first blank line and split at every "Task k:"; each piece is a candidate.
A candidate is kept if it passes the filters (InstructionFilter: length in words, a letter first, no
banned word, the requested language) and is new: not the same as a seed or a kept
instruction after normalisation, and of ROUGE-L below max_similarity (the paper: 0.7) with every one of
them (feedback.prompts.NoveltyIndex). A kept instruction is held at once, so later candidates of the
same round are compared with it too. Rounds of requests run until num_prompts are kept or max_rounds
have run.

Where this departs from the paper:
- instructions only: no classification / non-classification split and no step that writes input-output
  instances for them (`vietnamese-ai feedback generate` answers the prompts instead);
- the model is whatever you give it (the paper: GPT-3 davinci); the request is plain text, without a
  chat template, so a base model continues it best;
- a Vietnamese request has a Vietnamese header and "Nhiệm vụ k:"; seeds are shown in their own language;
- ROUGE-L is computed on data.text.words tokens (lowercase, no stemming), not rouge-score's tokenizer;
- a candidate cut off by max_new_tokens is dropped (`cut_off`) rather than kept half-written.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vietnamese_ai.data.text import detect_language, words
from vietnamese_ai.feedback.generate import setting_seed
from vietnamese_ai.feedback.prompts import LANGUAGES, NoveltyIndex, normalise
from vietnamese_ai.models.generation import sample

# Self-Instruct's list of what a text-only model cannot do (its code's blacklist), and Vietnamese
# equivalents; matched as whole words, so "map" does not drop "mapping". A bare "ảnh" (photo) is left
# out, as it begins "ảnh hưởng" (influence), and so is "đi đến", which mostly means "arrive at".
BANNED_WORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
                "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
                "hình ảnh", "bức ảnh", "bức tranh", "biểu đồ", "đồ thị", "tệp", "tập tin", "bản đồ", "vẽ",
                "âm thanh", "âm nhạc", "lưu đồ", "sơ đồ")
# language -> (the request's first line, the word before each number)
HEADERS = {"en": ("Come up with a series of tasks:", "Task"), "vi": ("Hãy nghĩ ra một loạt nhiệm vụ:", "Nhiệm vụ")}
MARKER = re.compile(r"(?:^|\n)[ \t]*(?:Task|Nhiệm vụ)[ \t]*\d+[ \t]*[:.]", re.IGNORECASE)

# (requests, round) -> one (continuation, ended with EOS) per request
SampleFn = Callable[[list[str], int], list[tuple[str, bool]]]


@dataclass
class InstructionFilter:
    """Self-Instruct's filters for a proposed instruction; `rejects` names the first one it fails."""

    languages: tuple[str, ...] = LANGUAGES
    min_words: int = 4        # the paper's code keeps 4 to 150 words
    max_words: int = 150
    banned_words: tuple[str, ...] = BANNED_WORDS

    def rejects(self, text: str) -> str | None:
        tokens = words(text)
        if not self.min_words <= len(tokens) <= self.max_words:
            return "length"
        if not text[:1].isalpha():
            return "non_letter_start"
        if any(_contains(tokens, words(phrase)) for phrase in self.banned_words):
            return "banned_word"
        if detect_language(text) not in self.languages:
            return "language"
        return None


def _contains(tokens: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(tokens[i:i + n] == phrase for i in range(len(tokens) - n + 1))


@dataclass
class Proposal:
    text: str
    language: str          # detected in the text
    round: int             # 0-based
    shown: list[str]       # the instructions the request showed


@dataclass
class SelfInstructRun:
    kept: list[Proposal]
    generated: int                                            # candidates examined
    dropped: Counter[str] = field(default_factory=Counter)    # filter name -> candidates it dropped
    rounds: int = 0


def build_request(shown: Sequence[str], language: str) -> str:
    """The numbered list the model continues.

    >>> print(build_request(["Name a river.", "Define AI."], "en"))
    Come up with a series of tasks:
    Task 1: Name a river.
    Task 2: Define AI.
    Task 3:
    """
    header, label = HEADERS[language]
    lines = [header, *(f"{label} {k}: {text}" for k, text in enumerate(shown, start=1)), f"{label} {len(shown) + 1}:"]
    return "\n".join(lines)


def parse_continuation(text: str, finished: bool) -> tuple[list[str], int]:
    """The candidate instructions in a continuation of `build_request`, and how many were cut off (the
    last piece, when generation stopped at max_new_tokens before a blank line or EOS).

    >>> parse_continuation(" Name three rivers.\\nTask 4: Translate 'hello'\\n into French.\\n\\nTask 5: x", True)
    (['Name three rivers.', "Translate 'hello' into French."], 0)
    >>> parse_continuation(" Name three rivers.\\nTask 4: Translate", False)
    (['Name three rivers.'], 1)
    """
    ended = "\n\n" in text
    pieces = [normalise(p) for p in MARKER.split(text.split("\n\n", 1)[0])]
    cut = 0
    if not finished and not ended and pieces:
        cut = int(bool(pieces.pop()))
    return [p for p in pieces if p], cut


def self_instruct(sample_fn: SampleFn, seeds: dict[str, list[str]], num_prompts: int, filters: InstructionFilter,
                  max_similarity: float = 0.7, seeds_per_prompt: int = 6, generated_per_prompt: int = 2,
                  requests_per_round: int = 16, max_rounds: int = 10, seed: int = 0) -> SelfInstructRun:
    """Rounds of requests until `num_prompts` instructions are kept or `max_rounds` have run. `seeds` maps
    each requested language (taking turns across requests) onto its seed instructions."""
    rng = random.Random(seed)
    languages = list(seeds)
    novelty = NoveltyIndex(max_similarity)
    for texts in seeds.values():
        for text in texts:
            novelty.add(text)
    run = SelfInstructRun([], 0)
    kept_by_language: dict[str, list[str]] = {lang: [] for lang in languages}
    while len(run.kept) < num_prompts and run.rounds < max_rounds:
        shown_lists, requests = [], []
        for k in range(requests_per_round):
            lang = languages[k % len(languages)]
            own = kept_by_language[lang]
            shown = rng.sample(seeds[lang], min(seeds_per_prompt, len(seeds[lang]))) + \
                rng.sample(own, min(generated_per_prompt, len(own)))
            rng.shuffle(shown)
            shown_lists.append(shown)
            requests.append(build_request(shown, lang))
        for shown, (continuation, finished) in zip(shown_lists, sample_fn(requests, run.rounds)):
            candidates, cut = parse_continuation(continuation, finished)
            run.generated += cut
            run.dropped["cut_off"] += cut
            for text in candidates:
                if len(run.kept) == num_prompts:   # none examined past the target
                    break
                run.generated += 1
                reason = filters.rejects(text) or novelty.rejects(text)
                if reason:
                    run.dropped[reason] += 1
                    continue
                language = detect_language(text)
                novelty.add(text)
                kept_by_language.setdefault(language, []).append(text)
                run.kept.append(Proposal(text, language, run.rounds, shown))
        run.rounds += 1
    run.dropped = +run.dropped   # drop the zero counts
    return run


def model_sample_fn(model: Any, tokenizer: Any, max_new_tokens: int, temperature: float, top_p: float,
                    batch_size: int, seed: int, progress: bool = False) -> SampleFn:
    """A SampleFn backed by a causal LM: one batched, seeded sampling pass per round (models.generation)."""
    def sample_round(requests: list[str], round_index: int) -> list[tuple[str, bool]]:
        samples = sample(model, tokenizer, requests, max_new_tokens=max_new_tokens, temperature=temperature,
                         top_p=top_p, batch_size=batch_size, seed=setting_seed(seed, temperature, top_p, round_index),
                         progress=progress)
        return [(s.text, s.finished) for s in samples]

    return sample_round
