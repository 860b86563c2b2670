"""Text helpers for the rule scorers: Vietnamese-aware normalisation and lexicon matching.

Vietnamese is often typed without diacritics ("do ngoc" for "đồ ngốc"). Stripping diacritics from
everything would confuse words that differ only by them: "ngủ" (sleep) would match the insult "ngu".
So a text word matches a lexicon word if they are equal, or if the *text* word carries no diacritics
and equals the lexicon word with its diacritics removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from vietnamese_ai.data.text import fold, words


def _word_matches(text_word: str, lexicon_word: str) -> bool:
    return text_word == lexicon_word or (fold(text_word) == text_word and fold(lexicon_word) == text_word)


@dataclass
class Lexicon:
    """A list of (possibly multi-word) terms, counted in a text with the diacritics rule above."""

    name: str
    terms: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, terms: Iterable[str]) -> None:
        for term in terms:
            tokens = tuple(words(term))
            if tokens and tokens not in self.terms:
                self.terms.append(tokens)

    def matches(self, text_words: list[str]) -> list[str]:
        """Every occurrence of a term, longest terms first, without counting a word twice.

        >>> lex = Lexicon("insults"); lex.add(["ngu", "đồ ngốc"])
        >>> lex.matches(words("Đồ ngốc! Hỏi ngu thế, do ngoc, đi ngủ đi"))
        ['đồ ngốc', 'đồ ngốc', 'ngu']
        """
        used = [False] * len(text_words)
        found = []
        for term in sorted(self.terms, key=len, reverse=True):
            n = len(term)
            for i in range(len(text_words) - n + 1):
                if not any(used[i:i + n]) and all(_word_matches(text_words[i + k], term[k]) for k in range(n)):
                    used[i:i + n] = [True] * n
                    found.append(" ".join(term))
        return found

    def count(self, text_words: list[str]) -> int:
        return len(self.matches(text_words))


LEXICON_DIR = os.path.join(os.path.dirname(__file__), "lexicons")
BUILTIN_LEXICONS = ("insults", "toxicity", "profanity", "hedging", "refusal", "stopwords")


def read_terms(path: str) -> list[str]:
    """One term per line; blank lines and '#' comments are skipped."""
    with open(path, encoding="utf-8") as f:
        return [line.split("#", 1)[0].strip() for line in f if line.split("#", 1)[0].strip()]


def builtin_lexicon(name: str) -> Lexicon:
    lexicon = Lexicon(name)
    lexicon.add(read_terms(os.path.join(LEXICON_DIR, f"{name}.txt")))
    return lexicon
