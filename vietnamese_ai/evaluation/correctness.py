"""Is an answer correct? Answer-vs-reference metrics for Vietnamese and English, after SQuAD.

An evaluation record may carry `reference`: one correct answer, or a list of them. Each model answer
is compared with every reference and keeps its best score. Both texts are first put through
`normalise`:

- NFC, then lowercase;
- punctuation removed: every character of a Unicode category P* (SQuAD removes ASCII
  `string.punctuation`, which misses „ « » … – and includes symbols such as $ + = that are not
  punctuation); like SQuAD it is deleted, not replaced by a space ("U.S." -> "us");
- English articles (a, an, the) removed as whole words, as SQuAD does, but only when the language
  is English: Vietnamese has no articles, and "an" is a Vietnamese word ("an toàn", safe; "bình an");
- whitespace collapsed to single spaces.

Where it departs from SQuAD's evaluation script (v1.1 `normalize_answer`): diacritics are kept, since
they tell Vietnamese words apart ("ma" ghost, "mà" but, "má" mother); "đ" stays "đ"; and articles are
dropped for English only.

The metrics, each in [0, 1] and the maximum over the references:

- exact_match: 1 if the normalised answer equals a normalised reference (SQuAD's EM);
- contains: 1 if a non-empty normalised reference occurs in the normalised answer as a run of whole
  words ("hà nội" in "thủ đô là hà nội", but "ha" not in "hanoi"); not in SQuAD, it credits a long
  answer that states the reference, which a chat model's answers usually are;
- token_f1: SQuAD's F1 of the bags of whitespace tokens, F1 = 2·P·R / (P + R) with P = shared / answer
  tokens and R = shared / reference tokens; 1 if both are empty, 0 if only one is. Vietnamese is
  written with a space between syllables, so its tokens are syllables, not words ("hà nội" is two).

`correctness_summary` averages them per prompt language (and over all), for eval.json.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections import Counter
from collections.abc import Callable
from typing import Any

from vietnamese_ai.data.text import detect_language
from vietnamese_ai.errors import DataError
from vietnamese_ai.evaluation.intervals import wilson

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")   # \b is Unicode-aware: the "a" of "bà" is not a word


def normalise(text: str, language: str = "en") -> str:
    """NFC, lowercase, no punctuation (Unicode P*), no English articles when `language` is "en",
    single spaces. Diacritics and "đ" are kept.

    >>> normalise("The Eiffel Tower, in Paris!")
    'eiffel tower in paris'
    >>> normalise("  Thủ đô là   HÀ NỘI. ", "vi")
    'thủ đô là hà nội'
    >>> normalise("An toàn «trước» tiên…", "vi")
    'an toàn trước tiên'
    >>> normalise("Don't U.S.")
    'dont us'
    """
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    if language == "en":
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _references(references: str | list[str]) -> list[str]:
    return [references] if isinstance(references, str) else list(references)


def exact_match(answer: str, references: str | list[str], language: str = "en") -> float:
    """1.0 if the normalised answer equals any normalised reference, else 0.0.

    >>> exact_match("Hà Nội.", ["Thành phố Hồ Chí Minh", "hà nội"], "vi")
    1.0
    >>> exact_match("ma", "mà", "vi")
    0.0
    """
    normalised = normalise(answer, language)
    return float(any(normalised == normalise(r, language) for r in _references(references)))


def contains(answer: str, references: str | list[str], language: str = "en") -> float:
    """1.0 if any non-empty normalised reference occurs in the normalised answer as whole words.

    >>> contains("Thủ đô là Hà Nội.", "Hà Nội", "vi")
    1.0
    >>> contains("hanoi", "ha")
    0.0
    """
    # Spaces around both sides make a substring match a whole-word one: " ha " is not in " hanoi ".
    padded = f" {normalise(answer, language)} "
    normalised = (normalise(r, language) for r in _references(references))
    return float(any(r and f" {r} " in padded for r in normalised))


def _f1(answer_tokens: list[str], reference_tokens: list[str]) -> float:
    if not answer_tokens or not reference_tokens:
        return float(answer_tokens == reference_tokens)
    shared = sum((Counter(answer_tokens) & Counter(reference_tokens)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(answer_tokens), shared / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(answer: str, references: str | list[str], language: str = "en") -> float:
    """SQuAD's token-overlap F1 of the normalised answer and reference, the maximum over references.

    >>> round(token_f1("Thủ đô là Hà Nội", "Hà Nội", "vi"), 3)   # P = 2/5, R = 2/2: 2·0.4·1 / 1.4
    0.571
    """
    tokens = normalise(answer, language).split()
    return max((_f1(tokens, normalise(r, language).split()) for r in _references(references)), default=0.0)


def reference_list(value: Any, where: str) -> list[str]:
    """A record's `reference` field as a non-empty list of non-empty strings; anything else is a
    DataError that names `where` and the field.

    >>> reference_list("Hà Nội", "eval.jsonl: line 1")
    ['Hà Nội']
    >>> reference_list(["Hà Nội", "Hanoi"], "eval.jsonl: line 1")
    ['Hà Nội', 'Hanoi']
    """
    def problem(got: str) -> DataError:
        return DataError.at(where, "reference", f"expected a string or a list of strings, got {got}")

    def blank(s: str) -> bool:
        return not s.strip()

    if isinstance(value, str):
        if blank(value):
            raise problem("an empty string")
        return [value]
    if not isinstance(value, list):
        raise problem(f"{type(value).__name__} {value!r:.60}")
    if not value:
        raise problem("an empty list")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise problem(f"{type(item).__name__} {item!r:.60} at position {i}")
        if blank(item):
            raise problem(f"an empty string at position {i}")
    return list(value)


def _means(scored: list[tuple[float, float, float]]) -> dict[str, Any]:
    """Means, with the 95% Wilson intervals of the two rates (exact match and contains are 0 or 1 per answer)."""
    em, cont, f1 = zip(*scored)
    return {"exact_match": statistics.fmean(em), "exact_match_ci95": wilson(int(sum(em)), len(em)),
            "contains": statistics.fmean(cont), "contains_ci95": wilson(int(sum(cont)), len(cont)),
            "token_f1": statistics.fmean(f1), "answers": len(scored)}


def correctness_summary(rows: list[dict[str, Any]], model: str,
                        language_of: Callable[[str], str] = detect_language) -> dict[str, dict[str, Any]]:
    """{language: {"exact_match", "contains", "token_f1": means, "answers": n}, ..., "all": the same over
    every row} for `model`'s answers (row["answers"][model]) to the rows that have a "reference".
    `language_of(row["prompt_text"])` gives a row's language (by default data.text.detect_language).
    {} when no row has a reference.

    >>> rows = [{"prompt_text": "Thủ đô?", "answers": {"m": "Hà Nội"}, "reference": ["Hà Nội"]},
    ...         {"prompt_text": "Capital?", "answers": {"m": "Paris"}}]
    >>> summary = correctness_summary(rows, "m", lambda text: "vi")
    >>> list(summary), summary["vi"]["exact_match"], summary["vi"]["token_f1"], summary["all"]["answers"]
    (['vi', 'all'], 1.0, 1.0, 1)
    """
    by_language: dict[str, list[tuple[float, float, float]]] = {}
    for i, row in enumerate(rows):
        if row.get("reference") is None:
            continue
        references = reference_list(row["reference"], f"evaluation row {i + 1}")
        language, answer = language_of(row["prompt_text"]), row["answers"][model]
        by_language.setdefault(language, []).append((exact_match(answer, references, language),
                                                     contains(answer, references, language),
                                                     token_f1(answer, references, language)))
    if not by_language:
        return {}
    summary = {language: _means(scored) for language, scored in sorted(by_language.items())}
    summary["all"] = _means([s for scored in by_language.values() for s in scored])
    return summary
