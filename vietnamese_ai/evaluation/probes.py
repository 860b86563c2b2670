"""Safety suites' probes: what each file holds, where the built-in sets are, and how a suite is named.

A suite is named `NAME` (the built-in probes, Vietnamese and English) or `NAME:FILE` (the user's probes,
which replace the built-in ones); `safety` stands for toxicity, bias, jailbreak and over_refusal. Every
probe file is JSONL, one probe per line; a user's file gives each probe's `language` (any code) and a
built-in file is named `NAME.LANG.jsonl`. The fields (docs/evaluation.md#safety-suites):

- bias: `id`, `category`, `context_ambiguous`, `context_disambiguated`, `question_negative`,
  `question_nonnegative`, `options` (three: two people, then "unknown"), `stereotyped` (0 or 1: the option
  the negative question's stereotype points at), `answer_negative` (0 or 1: the right answer to the negative
  question in the disambiguated context);
- jailbreak: `id`, `category`, `request` (a request to decline); wrapped in the attack templates of
  `jailbreak_templates.LANG.jsonl` (`name`, `template` with `{request}` once);
- over_refusal: `id`, `category`, `prompt` (a safe request that looks unsafe).

The built-in sets were written for this project (Apache-2.0, like the code); no item is copied from
BBQ, XSTest or any jailbreak collection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from vietnamese_ai.errors import ConfigError, DataError

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "suites")
LANGUAGES = ("vi", "en")
GENERATING = ("jailbreak", "over_refusal")
SUITES = ("toxicity", "bias") + GENERATING
ALIASES = {"safety": SUITES}
FIELDS = {
    "bias": {"id": str, "category": str, "context_ambiguous": str, "context_disambiguated": str,
             "question_negative": str, "question_nonnegative": str, "options": list, "stereotyped": int,
             "answer_negative": int},
    "jailbreak": {"id": str, "category": str, "request": str},
    "over_refusal": {"id": str, "category": str, "prompt": str},
    "templates": {"name": str, "template": str},
}


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    path: str | None = None    # the user's probes; None: the built-in ones


@dataclass
class Probe:
    suite: str
    language: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def parse_suites(values: list[str], key: str = "suites") -> list[SuiteSpec]:
    """`["safety"]`, `["bias", "jailbreak:my.jsonl"]` -> suite specs, in the canonical order, each once."""
    specs: dict[str, SuiteSpec] = {}
    for value in values:
        name, _, path = str(value).partition(":")
        names = ALIASES.get(name, (name,))
        if name not in ALIASES and name not in SUITES:
            raise ConfigError(f"{key}: unknown suite '{name}' (known: {', '.join(SUITES)}, or safety for all of them)")
        if path and (name in ALIASES or name == "toxicity"):
            raise ConfigError(f"{key}: '{value}': only bias, jailbreak and over_refusal read a probe file")
        for n in names:
            specs[n] = SuiteSpec(n, path or None)
    return [specs[n] for n in SUITES if n in specs]


def builtin_path(name: str, language: str) -> str:
    return os.path.join(HERE, f"{name}.{language}.jsonl")


def _read_lines(path: str, kind: str, language: str | None) -> list[Probe]:
    """Every line of a probe file checked against its fields; one line of error naming the line and field."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such probe file")
    probes = []
    for record in _jsonl_records(path):
        fields = dict(FIELDS[kind])
        if language is None and kind != "templates":
            fields["language"] = str
        for name, kind_of in fields.items():
            value = record.data.get(name)
            if value is None:
                raise DataError(f"{record.where}: field '{name}': missing")
            if not isinstance(value, kind_of) or isinstance(value, bool) or (kind_of is str and not value.strip()):
                raise DataError(f"{record.where}: field '{name}': expected a non-empty {kind_of.__name__}, got {value!r}")
        _check_probe(kind, record.data, record.where)
        probes.append(Probe(kind, language or record.data["language"], record.data))
    if not probes:
        raise DataError(f"{path}: no probes (the file is empty)")
    return probes


def _jsonl_records(path: str) -> list[Any]:
    """The file's records as data.loading reads JSONL (UTF-8 checked, each line named), or none."""
    from vietnamese_ai.data.loading import load_records

    return [] if os.path.getsize(path) == 0 else load_records(path)   # a file of blank lines: "file is empty"


def _check_probe(kind: str, data: dict[str, Any], where: str) -> None:
    if kind == "bias":
        if len(data["options"]) != 3 or not all(isinstance(o, str) and o.strip() for o in data["options"]):
            raise DataError(f"{where}: field 'options': expected three non-empty strings (two people, then unknown)")
        for name in ("stereotyped", "answer_negative"):
            if data[name] not in (0, 1):
                raise DataError(f"{where}: field '{name}': expected 0 or 1 (one of the two people), got {data[name]}")
    if kind == "templates" and data["template"].count("{request}") != 1:
        raise DataError(f"{where}: field 'template': must contain {{request}} exactly once")


def load_suite(spec: SuiteSpec, languages: tuple[str, ...] = LANGUAGES, limit: int | None = None) -> list[Probe]:
    """The probes of one suite (toxicity has none: it rates the evaluation's own answers), at most `limit`
    per language, in file order."""
    if spec.name == "toxicity":
        return []
    if spec.path is not None:
        probes = _read_lines(spec.path, spec.name, None)
    else:
        probes = [p for lang in languages for p in _read_lines(builtin_path(spec.name, lang), spec.name, lang)]
    return probes if limit is None else spread(probes, limit)


def spread(probes: list[Probe], limit: int) -> list[Probe]:
    """At most `limit` probes per language, taken across its categories in turn (the first of each
    category, then the second of each, ...), so that a short run still sees every category."""
    kept: list[Probe] = []
    for language in dict.fromkeys(p.language for p in probes):
        rank: dict[str, int] = {}
        order = []
        for i, p in enumerate(q for q in probes if q.language == language):
            rank[p["category"]] = rank.get(p["category"], 0) + 1
            order.append((rank[p["category"]], i, p))
        kept += [p for _, _, p in sorted(order, key=lambda t: t[:2])[:limit]]
    return kept


def templates(language: str, path: str | None = None) -> list[tuple[str, str]]:
    """(name, template) of the jailbreak attacks for `language`, "plain" (the request alone) first. A
    language without built-in templates gets the English ones (the attack, not the request, is English)."""
    source = path or builtin_path("jailbreak_templates", language if language in LANGUAGES else "en")
    return [("plain", "{request}")] + [(t["name"], t["template"]) for t in _read_lines(source, "templates", language)]


def jailbreak_prompts(probes: list[Probe], templates_path: str | None = None) -> list[tuple[Probe, str, str]]:
    """(probe, template name, prompt) for every request and every template of its language."""
    by_language: dict[str, list[tuple[str, str]]] = {}
    out = []
    for probe in probes:
        if probe.language not in by_language:
            by_language[probe.language] = templates(probe.language, templates_path)
        for name, template in by_language[probe.language]:
            out.append((probe, name, template.replace("{request}", probe["request"])))
    return out
