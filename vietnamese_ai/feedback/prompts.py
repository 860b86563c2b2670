"""Prompts nobody had to write: a template x slot-filler engine, and what tells a new prompt from those
held already (normalised equality, and ROUGE-L as Self-Instruct (Wang et al., 2023) measures it).

Template file (YAML; the built-in one is prompt_templates.yaml beside this file):

    extends: default            # optional: add to the built-in file; without it, this file stands alone
    slots:                      # per language: slot name -> fillers
      vi: {topic: [quang hợp, lạm phát], audience: [học sinh cấp ba]}
      en: {topic: [photosynthesis, inflation], audience: [a high-school student]}
    templates:                  # per language: template id -> text with {slot} placeholders
      vi: {explain: "Hãy giải thích {topic} cho {audience}."}
      en: {explain: "Explain {topic} to {audience}."}

With `extends: default` a slot's fillers are added to the built-in ones and a template whose id is
built in replaces that one. A prompt is one template with one filler for each slot it names, so
a template contributes the product of its slots' sizes; {{ and }} stand for literal braces.
"""

from __future__ import annotations

import math
import os
import random
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vietnamese_ai.data.loading import read_yaml
from vietnamese_ai.data.text import fold, words
from vietnamese_ai.errors import ConfigError

LANGUAGES = ("vi", "en")
DEFAULT_TEMPLATES = os.path.join(os.path.dirname(__file__), "prompt_templates.yaml")


@dataclass(frozen=True)
class Template:
    id: str
    language: str
    text: str
    slots: tuple[str, ...]   # the distinct placeholders, in order of first use


@dataclass
class TemplateSet:
    source: str
    slots: dict[str, dict[str, list[str]]]   # language -> slot -> fillers
    templates: dict[str, list[Template]]     # language -> its templates

    def combinations(self, template: Template) -> int:
        return math.prod(len(self.slots[template.language][s]) for s in template.slots)

    def size(self, languages: Sequence[str]) -> int:
        """Every (template, fillers) combination in these languages: an upper bound on distinct prompts."""
        return sum(self.combinations(t) for lang in languages for t in self.templates.get(lang, []))


def normalise(text: str) -> str:
    """Whitespace collapsed to single spaces."""
    return " ".join(text.split())


def prompt_key(text: str) -> str:
    """What two prompts must share to count as the same one: folded (lowercase, no diacritics) text.

    >>> prompt_key("  Giải thích   Lạm phát. ") == prompt_key("giai thich lam phat.")
    True
    """
    return fold(normalise(text))


def _mapping(value: Any, where: str, of_languages: bool = False) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    for key in value if of_languages else ():
        if key not in LANGUAGES:
            raise ConfigError(f"{where}: unknown language '{key}'; languages: {', '.join(LANGUAGES)}")
    return value


