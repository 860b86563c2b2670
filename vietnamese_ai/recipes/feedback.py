"""`vietnamese-ai feedback generate | label | critique`: AI feedback from the command line.

    generate   sample candidates from a model: N per prompt over temperatures and top-p values
    label      score candidates with any scorer; keep (best, worst) pairs whose gap >= min_margin;
               write preference rows that `vietnamese-ai dpo` reads as they are, KTO rows, and each
               prompt's best candidate as a best-of-N SFT row (rejection sampling) for `vietnamese-ai sft`
    critique   critique -> revision with a constitution: SFT rows (prompt -> revision) and pairs
               preferring the revision, each only when the constitution's rules score the revision
               higher than the original
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vietnamese_ai.data.loading import Record, load_records
from vietnamese_ai.data.records import parse_messages, rename_columns, require_string
from vietnamese_ai.data.types import Message, PromptOrMessages, message_dicts
from vietnamese_ai.errors import DataError, UserError
from vietnamese_ai.feedback.pairs import BestOfN, best_rows, candidates_by_prompt, pairs_by_prompt, unpaired_rows
from vietnamese_ai.files import check_writable_file
from vietnamese_ai.recipes.common import quiet_transformers, write_jsonl
from vietnamese_ai.training.config import Columns, Config

log = logging.getLogger("vietnamese_ai")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class GenerateConfig(Config):
    model_name_or_path: str = Field(description="The model that writes the candidates.")
    prompts: str = Field(description="A file (or hub data set) of records with a 'prompt' field: a string or messages.")
    prompts_split: str = Field("train", description="Split to read from a hub data set.")
    columns: Columns = Field(None, description="Rename the prompt records' fields to the ones read here, e.g. {question: prompt}.")
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
    unpaired_output: str | None = Field("auto", description="Unpaired rows for `vietnamese-ai kto`; 'auto': next to output, named after it (pairs.jsonl -> pairs_unpaired.jsonl); null: none.")
    scores_output: str | None = Field(None, description="Also write every candidate with its scores.")
    scorer: str = Field("constitution", description="constitution[:FILE.yaml], reward_model:PATH, classifier:MODEL:LABEL[:logit], judge:MODEL, or the weighted sum a@w+b@v of several (a@0.7+b@0.3; see docs/feedback.md).")
    constitution: str | None = Field(None, description="Constitution YAML for 'constitution' and 'judge' scorers (default: built-in).")
    min_margin: float = Field(0.1, ge=0, description="Keep a pair only if best - worst >= min_margin.")
    active_sampling: Literal["none", "variance", "disagreement"] = Field("none", description="Rank prompts by how contested their candidates are: 'variance' of the overall scores, or 'disagreement' of the scorer's components (principles or weighted parts) over candidate pairs; most contested first, each row records its value as 'contested' (docs/feedback.md#active-sampling).")
    label_budget: int | None = Field(None, ge=1, description="Keep this many pairs: those of the most contested prompts (active_sampling), or the first by prompt index (none); null: all.")
    sft_output: str | None = Field("auto", description="Best-of-N SFT rows for `vietnamese-ai sft`: each prompt's highest-scored candidate (the first of equals; none when it is blank) as prompt -> completion, by prompt index, whatever label_budget keeps of the pairs; 'auto': next to output, named after it (pairs.jsonl -> pairs_sft.jsonl); null: none. A path named here (not 'auto') makes 0 pairs a warning (the pair files are written empty) instead of an error.")
    sft_min_score: float | None = Field(None, description="Keep a prompt's best candidate as an SFT row only when its score is >= this (in the scorer's units: 0 to 1 for the constitution's rules); null: no threshold.")
    sft_require_margin: bool = Field(False, description="Keep a prompt's best candidate as an SFT row only when the prompt has two or more candidates and best - worst >= min_margin, the pairs' test of a score gap.")

    @field_validator("scorer")
    @classmethod
    def _scorer_spec(cls, value: str) -> str:
        from vietnamese_ai.scoring.combine import weighted_parts

        weighted_parts(value)   # a malformed a@w+b@v is refused with the config (a pipeline: before its first stage)
        return value

    @model_validator(mode="after")
    def _check_sft(self) -> "LabelConfig":
        if self.sft_output is None and (self.sft_min_score is not None or self.sft_require_margin):
            raise ValueError("sft_min_score and sft_require_margin filter the best-of-N SFT rows, but sft_output is "
                             "null; name an sft_output (or 'auto'), or drop the filter")
        sft = beside(self.output, self.sft_output, "sft")
        if sft:
            # Written last, the SFT file would silently replace the pairs (or the KTO rows, or the scores).
            others = {"output": self.output, "unpaired_output": beside(self.output, self.unpaired_output, "unpaired"),
                      "scores_output": self.scores_output}
            for key, path in others.items():
                if path and os.path.abspath(path) == os.path.abspath(sft):
                    raise ValueError(f"sft_output and {key} are the same file ({path}); give each its own path")
        return self


class CritiqueConfig(Config):
    model_name_or_path: str = Field(description="The model that critiques and revises its answers.")
    dataset: str = Field(description="Records with 'prompt' and 'response' (or 'completion').")
    dataset_split: str = Field("train", description="Split to read from a hub data set.")
    columns: Columns = Field(None, description="Rename the records' fields to the ones read here, e.g. {question: prompt, answer: response}.")
    output: str = Field("revisions.jsonl", description="SFT rows: prompt -> revision.")
    pairs_output: str | None = Field("auto", description="Pairs preferring the revision; 'auto': next to output, named after it (revisions.jsonl -> revisions_pairs.jsonl); null: none.")
    constitution: str | None = Field(None, description="Constitution YAML (default: built-in).")
    filter_pairs: bool = Field(True, description="Keep a revision pair only if the constitution's rules score the revision higher than the original.")
    sft_rows: Literal["better", "all"] = Field("better", description="'better': an SFT row only for a revision the constitution's rules score higher than the original (the pairs' filter); 'all': every non-empty revision, even one scored worse.")
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


def beside(output: str, value: str | None, suffix: str) -> str | None:
    """'auto' puts a second output file next to the first, named after it (pairs.jsonl ->
    pairs_unpaired.jsonl), so that it never replaces an unrelated file with a generic name."""
    if value != "auto":
        return value
    stem, ext = os.path.splitext(os.path.abspath(output))
    return f"{stem}_{suffix}{ext or '.jsonl'}"


def check_outputs(**paths: str | None) -> None:
    """Every output file can be written (and none is a directory), before any model is loaded."""
    for key, path in paths.items():
        if path:
            check_writable_file(path, key)


def read_sampling(record: Record) -> tuple[float, float, int]:
    """The (temperature, top_p, sample) provenance of a candidate; absent fields take their defaults."""
    sampling = record.data.get("sampling")
    if sampling is None:
        return 0.0, 1.0, 0
    if not isinstance(sampling, dict):
        raise DataError.at(record.where, "sampling", f"expected an object, got {type(sampling).__name__}")
    values = []
    for key, default, kind in (("temperature", 0.0, float), ("top_p", 1.0, float), ("sample", 0, int)):
        value = sampling.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
            raise DataError.at(record.where, f"sampling.{key}", f"expected {'an integer' if kind is int else 'a number'}, "
                                                                f"got {value!r}")
        values.append(kind(value))
    return values[0], values[1], values[2]


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
    from vietnamese_ai.models.loading import check_model_path

    check_outputs(output=config.output)
    prompts = [read_prompt(r, config.chat) for r in rename_columns(load_records(config.prompts, config.prompts_split),
                                                                   config.columns)]
    check_model_path(config.model_name_or_path, "model_name_or_path")   # not a reward model, before it loads
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
    from vietnamese_ai.feedback.active import budget_order, check_disagreement, contestedness
    from vietnamese_ai.feedback.generate import Candidate
    from vietnamese_ai.feedback.registry import build_scorer

    unpaired = beside(config.output, config.unpaired_output, "unpaired")
    sft = beside(config.output, config.sft_output, "sft")
    check_outputs(output=config.output, unpaired_output=unpaired, scores_output=config.scores_output, sft_output=sft)
    records = load_records(config.candidates)
    prompts: dict[int, PromptOrMessages] = {}
    first_seen: dict[int, str] = {}
    candidates = []
    generators = set()
    for record in records:
        index = record.data.get("prompt_index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise DataError.at(record.where, "prompt_index", "missing or not an integer")
        prompt = read_prompt(record)
        if index in prompts and prompts[index] != prompt:
            raise DataError.at(record.where, "prompt", f"prompt_index {index} already belongs to another prompt "
                                                       f"({first_seen[index]}); each prompt needs its own index")
        prompts.setdefault(index, prompt)
        first_seen.setdefault(index, record.where)
        candidates.append(Candidate(index, require_string(record, "response", allow_empty=True), *read_sampling(record)))
        generators.add(str(record.data.get("generator", "unknown")))
    scorer = build_scorer(config.scorer, config.constitution)
    components = check_disagreement(scorer) if config.active_sampling == "disagreement" else []
    scores = scorer.score([prompts[c.prompt_index] for c in candidates], [c.text for c in candidates])
    if config.scores_output:
        write_jsonl(config.scores_output, [{**r.data, "score": s.value, "principles": s.principles, "reasoning": s.reasoning}
                                           for r, s in zip(records, scores)])
    generator = ",".join(sorted(generators))
    by_prompt = pairs_by_prompt(prompts, candidates, scores, config.min_margin, generator, scorer.name)
    best = None
    if sft:
        best = best_rows(prompts, candidates, scores, generator, scorer.name, config.sft_min_score,
                         config.min_margin if config.sft_require_margin else None)
    if not by_prompt:
        why = f"feedback label: 0 pairs from {len(candidates)} candidates: {no_pairs_reason(candidates, scores, config.min_margin)}"
        # An SFT file the user named is what the run is for; the 'auto' one is a by-product, and
        # 0 pairs stays the error it always was.
        if best is None or not best.rows:
            raise UserError(why)
        if config.sft_output == "auto":
            raise UserError(f"{why} (sft_output=FILE writes the {len(best.rows)} best-of-N SFT rows anyway)")
        # Empty pair files rather than none, so that an earlier run's pairs under these names are
        # not taken for this run's.
        log.warning("%s; writing the best-of-N SFT rows and empty pair files", why)
    contested = None
    if config.active_sampling != "none":
        contested = contestedness([c.prompt_index for c in candidates], scores, config.active_sampling, components)
    pairs = [by_prompt[index] if contested is None else {**by_prompt[index], "contested": contested[index]}
             for index in budget_order(list(by_prompt), contested, config.label_budget)]
    write_jsonl(config.output, pairs)
    if unpaired:
        write_jsonl(unpaired, unpaired_rows(pairs))
    text = (f"{len(pairs)} pairs from {len(candidates)} candidates for {len(prompts)} prompts "
            f"(min_margin {config.min_margin}, scorer {scorer.name}{budget_note(config, len(by_prompt))}); "
            f"written to {config.output}")
    if best is not None:
        write_jsonl(sft, list(best.rows.values()))
        text += f"; {best_of_n_note(config, best, sft)}"
    return FeedbackResult(text)


def best_of_n_note(config: LabelConfig, best: BestOfN, path: str) -> str:
    """How many best-of-N SFT rows, under which filters, and why the other prompts gave none."""
    filters = [f"score >= {config.sft_min_score}"] * (config.sft_min_score is not None)
    filters += [f"best - worst >= {config.min_margin}"] * config.sft_require_margin
    note = f"{len(best.rows)} best-of-N SFT rows" + (f" ({', '.join(filters)})" if filters else "") + f" written to {path}"
    if best.dropped:
        reasons = [f"{n} {why}" for n, why in ((best.below_score, "below sft_min_score"),
                                               (best.below_margin, "without the margin"),
                                               (best.empty, "with an empty best response")) if n]
        note += f"; {best.dropped} prompts gave none ({', '.join(reasons)})"
    return note


def budget_note(config: LabelConfig, available: int) -> str:
    """What active sampling and the label budget did, for the summary line."""
    if config.active_sampling == "none":
        chosen = "the first by prompt index"
    else:
        chosen = f"the most contested by {config.active_sampling}"
    if config.label_budget is None:
        return "" if config.active_sampling == "none" else f"; ordered {chosen}, none dropped"
    return f"; label_budget {config.label_budget} kept {min(available, config.label_budget)} of {available}: {chosen}"


def no_pairs_reason(candidates: list[Any], scores: list[Any], min_margin: float) -> str:
    """Why no prompt gave a pair, with the number that would have to change."""
    by_prompt = candidates_by_prompt(candidates)
    if all(len(group) < 2 for group in by_prompt.values()):
        return "every prompt has a single candidate; sample several per prompt (feedback generate num_samples=...)"
    gaps = [max(scores[k].value for k in g) - min(scores[k].value for k in g) for g in by_prompt.values() if len(g) > 1]
    if max(gaps) < min_margin:
        return (f"no prompt's best and worst candidates differ by min_margin={min_margin} or more (the largest gap is "
                f"{max(gaps):.3g}); lower min_margin, or sample more varied candidates (higher temperatures)")
    return "the candidates that differ enough in score have the same text"


def run_critique(config: CritiqueConfig) -> FeedbackResult:
    from vietnamese_ai.feedback.constitution import load_constitution
    from vietnamese_ai.feedback.critique import critique_and_revise, model_generate_fn, revision_records
    from vietnamese_ai.feedback.rules import RuleScorer
    from vietnamese_ai.models.loading import check_model_path

    pairs_path = beside(config.output, config.pairs_output, "pairs")
    check_outputs(output=config.output, pairs_output=pairs_path)
    records = rename_columns(load_records(config.dataset, config.dataset_split), config.columns)
    prompts = [read_prompt(r) for r in records]
    responses = [require_string(r, "response" if "response" in r.data else "completion") for r in records]
    check_model_path(config.model_name_or_path, "model_name_or_path")   # not a reward model, before it loads
    constitution = load_constitution(config.constitution)
    model, tokenizer = _load(config.model_name_or_path, config.dtype, config.trust_remote_code)
    generate_fn = model_generate_fn(model, tokenizer, config.max_new_tokens, config.temperature, config.batch_size, config.seed)
    revisions = critique_and_revise(generate_fn, prompts, responses, constitution, config.seed)
    # Always scored (the rules need no model), so that every row records both scores.
    scorer = RuleScorer(constitution)
    records_out = revision_records(revisions, scorer, filter_sft=config.sft_rows == "better",
                                   filter_pairs=config.filter_pairs)
    sft, pairs = records_out.sft, records_out.pairs
    if not records_out.revisions:
        raise UserError(f"feedback critique: 0 revisions: the model's revision of every one of the {len(records)} "
                        f"answers was empty; raise max_new_tokens, or use a model that follows instructions")
    if not sft:
        raise UserError(f"feedback critique: none of the {records_out.revisions} revisions scored higher than its "
                        f"original by the constitution's rules ({records_out.worse} scored lower); nothing written. "
                        f"sft_rows=all writes them anyway")
    write_jsonl(config.output, sft)
    if pairs_path:
        if not pairs:
            why = ("the constitution's rules scored no revision above its original (filter_pairs=true)"
                   if config.filter_pairs else "every revision repeats its original")
            log.warning("feedback critique: 0 revision pairs from %d revisions: %s", records_out.revisions, why)
        write_jsonl(pairs_path, pairs)
    if config.sft_rows == "better":
        kept = (f"{len(sft)} written as SFT rows, {records_out.not_better} dropped as scoring no better than their "
                f"original ({records_out.worse} of them worse)")
    else:
        kept = (f"{len(sft)} written as SFT rows (sft_rows=all: {records_out.worse} of them scores lower than its "
                f"original)")
    empty = len(revisions) - records_out.revisions
    return FeedbackResult(f"{records_out.revisions} revisions{f' ({empty} empty ones skipped)' if empty else ''}: "
                          f"{kept}; {len(pairs)} revision pairs; written to {config.output}")
