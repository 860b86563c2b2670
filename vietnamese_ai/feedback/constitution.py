"""The constitution: principles with an id, a weight, and a description plus critique and revision
requests in Vietnamese and English.

YAML schema (see default_constitution.yaml):

    name: my-constitution
    principles:
      - id: harmless                 # unique
        weight: 1.0                  # >= 0; the overall score is the weighted mean
        rule: harmless               # optional: a built-in rule (feedback/rules.py: RULES);
                                     # defaults to the id when that is a rule name
        description: {vi: ..., en: ...}
        critique: {vi: ..., en: ...}
        revision: {vi: ..., en: ...}
    lexicons:                        # optional: extra terms for the built-in lexicons
      insults: [extra_insults.txt, "some phrase"]   # files (relative to the YAML) or inline terms

A user constitution is validated like data: the first problem stops with one line naming the file,
the principle and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from vietnamese_ai.data.loading import read_yaml
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.feedback.text import BUILTIN_LEXICONS, Lexicon, builtin_lexicon, read_terms

LANGUAGES = ("vi", "en")
DEFAULT_PATH = os.path.join(os.path.dirname(__file__), "default_constitution.yaml")


@dataclass
class Principle:
    id: str
    weight: float
    rule: str
    description: dict[str, str]
    critique: dict[str, str]
    revision: dict[str, str]


@dataclass
class Constitution:
    name: str
    principles: list[Principle]
    lexicons: dict[str, Lexicon] = field(default_factory=dict)

    def weights(self) -> dict[str, float]:
        return {p.id: p.weight for p in self.principles}

    def principle(self, principle_id: str) -> Principle:
        for p in self.principles:
            if p.id == principle_id:
                return p
        raise KeyError(principle_id)


def _texts(source: str, where: str, item: dict[str, Any], key: str) -> dict[str, str]:
    value = item.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {where}: field '{key}': expected a mapping with 'vi' and 'en' texts")
    for lang in LANGUAGES:
        if not isinstance(value.get(lang), str) or not value[lang].strip():
            raise ConfigError(f"{source}: {where}: field '{key}.{lang}': missing or empty")
    return {lang: value[lang] for lang in LANGUAGES}


def parse_constitution(data: Any, source: str, base_dir: str = ".") -> Constitution:
    from vietnamese_ai.feedback.rules import RULES

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with 'principles'")
    principles_data = data.get("principles")
    if not isinstance(principles_data, list) or not principles_data:
        raise ConfigError(f"{source}: field 'principles': expected a non-empty list")
    principles, seen = [], set()
    for i, item in enumerate(principles_data):
        where = f"principles[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: {where}: expected a mapping")
        pid = item.get("id")
        if not isinstance(pid, str) or not pid.strip():
            raise ConfigError(f"{source}: {where}: field 'id': missing or not a string")
        if pid in seen:
            raise ConfigError(f"{source}: {where}: field 'id': '{pid}' appears twice")
        seen.add(pid)
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(f"{source}: {where} ({pid}): field 'weight': expected a number >= 0, got {weight!r}")
        rule = item.get("rule", pid)
        if rule not in RULES:
            raise ConfigError(f"{source}: {where} ({pid}): field 'rule': unknown rule '{rule}'; "
                              f"built-in rules: {', '.join(sorted(RULES))}")
        principles.append(Principle(pid, float(weight), rule, _texts(source, f"{where} ({pid})", item, "description"),
                                    _texts(source, f"{where} ({pid})", item, "critique"),
                                    _texts(source, f"{where} ({pid})", item, "revision")))
    if sum(p.weight for p in principles) <= 0:
        raise ConfigError(f"{source}: the principle weights sum to 0")
    lexicons = {name: builtin_lexicon(name) for name in BUILTIN_LEXICONS}
    extra = data.get("lexicons") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{source}: field 'lexicons': expected a mapping of lexicon name to a list")
    for name, entries in extra.items():
        if name not in lexicons:
            raise ConfigError(f"{source}: field 'lexicons.{name}': unknown lexicon; use one of {', '.join(BUILTIN_LEXICONS)}")
        if not isinstance(entries, list):
            raise ConfigError(f"{source}: field 'lexicons.{name}': expected a list of files or terms")
        for entry in entries:
            path = os.path.join(base_dir, str(entry))
            lexicons[name].add(read_terms(path) if os.path.isfile(path) else [str(entry)])
    return Constitution(str(data.get("name", os.path.basename(source))), principles, lexicons)


def load_constitution(path: str | None = None) -> Constitution:
    """The built-in constitution, or a user YAML file (read with files.load_yaml: a key given twice is refused)."""
    path = path or DEFAULT_PATH
    return parse_constitution(read_yaml(path, "constitution"), path, os.path.dirname(os.path.abspath(path)))
