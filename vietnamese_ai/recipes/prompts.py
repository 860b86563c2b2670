"""`vietnamese-ai feedback prompts`: prompts nobody had to write, for `feedback generate prompts=FILE`.

    method=templates       templates x slot fillers (feedback/prompts.py; built-in ones in Vietnamese and
                           English), distinct after normalisation, languages taking turns
    method=self_instruct   a causal LM proposes new instructions after a few shown seeds, kept only past
                           Self-Instruct's filters and ROUGE-L novelty check (feedback/self_instruct.py)

Each row is {"prompt", "language", "source", ...provenance}; the summary line says how many were kept,
how many each filter dropped, and the distinct-1/distinct-2 of the kept prompts. Every input (templates,
seeds, output path, model path) is checked before a model loads.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vietnamese_ai.data.loading import load_records
from vietnamese_ai.data.text import detect_language
from vietnamese_ai.errors import DataError, UserError
from vietnamese_ai.evaluation.compare import distinct_n
from vietnamese_ai.feedback.prompts import LANGUAGES, draw_prompts, load_templates
from vietnamese_ai.feedback.self_instruct import BANNED_WORDS, InstructionFilter, model_sample_fn, self_instruct
from vietnamese_ai.recipes.common import quiet_transformers, write_jsonl
from vietnamese_ai.recipes.feedback import check_outputs, read_prompt
from vietnamese_ai.training.config import Config

log = logging.getLogger("vietnamese_ai")


class PromptsConfig(Config):
    method: Literal["templates", "self_instruct"] = Field("templates", description="'templates': fill templates' slots; 'self_instruct': a model proposes instructions after shown seeds (docs/feedback.md#prompts-you-do-not-have-to-write).")
    output: str = Field("prompts.jsonl", description="Where to write the prompts (JSONL rows with 'prompt', 'language', 'source').")
    num_prompts: int = Field(200, ge=1, description="How many distinct prompts to write.")
    languages: list[Literal["vi", "en"]] = Field(["vi", "en"], min_length=1, description="Languages of the prompts, taking turns: vi, en or both.")
    seed: int = Field(0, description="Seed; the same seed gives the same prompts.")
    templates: str | None = Field(None, description="A template YAML file (slots and templates per language); with 'extends: default' it adds to the built-in one, else replaces it. Default: built-in.")
    model_name_or_path: str | None = Field(None, description="self_instruct: the causal LM that proposes instructions (a base model continues the list best).")
    seeds: str | None = Field(None, description="self_instruct: seed instructions, records with a 'prompt' (and optionally 'language'); default: num_seeds prompts drawn from the templates.")
    seeds_split: str = Field("train", description="Split to read from a hub data set of seeds.")
    num_seeds: int = Field(24, ge=1, description="self_instruct without seeds=: how many template prompts to start from.")
    seeds_per_prompt: int = Field(6, ge=1, description="self_instruct: seed instructions shown in each request (the paper: 6).")
    generated_per_prompt: int = Field(2, ge=0, description="self_instruct: instructions kept earlier, also shown in each request (the paper: 2).")
    max_rounds: int = Field(10, ge=1, description="self_instruct: stop after this many rounds even if fewer than num_prompts were kept.")
    batch_size: int = Field(16, ge=1, description="self_instruct: requests per round (one batched generate call).")
    min_words: int = Field(4, ge=1, description="self_instruct: fewest words in a kept instruction.")
    max_words: int = Field(150, ge=1, description="self_instruct: most words in a kept instruction.")
    banned_words: list[str] = Field([], description="self_instruct: words or phrases that drop an instruction, added to the built-in list (image, graph, file, ... and Vietnamese equivalents).")
    max_similarity: float = Field(0.7, gt=0, le=1, description="self_instruct: drop an instruction whose ROUGE-L with a seed or a kept one is >= this (the paper: 0.7).")
    temperature: float = Field(0.7, gt=0, description="self_instruct: sampling temperature.")
    top_p: float = Field(0.9, gt=0, le=1, description="self_instruct: nucleus sampling.")
    max_new_tokens: int = Field(256, ge=1, description="self_instruct: longest continuation of a request.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("float32", description="Dtype the weights are loaded in.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub to run.")
    disable_tqdm: bool = Field(False, description="Hide the progress bar.")

    @field_validator("languages", "banned_words", mode="before")
    @classmethod
    def _one_value_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("languages")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> "PromptsConfig":
        if self.method == "self_instruct" and not self.model_name_or_path:
            raise ValueError("key 'model_name_or_path': required for method=self_instruct (the model that proposes "
                             "instructions)")
        if self.min_words > self.max_words:
            raise ValueError(f"key 'min_words': {self.min_words} is more than max_words={self.max_words}")
        return self


@dataclass
class PromptsResult:
    output: str
    method: str
    asked: int
    generated: int                     # prompts drawn, or candidates examined
    rows: list[dict[str, Any]]
    dropped: dict[str, int] = field(default_factory=dict)
    detail: str = ""                   # combinations, or rounds

    def summary(self) -> str:
        texts = [r["prompt"] for r in self.rows]
        languages = Counter(r["language"] for r in self.rows)
        dropped = ", ".join(f"{name} {count}" for name, count in sorted(self.dropped.items())) or "none"
        short = f" (asked for {self.asked})" if len(self.rows) < self.asked else ""
        return (f"feedback prompts ({self.method}): {len(self.rows)} kept{short} of {self.generated} generated "
                f"({self.detail}); dropped: {dropped}; languages: "
                f"{', '.join(f'{lang} {n}' for lang, n in sorted(languages.items()))}; "
                f"distinct-1 {distinct_n(texts, 1):.3f}, distinct-2 {distinct_n(texts, 2):.3f}; written to {self.output}")


def run_prompts(config: PromptsConfig) -> PromptsResult:
    # A bad template file is the first thing said: before the output is checked or anything loads.
    templates = load_templates(config.templates) if config.method == "templates" or not config.seeds else None
    check_outputs(output=config.output)
    if config.method == "templates":
        result = _from_templates(config, templates)
    else:
        result = _from_self_instruct(config, templates)
    write_jsonl(config.output, result.rows)
    return result


def _from_templates(config: PromptsConfig, templates: Any) -> PromptsResult:
    drawn, duplicates = draw_prompts(templates, config.num_prompts, config.languages, config.seed)
    total = templates.size(config.languages)
    if len(drawn) < config.num_prompts:
        log.warning("feedback prompts: only %d distinct prompts after normalisation (of %d combinations in %s); "
                    "asked for %d", len(drawn), total, templates.source, config.num_prompts)
    rows = [{"prompt": p.text, "language": p.language, "source": "templates", "template": p.template, "slots": p.slots}
            for p in drawn]
    return PromptsResult(config.output, "templates", config.num_prompts, len(drawn) + duplicates, rows,
                         {"duplicate": duplicates} if duplicates else {}, f"{total} combinations")


def read_seeds(config: PromptsConfig, templates: Any) -> dict[str, list[str]]:
    """Seed instructions per requested language: the seeds file's (a record's 'language', else the detected
    one), or prompts drawn from the templates."""
    if config.seeds is None:
        size = templates.size(config.languages)
        drawn, _ = draw_prompts(templates, min(config.num_seeds, size), config.languages, config.seed)
        found = [(p.text, p.language) for p in drawn]
        where = f"{templates.source} (num_seeds={config.num_seeds})"
    else:
        found = []
        for record in load_records(config.seeds, config.seeds_split):
            prompt = read_prompt(record, chat=False)
            text = prompt if isinstance(prompt, str) else next((m.content for m in reversed(prompt) if m.role == "user"), "")
            language = record.data.get("language")
            if text.strip():
                found.append((text.strip(), language if language in LANGUAGES else detect_language(text)))
        where = config.seeds
    seeds = {lang: [text for text, found_lang in found if found_lang == lang] for lang in config.languages}
    empty = [lang for lang, texts in seeds.items() if not texts]
    if empty:
        raise DataError(f"seeds: {where}: no seed instruction in {', '.join(empty)} (each request shows seeds of its "
                        f"own language); add some, or set languages to those the seeds are in")
    return seeds


def _from_self_instruct(config: PromptsConfig, templates: Any) -> PromptsResult:
    from vietnamese_ai.models.loading import check_model_path, load_causal_lm, load_tokenizer

    seeds = read_seeds(config, templates)
    check_model_path(config.model_name_or_path, "model_name_or_path")   # not a reward model, before it loads
    quiet_transformers()
    model = load_causal_lm(config.model_name_or_path, config.dtype, trust_remote_code=config.trust_remote_code)
    tokenizer = load_tokenizer(config.model_name_or_path, config.trust_remote_code)
    sample_fn = model_sample_fn(model, tokenizer, config.max_new_tokens, config.temperature, config.top_p,
                                config.batch_size, config.seed, progress=not config.disable_tqdm)
    filters = InstructionFilter(tuple(config.languages), config.min_words, config.max_words,
                                BANNED_WORDS + tuple(config.banned_words))
    run = self_instruct(sample_fn, seeds, config.num_prompts, filters, config.max_similarity, config.seeds_per_prompt,
                        config.generated_per_prompt, config.batch_size, config.max_rounds, config.seed)
    if not run.kept:
        dropped = ", ".join(f"{name} {count}" for name, count in sorted(run.dropped.items())) or "none"
        raise UserError(f"feedback prompts: 0 of {run.generated} proposed instructions kept after {run.rounds} rounds "
                        f"(dropped: {dropped}); loosen the filters (min_words, max_words, max_similarity), raise "
                        f"max_rounds, or use a stronger model")
    if len(run.kept) < config.num_prompts:
        log.warning("feedback prompts: %d of the %d prompts asked for kept after max_rounds=%d", len(run.kept),
                    config.num_prompts, config.max_rounds)
    rows = [{"prompt": p.text, "language": p.language, "source": "self_instruct", "round": p.round, "shown": p.shown,
             "generator": config.model_name_or_path} for p in run.kept]
    return PromptsResult(config.output, "self_instruct", config.num_prompts, run.generated, rows, dict(run.dropped),
                         f"{run.rounds} rounds")
