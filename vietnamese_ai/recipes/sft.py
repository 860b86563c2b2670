"""Supervised fine-tuning (SFT).

Minimises the negative log-likelihood of the completion tokens (prompt-completion data) or of every
token (language-modelling data), averaged over all target tokens of an optimizer step. Sequences are
packed padding-free by default. Optional R-Drop runs each batch twice with different
dropout masks and penalises the symmetric KL between the two predictions; as in the paper's Eq. 3 the
two passes' NLL terms are summed, so with rdrop_alpha > 0 the loss is about twice plain SFT's.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field

from vietnamese_ai.data.layout import PackedBatch, layout, sft_sequence
from vietnamese_ai.data.tokenize import prepare_sft
from vietnamese_ai.data.types import TokenizedExample
from vietnamese_ai.losses import rdrop_kl
from vietnamese_ai.models.forward import batch_target_logps
from vietnamese_ai.data.records import to_sft_example
from vietnamese_ai.recipes.common import (
    declared_vocab_size,
    load_policy,
    load_tokenizer_for,
    model_argument,
    pad_token_id,
    pair_cost,
    read_splits,
    resolve_packing,
)
from vietnamese_ai.training.config import TrainingConfig
from vietnamese_ai.training.loop import StepOutput, TrainResult, train

log = logging.getLogger("vietnamese_ai")


class SFTConfig(TrainingConfig):
    output_dir: str = Field("runs/sft", description="Directory for config.yaml, metrics.jsonl, checkpoints/ and final/.")
    dataset_text_field: str | None = Field(None, description="The field that holds a language-modelling record's text, when it is not 'text' (the same as columns={FIELD: text}).")
    packing: bool = Field(True, description="Pack several sequences per row without padding (switched off automatically if this model cannot pack exactly).")
    completion_only_loss: bool = Field(True, description="Prompt-completion data: take the loss on completion tokens only.")
    assistant_only_loss: bool = Field(False, description="Conversations ('messages'): take the loss on assistant turns only.")
    rdrop_alpha: float = Field(0.0, ge=0, description="R-Drop weight: run each batch twice and add alpha x symmetric KL (0 = off; needs dropout in the model).")


def sft_loss(model: Any, batch: PackedBatch) -> StepOutput:
    """Summed target-token NLL."""
    logps, _ = batch_target_logps(model, batch)
    return StepOutput(-logps.sum())


def rdrop_loss(alpha: float):
    """R-Drop as its Eq. 3 states it: both passes' NLL summed, plus alpha times the symmetric KL. The
    logged `nll` is the mean of the two passes, comparable with plain SFT's loss."""

    def loss(model: Any, batch: PackedBatch) -> StepOutput:
        logps_a, logits_a = batch_target_logps(model, batch)
        logps_b, logits_b = batch_target_logps(model, batch)
        nll_sum = -(logps_a.sum() + logps_b.sum())
        kl = rdrop_kl(logits_a, logits_b).index_select(0, batch.target_index).sum()
        return StepOutput(nll_sum + alpha * kl, {"nll": nll_sum.detach() / 2, "rdrop_kl": kl.detach()})

    return loss


def sft_collate(pack: bool, pad_id: int, pair_cost: float = 0.0):
    def collate(examples: list[TokenizedExample]) -> PackedBatch:
        return layout([sft_sequence(e.input_ids, e.labels) for e in examples], pack=pack, pad_token_id=pad_id,
                      pair_cost=pair_cost)

    return collate


def run_sft(config: SFTConfig, model: Any = None, tokenizer: Any = None,
            train_records: Any = None, eval_records: Any = None) -> TrainResult:
    """Run SFT as configured. `model`, `tokenizer` and the records may be given in memory (Python API)."""
    config, model = model_argument(config, model)
    train_raw, eval_raw = read_splits(config, train_records, eval_records, validate=to_sft_example)
    tokenizer = tokenizer or load_tokenizer_for(config, model)
    vocab = declared_vocab_size(config, model)
    train_set, report = prepare_sft(train_raw, tokenizer, config.max_length, vocab,
                                    config.completion_only_loss, config.assistant_only_loss, name="train")
    log.info(report.summary("train"))
    eval_set = None
    if eval_raw:
        eval_set, eval_report = prepare_sft(eval_raw, tokenizer, config.max_length, vocab, config.completion_only_loss,
                                            config.assistant_only_loss, name="eval")
        log.info(eval_report.summary("eval"))
    model, tokenizer = load_policy(config, model, tokenizer)
    longest = max(len(e) for e in train_set)
    collate = sft_collate(resolve_packing(config.packing, model, longest), pad_token_id(tokenizer, model), pair_cost(model))
    loss = rdrop_loss(config.rdrop_alpha) if config.rdrop_alpha > 0 else sft_loss
    return train(model, tokenizer, config, train_set, collate, loss, eval_set, eval_loss_fn=sft_loss)