def _check_shape(data: dict[str, Any], source: str) -> None:
    """Known top-level keys; `slots` and `templates` map languages onto mappings."""
    unknown = set(data) - {"extends", "slots", "templates"}
    if unknown:
        raise ConfigError(f"{source}: unknown key '{sorted(unknown)[0]}'; a template file has: extends, slots, templates")
    for key in ("slots", "templates"):
        for lang, value in _mapping(data.get(key) or {}, f"{source}: field '{key}'", of_languages=True).items():
            _mapping(value, f"{source}: field '{key}.{lang}'")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base` (both of the checked shape): fillers appended, each once; templates added, or
    replaced by id."""
    slots = {lang: {k: list(v) for k, v in by_slot.items()} for lang, by_slot in (base.get("slots") or {}).items()}
    for lang, by_slot in (extra.get("slots") or {}).items():
        for name, fillers in by_slot.items():
            known = slots.setdefault(lang, {}).setdefault(name, [])
            if not isinstance(fillers, list):   # refused by parse_templates, naming the slot
                slots[lang][name] = fillers
                continue
            known += [f for f in fillers if f not in known]
    templates = {lang: dict(by_id) for lang, by_id in (base.get("templates") or {}).items()}
    for lang, by_id in (extra.get("templates") or {}).items():
        templates.setdefault(lang, {}).update(by_id)
    return {"slots": slots, "templates": templates}


def placeholders(text: str, where: str) -> tuple[str, ...]:
    """The slot names a template uses; anything but a plain {name} is refused."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(text)
                  if name is not None]
    except ValueError as e:   # an unmatched brace
        raise ConfigError(f"{where}: {e}; write {{{{ and }}}} for literal braces") from None
    for name, spec, conversion in fields:
        if not name.isidentifier() or spec or conversion:
            raise ConfigError(f"{where}: '{text}': a placeholder is a plain {{slot_name}}")
    return tuple(dict.fromkeys(name for name, _, _ in fields))


def parse_templates(data: dict[str, Any], source: str) -> TemplateSet:
    _check_shape(data, source)
    slots: dict[str, dict[str, list[str]]] = {}
    for lang, by_slot in (data.get("slots") or {}).items():
        for name, fillers in by_slot.items():
            where = f"{source}: slot '{lang}.{name}'"
            if not isinstance(fillers, list) or not fillers or not all(isinstance(f, str) and f.strip() for f in fillers):
                raise ConfigError(f"{where}: expected a non-empty list of non-empty texts")
            slots.setdefault(lang, {})[str(name)] = list(dict.fromkeys(normalise(f) for f in fillers))
    templates: dict[str, list[Template]] = {}
    for lang, by_id in (data.get("templates") or {}).items():
        for template_id, text in by_id.items():
            where = f"{source}: template '{lang}.{template_id}'"
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"{where}: expected a non-empty text")
            names = placeholders(text, where)
            for name in names:
                if name not in slots.get(lang, {}):
                    raise ConfigError(f"{where}: unknown slot '{name}'; slots in {lang}: "
                                      f"{', '.join(slots.get(lang, {})) or 'none'}")
            templates.setdefault(lang, []).append(Template(str(template_id), lang, text, names))
    if not templates:
        raise ConfigError(f"{source}: no templates")
    return TemplateSet(source, slots, templates)


def load_templates(path: str | None = None) -> TemplateSet:
    """The built-in templates, or a user file (on its own, or over them with `extends: default`)."""
    if path is None:
        return parse_templates(read_yaml(DEFAULT_TEMPLATES, "template"), DEFAULT_TEMPLATES)
    data = read_yaml(path, "template")
    extends = data.get("extends")
    if extends not in (None, "default"):
        raise ConfigError(f"{path}: field 'extends': expected 'default' (or leave it out), got {extends!r}")
    if extends == "default":
        _check_shape(data, path)   # before the merge, so that a mistake names the user's file
        data = {"extends": extends, **_merge(read_yaml(DEFAULT_TEMPLATES, "template"), data)}
    return parse_templates(data, path)


@dataclass
class TemplatePrompt:
    text: str
    language: str
    template: str                 # the template's id
    slots: dict[str, str]         # slot -> the filler used


def _unused_index(rng: random.Random, size: int, used: set[int]) -> int:
    """A uniformly drawn index in range(size) not yet in `used` (which must not be full). Rejection while
    most are free; the free ones listed once half are used, so a nearly spent template costs no more
    than the prompts already drawn."""
    if 2 * len(used) < size:
        while (index := rng.randrange(size)) in used:
            pass
    else:
        index = rng.choice([i for i in range(size) if i not in used])
    used.add(index)
    return index


def draw_prompts(templates: TemplateSet, num_prompts: int, languages: Sequence[str],
                 seed: int) -> tuple[list[TemplatePrompt], int]:
    """Up to `num_prompts` prompts distinct after normalisation (prompt_key), and how many drawn ones were
    dropped as duplicates. Languages take turns; a language draws a template uniformly, then one of its
    unused filler combinations, so no combination is drawn twice and the draw ends when all are spent."""
    missing = [lang for lang in languages if not templates.templates.get(lang)]
    if missing:
        raise ConfigError(f"languages: {templates.source} has no templates in {', '.join(missing)}")
    total = templates.size(languages)
    if num_prompts > total:
        raise ConfigError(f"num_prompts={num_prompts}: {templates.source} gives only {total} template x filler "
                          f"combinations in {', '.join(languages)}; lower num_prompts or add fillers or templates")
    rng = random.Random(seed)
    open_templates = {lang: list(templates.templates[lang]) for lang in languages}
    used: dict[tuple[str, str], set[int]] = {}
    seen: set[str] = set()
    prompts: list[TemplatePrompt] = []
    duplicates = turn = 0
    while len(prompts) < num_prompts and any(open_templates.values()):
        lang = languages[turn % len(languages)]
        turn += 1
        if not open_templates[lang]:
            continue
        template = rng.choice(open_templates[lang])
        size = templates.combinations(template)
        taken = used.setdefault((lang, template.id), set())
        index = _unused_index(rng, size, taken)
        if len(taken) == size:
            open_templates[lang].remove(template)
        values = {}
        for name in template.slots:   # the index, read as a mixed-radix number over the slots' fillers
            index, digit = divmod(index, len(templates.slots[lang][name]))
            values[name] = templates.slots[lang][name][digit]
        text = normalise(template.text.format_map(values))
        if prompt_key(text) in seen:
            duplicates += 1
            continue
        seen.add(prompt_key(text))
        prompts.append(TemplatePrompt(text, lang, template.id, values))
    return prompts, duplicates


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest common subsequence of two token lists (dynamic programming, one row).

    >>> lcs_length("a b c d".split(), "a c b d".split())
    3
    """
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0   # row[j - 1] of the previous row
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F-measure (Lin, 2004) of two token lists, as Self-Instruct measures near-duplicates:

        P = LCS / |candidate|,  R = LCS / |reference|,  F = 2PR / (P + R) = 2 LCS / (|candidate| + |reference|)

    "explain the water cycle" and "explain the carbon cycle to a child" share "explain the cycle":
    LCS = 3, so F = 2 * 3 / (4 + 7) = 6/11.

    >>> round(rouge_l(words("Explain the water cycle."), words("Explain the carbon cycle to a child.")), 4)
    0.5455
    """
    if not candidate or not reference:
        return 0.0
    return 2 * lcs_length(candidate, reference) / (len(candidate) + len(reference))


class NoveltyIndex:
    """The prompts held so far (seeds and kept ones). A new prompt is a `duplicate` if its prompt_key is
    held, `similar` if its ROUGE-L with any held prompt is >= max_similarity (Self-Instruct: 0.7)."""

    def __init__(self, max_similarity: float):
        self.max_similarity = max_similarity
        self.keys: set[str] = set()
        self.held: list[tuple[list[str], Counter[str]]] = []

    def add(self, text: str) -> None:
        tokens = words(text)
        self.keys.add(prompt_key(text))
        self.held.append((tokens, Counter(tokens)))

    def rejects(self, text: str) -> str | None:
        if prompt_key(text) in self.keys:
            return "duplicate"
        tokens = words(text)
        bag = Counter(tokens)
        for other, other_bag in self.held:
            # The LCS is at most the tokens two prompts share (as multisets): most pairs are ruled out
            # by that bound, without the quadratic LCS.
            shared = sum((bag & other_bag).values())
            if 2 * shared / max(len(tokens) + len(other), 1) >= self.max_similarity \
                    and rouge_l(tokens, other) >= self.max_similarity:
                return "similar"
        return None
