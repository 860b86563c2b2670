"""Score-regularised fine-tuning: a language model and a score head trained together.

The language model and a scalar score head on its final hidden state are trained together:

    L = L_LM + alpha * (head(prompt + response) - target_score)^2

per example, where L_LM is the example's mean token NLL (of the completion, or of the whole text)
and the head reads the hidden state at the example's last token (EOS). Target scores come from a
dataset field (`score_field`, e.g. a constitution score in [0, 1]) or from any Scorer
(`target_scorer`), computed once before training. The loss is a mean over examples.

final/ is a plain causal LM (loadable with AutoModelForCausalLM) with the head beside it in
score_head.safetensors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, field_validator

from vietnamese_ai.data.layout import PackedBatch, layout, sft_sequence
from vietnamese_ai.data.loading import Record
from vietnamese_ai.data.records import finite_number, to_sft_example
from vietnamese_ai.data.tokenize import tokenize_sft
from vietnamese_ai.data.types import PromptCompletion, TextExample, TokenizedExample, TruncationReport
from vietnamese_ai.errors import DataError
from vietnamese_ai.feedback.registry import build_scorer
from vietnamese_ai.losses import sequence_logps, target_logps
from vietnamese_ai.losses.reward import score_regression_loss
from vietnamese_ai.models.forward import base_model, kept_logits
from vietnamese_ai.models.io import attach_scalar_head
from vietnamese_ai.recipes.common import (
    load_policy,
    load_tokenizer_for,
    model_argument,
    pad_token_id,
    pair_cost,
    read_splits,
    resolve_packing,
)
from vietnamese_ai.recipes.sft import SFTConfig
from vietnamese_ai.scoring import Scorer
from vietnamese_ai.training.loop import StepOutput, TrainResult, train

log = logging.getLogger("vietnamese_ai")
HEAD = "score_head"


class ScoreSFTConfig(SFTConfig):
    output_dir: str = Field("runs/score-sft", description="Directory for config.yaml, metrics.jsonl, checkpoints/ and final/.")
    score_alpha: float = Field(0.1, ge=0, description="alpha: weight of the score regression (MSE) against the LM loss.")
    score_field: str = Field("score", description="Record field holding the target score (used when target_scorer is not set).")
    target_scorer: str | None = Field(None, description="Compute target scores with a scorer instead: constitution[:FILE], reward_model:PATH, classifier:..., judge:..., or the weighted sum a@w+b@v (see docs/feedback.md).")

    @field_validator("target_scorer")
    @classmethod
    def _target_scorer_spec(cls, value: str | None) -> str | None:
        from vietnamese_ai.scoring.combine import weighted_parts

        if value is not None:
            weighted_parts(value)   # refused with the config (a pipeline: before its first stage)
        return value


@dataclass
class ScoredExample:
    example: TokenizedExample
    target: float

    def __len__(self) -> int:
        return len(self.example)


def _prompt_and_response(example: Any) -> tuple[Any, str]:
    if isinstance(example, PromptCompletion):
        completion = example.completion
        return example.prompt, completion if isinstance(completion, str) else "\n".join(m.content for m in completion)
    if isinstance(example, TextExample):
        return "", example.text
    raise DataError("target_scorer needs text records (prompt/completion or text), not pre-tokenised ones")


def scored_example(record: Record, config: ScoreSFTConfig, needs_score: bool) -> tuple[Any, float | None]:
    """A record as an SFT example and its target score (when the data gives it)."""
    example = to_sft_example(record)
    return example, finite_number(record, config.score_field) if needs_score else None


def prepare_scored(records: list[Record], tokenizer: Any, config: ScoreSFTConfig, scorer: Scorer | None,
                   name: str) -> list[ScoredExample]:
    report = TruncationReport()
    examples, targets = [], []
    texts = []
    for record in records:
        example, target = scored_example(record, config, needs_score=scorer is None)
        if scorer is None:
            targets.append(target)
        else:
            texts.append(_prompt_and_response(example))
        examples.append(example)
    if scorer is not None:
        targets = [s.value for s in scorer.score([p for p, _ in texts], [r for _, r in texts])]
        log.info("%s targets from %s: mean %.4f", name, scorer.name, sum(targets) / len(targets))
    out = []
    for example, target in zip(examples, targets):
        tokenized = tokenize_sft(example, tokenizer, config.max_length, report, config.completion_only_loss,
                                 config.assistant_only_loss)
        if tokenized is not None:
            out.append(ScoredExample(tokenized, target))
    log.info(report.summary(name))
    if not out:
        raise DataError(f"{name} data: every record was dropped ({report.summary(name)}); raise max_length")
    return out


def scored_collate(pack: bool, pad_id: int, cost: float):
    def collate(examples: list[ScoredExample]) -> PackedBatch:
        sequences = [sft_sequence(e.example.input_ids, e.example.labels, group=i) for i, e in enumerate(examples)]
        batch = layout(sequences, pack=pack, num_groups=len(examples), num_items=len(examples), pad_token_id=pad_id,
                       pair_cost=cost, keep_ends=True)
        batch.extras["target"] = torch.tensor([e.target for e in examples], dtype=torch.float32)
        return batch

    return collate


def score_sft_loss_fn(config: ScoreSFTConfig):
    def loss(model: Any, batch: PackedBatch) -> StepOutput:
        # The head reads the final hidden state, which is the input of the LM head: capture it there.
        captured: dict[str, torch.Tensor] = {}
        lm_head = base_model(model).get_output_embeddings()
        handle = lm_head.register_forward_pre_hook(lambda module, args: captured.__setitem__("hidden", args[0]))
        try:
            logits = kept_logits(model, batch)
        finally:
            handle.remove()
        hidden = captured["hidden"]
        hidden = hidden[batch.logits_mask] if hidden.dim() == 3 else hidden  # full logits: keep the kept rows
        token_logps = target_logps(logits, batch.target_index, batch.targets)
        lengths = batch.response_lengths().clamp(min=1)
        nll = -sequence_logps(token_logps, batch.target_groups, batch.num_groups) / lengths
        predicted = getattr(model.module if hasattr(model, "module") else model, HEAD)(hidden[batch.end_index]).squeeze(-1)
        mse = score_regression_loss(predicted, batch.extras["target"])
        return StepOutput((nll + config.score_alpha * mse).sum(), {"lm_loss": nll.detach().sum(), "reward_mse": mse.detach().sum()})

    return loss


def run_score_sft(config: ScoreSFTConfig, model: Any = None, tokenizer: Any = None, scorer: Scorer | None = None,
                  train_records: Any = None, eval_records: Any = None) -> TrainResult:
    """`scorer` (Python API) or config.target_scorer gives the targets; otherwise the score field does."""
    config, model = model_argument(config, model)
    train_raw, eval_raw = read_splits(config, train_records, eval_records,
                                      validate=lambda record: scored_example(record, config, needs_score=scorer is None
                                                                             and not config.target_scorer))
    scorer = scorer or (build_scorer(config.target_scorer, key="target_scorer") if config.target_scorer else None)
    tokenizer = tokenizer or load_tokenizer_for(config, model)
    train_set = prepare_scored(train_raw, tokenizer, config, scorer, "train")
    eval_set = prepare_scored(eval_raw, tokenizer, config, scorer, "eval") if eval_raw else None
    model, tokenizer = load_policy(config, model, tokenizer)
    attach_scalar_head(model, HEAD)
    longest = max(len(e) for e in train_set)
    collate = scored_collate(resolve_packing(config.packing, model, longest), pad_token_id(tokenizer, model),
                             pair_cost(model))
    return train(model, tokenizer, config, train_set, collate, score_sft_loss_fn(config), eval_set)
