"""Direct preference optimisation and its variants (`loss_type`): sigmoid (DPO; cDPO with
label_smoothing), ipo, hinge, robust, rpo and simpo. The losses are in losses/preference.py; this
recipe lays pairs out (prompt computed once, pairs packed), gets reference log-probs (precomputed by
default) and reports the DPO metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, model_validator

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.losses.preference import (
    LossType,
    hinge_loss,
    ipo_loss,
    rpo_loss,
    robust_loss,
    sigmoid_loss,
    simpo_loss,
)
from vietnamese_ai.models.reference import Reference, response_logps
from vietnamese_ai.data.preference import to_pair
from vietnamese_ai.recipes.common import load_policy, load_tokenizer_for, model_argument, read_splits
from vietnamese_ai.recipes.preference import (
    ReferenceConfig,
    attach_reference_logps,
    build_reference,
    collate_for,
    pair_metrics,
    read_pairs,
)
from vietnamese_ai.training.loop import StepOutput, TrainResult, train


class DPOConfig(ReferenceConfig):
    output_dir: str = Field("runs/dpo", description="Directory for config.yaml, metrics.jsonl, checkpoints/ and final/.")
    loss_type: LossType = Field(LossType.sigmoid, description="sigmoid (DPO), ipo, hinge, robust, rpo or simpo.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="sigmoid/rpo: cDPO's label-flip probability; robust: the noise rate (< 0.5).")
    rpo_alpha: float = Field(1.0, ge=0, description="rpo: weight of the chosen response's per-token NLL.")
    gamma: float = Field(0.5, description="simpo: target reward margin (SimPO's gamma; use beta around 2).")

    @model_validator(mode="after")
    def _check(self) -> "DPOConfig":
        if self.loss_type is LossType.robust and self.label_smoothing >= 0.5:
            raise ValueError("label_smoothing must be below 0.5 for the robust loss")
        return self


@dataclass
class PairLogps:
    """Per-pair inputs of the DPO-family losses. Shape: every field (B,)."""

    pi_w: torch.Tensor
    pi_l: torch.Tensor
    ref_w: torch.Tensor | None
    ref_l: torch.Tensor | None
    len_w: torch.Tensor
    len_l: torch.Tensor


# loss_type -> the pure loss with this config's hyperparameters; each returns (losses, rewards_w, rewards_l)
FAMILY = {
    LossType.sigmoid: lambda c, p: sigmoid_loss(p.pi_w, p.pi_l, p.ref_w, p.ref_l, c.beta, c.label_smoothing),
    LossType.hinge: lambda c, p: hinge_loss(p.pi_w, p.pi_l, p.ref_w, p.ref_l, c.beta),
    LossType.ipo: lambda c, p: ipo_loss(p.pi_w, p.pi_l, p.ref_w, p.ref_l, p.len_w, p.len_l, c.beta),
    LossType.robust: lambda c, p: robust_loss(p.pi_w, p.pi_l, p.ref_w, p.ref_l, c.beta, c.label_smoothing),
    LossType.rpo: lambda c, p: rpo_loss(p.pi_w, p.pi_l, p.ref_w, p.ref_l, p.len_w, c.beta, c.rpo_alpha, c.label_smoothing),
    LossType.simpo: lambda c, p: simpo_loss(p.pi_w, p.pi_l, p.len_w, p.len_l, c.beta, c.gamma),
}


def reference_logps(batch: PackedBatch, reference: Reference | None) -> torch.Tensor:
    """(2B,) reference log-probs: precomputed in the batch, or a reference pass over the same layout."""
    if "ref_logps" in batch.extras:
        return batch.extras["ref_logps"].reshape(-1)
    return reference.logps(batch)


def dpo_loss_fn(config: DPOConfig, reference: Reference | None):
    def loss(model: Any, batch: PackedBatch) -> StepOutput:
        logps, logits = response_logps(model, batch)
        lengths = batch.response_lengths()
        ref = reference_logps(batch, reference) if config.loss_type.needs_reference else None
        pair = PairLogps(logps[0::2], logps[1::2], None if ref is None else ref[0::2], None if ref is None else ref[1::2],
                         lengths[0::2], lengths[1::2])
        losses, rewards_w, rewards_l = FAMILY[config.loss_type](config, pair)
        return StepOutput(losses.sum(), pair_metrics(pair.pi_w, pair.pi_l, rewards_w, rewards_l, logits, lengths))

    return loss


def run_dpo(config: DPOConfig, model: Any = None, tokenizer: Any = None, ref_model: Any = None,
            train_records: Any = None, eval_records: Any = None) -> TrainResult:
    """Run a DPO-family method as configured; objects and in-memory records may be given (Python API)."""
    config, model = model_argument(config, model)
    config, ref_model = model_argument(config, ref_model, "ref_model_name_or_path")
    train_raw, eval_raw = read_splits(config, train_records, eval_records, validate=to_pair)
    tokenizer = tokenizer or load_tokenizer_for(config, model)
    train_set = read_pairs(train_raw, tokenizer, config.max_length, "train")
    eval_set = read_pairs(eval_raw, tokenizer, config.max_length, "eval")
    model, tokenizer = load_policy(config, model, tokenizer)
    reference, reference_model = (build_reference(config, model, ref_model) if config.loss_type.needs_reference
                                  else (None, None))
    collate = collate_for(config, model, tokenizer, train_set, reference_model)
    if reference is not None and config.precompute_ref_log_probs:
        attach_reference_logps(config, reference, [train_set, eval_set], collate, groups=2,
                               responses=lambda p: [p.prompt_ids, p.chosen_ids, p.rejected_ids], tokenizer=tokenizer,
                               layout={"method": "pairs", "pack": collate.pack, "share": collate.share})
        reference = reference_model = None  # training runs the policy alone; the reference can be freed
    return train(model, tokenizer, config, train_set, collate, dpo_loss_fn(config, reference), eval_set)
