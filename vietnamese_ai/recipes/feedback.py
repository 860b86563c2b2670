"""`vietnamese-ai feedback generate | label | critique`: AI feedback from the command line.

    generate   sample candidates from a model: N per prompt over temperatures and top-p values
    label      score candidates with any scorer; keep (best, worst) pairs whose gap >= min_margin;
               write preference rows that `vietnamese-ai dpo` reads as they are, and KTO rows
    critique   critique -> revision with a constitution: SFT rows (prompt -> revision), and pairs
               preferring the revision when the constitution's rules agree it is better
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from vietnamese_ai.data.loading import Record, load_records
from vietnamese_ai.data.records import parse_messages, require_string
from vietnamese_ai.data.types import Message, PromptOrMessages, message_dicts
from vietnamese_ai.errors import DataError
from vietnamese_ai.recipes.common import quiet_transformers, write_jsonl
from vietnamese_ai.training.config import Config

log = logging.getLogger("vietnamese_ai")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class GenerateConfig(Config):
    model_name_or_path: str = Field(description="The model that writes the candidates.")
    prompts: str = Field(description="A file (or hub data set) of records with a 'prompt' field: a string or messages.")
    prompts_split: str = Field("train", description="Split to read from a hub data set.")
    output: str = Field("candidates.jsonl", description="Where to write the candidates (JSONL).")
    temperatures: list[float] = Field([0.7, 1.0], min_length=1, description="Sampling temperatures (each > 0); one pass over all prompts per temperature, top-p and sample.")
    top_p: list[float] = Field([1.0], min_length=1, description="Nucleus sampling values, each in (0, 1].")
    num_samples: int = Field(2, ge=1, description="Samples per prompt for each (temperature, top_p) setting.")
    max_new_tokens: int = Field(128, ge=1, description="Longest response.")
    batch_size: int = Field(32, ge=1, description="Prompts per batched generate call.")
    seed: int = Field(0, description="Seed; the same seed gives the same candidates.")
    chat: bool = Field(True, description="Give string prompts to the model as a user message (chat template).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("float32", description="Dtype the weights are loaded in.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub to run.")
    disable_tqdm: bool = Field(False, description="Hide the progress bar.")

    @field_validator("temperatures", "top_p", mode="before")
    @classmethod
    def _one_value_is_a_list(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(not t > 0 or not math.isfinite(t) for t in values):
            raise ValueError("every temperature must be > 0 (candidates are sampled; 0 would repeat one greedy answer)")
        return values

    @field_validator("top_p")
    @classmethod
    def _probability(cls, values: list[float]) -> list[float]:
        if any(not 0 < p <= 1 for p in values):
            raise ValueError("every top_p must be in (0, 1]")
        return values


class LabelConfig(Config):
    candidates: str = Field(description="Candidates from `feedback generate` (prompt_index, prompt, response, sampling).")
    output: str = Field("pairs.jsonl", description="Preference pairs for `vietnamese-ai dpo`.")
    unpaired_output: str | None = Field("auto", description="Unpaired rows for `vietnamese-ai kto`; 'auto': unpaired.jsonl next to output; null: none.")
    scores_output: str | None = Field(None, description="Also write every candidate with its scores.")
    scorer: str = Field("constitution", description="constitution[:FILE.yaml], reward_model:PATH, classifier:MODEL:LABEL[:logit], judge:MODEL; combine as a@0.7+b@0.3.")
    constitution: str | None = Field(None, description="Constitution YAML for 'constitution' and 'judge' scorers (default: built-in).")
    min_margin: float = Field(0.1, ge=0, description="Keep a pair only if best - worst >= min_margin.")


class CritiqueConfig(Config):
    model_name_or_path: str = Field(description="The model that critiques and revises its answers.")
    dataset: str = Field(description="Records with 'prompt' and 'response' (or 'completion').")
    dataset_split: str = Field("train", description="Split to read from a hub data set.")
    output: str = Field("revisions.jsonl", description="SFT rows: prompt -> revision.")
    pairs_output: str | None = Field("auto", description="Pairs preferring the revision; 'auto': revision_pairs.jsonl next to output; null: none.")
    constitution: str | None = Field(None, description="Constitution YAML (default: built-in).")
    filter_pairs: bool = Field(True, description="Keep a revision pair only if the constitution's rules score the revision higher.")
    max_new_tokens: int = Field(128, ge=1, description="Longest critique or revision.")
    temperature: float = Field(0.0, ge=0, description="0 = greedy.")
    batch_size: int = Field(16, ge=1, description="Conversations per batched generate call.")
    seed: int = Field(0, description="Seed for the principle drawn for each answer, and for sampling.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("float32", description="Dtype the weights are loaded in.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub to run.")


@dataclass
class FeedbackResult:
    text: str

    def summary(self) -> str:
        return self.text


def beside(output: str, value: str | None, name: str) -> str | None:
    """'auto' puts a second output file next to the first."""
    return os.path.join(os.path.dirname(os.path.abspath(output)), name) if value == "auto" else value


def read_prompt(record: Record, chat: bool = True) -> PromptOrMessages:
    value = record.data.get("prompt")
    if isinstance(value, list):
        return parse_messages(record, "prompt", value)
    text = require_string(record, "prompt")
    return [Message("user", text)] if chat else text


def _load(path: str, dtype: str, trust_remote_code: bool) -> tuple[Any, Any]:
    from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer

    quiet_transformers()
    return load_causal_lm(path, dtype, trust_remote_code=trust_remote_code), load_tokenizer(path, trust_remote_code)


def run_generate(config: GenerateConfig) -> FeedbackResult:
    from vietnamese_ai.feedback.generate import generate_candidates

    prompts = [read_prompt(r, config.chat) for r in load_records(config.prompts, config.prompts_split)]
    model, tokenizer = _load(config.model_name_or_path, config.dtype, config.trust_remote_code)
    candidates, speed = generate_candidates(model, tokenizer, prompts, tuple(config.temperatures), tuple(config.top_p),
                                            config.num_samples, config.max_new_tokens, config.batch_size, config.seed,
                                            progress=not config.disable_tqdm)
    rows = [{"prompt_index": c.prompt_index, "prompt": prompts[c.prompt_index] if isinstance(prompts[c.prompt_index], str) else message_dicts(prompts[c.prompt_index]), "response": c.text,
             "sampling": c.sampling, "generator": config.model_name_or_path} for c in candidates]
    write_jsonl(config.output, rows)
    return FeedbackResult(f"{len(rows)} candidates for {len(prompts)} prompts in {speed.seconds:.1f}s "
                          f"({speed.responses_per_second:.1f} responses/s); written to {config.output}")


def run_label(config: LabelConfig) -> FeedbackResult:
    from vietnamese_ai.feedback.generate import Candidate
    from vietnamese_ai.feedback.pairs import select_pairs, unpaired_rows
    from vietnamese_ai.feedback.registry import build_scorer

    records = load_records(config.candidates)
    prompts: dict[int, PromptOrMessages] = {}
    candidates = []
    generators = set()
    for record in records:
        index = record.data.get("prompt_index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise DataError.at(record.where, "prompt_index", "missing or not an integer")
        prompts.setdefault(index, read_prompt(record))
        sampling = record.data.get("sampling") or {}
        candidates.append(Candidate(index, require_string(record, "response", allow_empty=True),
                                    float(sampling.get("temperature", 0.0)), float(sampling.get("top_p", 1.0)),
                                    int(sampling.get("sample", 0))))
        generators.add(str(record.data.get("generator", "unknown")))
    scorer = build_scorer(config.scorer, config.constitution)
    ordered = [prompts[i] for i in range(max(prompts) + 1)] if prompts else []
    scores = scorer.score([prompts[c.prompt_index] for c in candidates], [c.text for c in candidates])
    pairs = select_pairs(ordered, candidates, scores, config.min_margin, ",".join(sorted(generators)), scorer.name)
    write_jsonl(config.output, pairs)
    unpaired = beside(config.output, config.unpaired_output, "unpaired.jsonl")
    if unpaired:
        write_jsonl(unpaired, unpaired_rows(pairs))
    if config.scores_output:
        write_jsonl(config.scores_output, [{**r.data, "score": s.value, "principles": s.principles, "reasoning": s.reasoning}
                                           for r, s in zip(records, scores)])
    return FeedbackResult(f"{len(pairs)} pairs from {len(candidates)} candidates for {len(prompts)} prompts "
                          f"(min_margin {config.min_margin}, scorer {scorer.name}); written to {config.output}")


def run_critique(config: CritiqueConfig) -> FeedbackResult:
    from vietnamese_ai.feedback.constitution import load_constitution
    from vietnamese_ai.feedback.critique import critique_and_revise, model_generate_fn, revision_records
    from vietnamese_ai.feedback.rules import RuleScorer

    records = load_records(config.dataset, config.dataset_split)
    prompts = [read_prompt(r) for r in records]
    responses = [require_string(r, "response" if "response" in r.data else "completion") for r in records]
    constitution = load_constitution(config.constitution)
    model, tokenizer = _load(config.model_name_or_path, config.dtype, config.trust_remote_code)
    generate_fn = model_generate_fn(model, tokenizer, config.max_new_tokens, config.temperature, config.batch_size, config.seed)
    revisions = critique_and_revise(generate_fn, prompts, responses, constitution, config.seed)
    sft, pairs = revision_records(revisions, RuleScorer(constitution) if config.filter_pairs else None)
    write_jsonl(config.output, sft)
    pairs_path = beside(config.output, config.pairs_output, "revision_pairs.jsonl")
    if pairs_path:
        write_jsonl(pairs_path, pairs)
    return FeedbackResult(f"{len(sft)} revisions, {len(pairs)} revision pairs; written to {config.output}")
