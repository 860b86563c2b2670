"""KTO (Ethayarajh et al., 2024): alignment from unpaired examples, each response labelled desirable
or undesirable. The reference point z0 is a batch estimate of KL(policy || reference) from mismatched
pairs: each prompt with another example's completion (fixed before training, so that reference
log-probs can be precomputed). Preference pairs are accepted too; each gives one desirable and one
undesirable example.

z0 is estimated per micro-batch and process (TRL averages it over processes); it is detached, so it
only shifts the point rewards are measured against.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from pydantic import Field

from vietnamese_ai.data.layout import PackedBatch, layout
from vietnamese_ai.data.preference import assign_kl_completions, branched_sequences, to_unpaired, tokenize_unpaired
from vietnamese_ai.data.types import TokenizedUnpaired
from vietnamese_ai.losses.preference import kto_kl_estimate, kto_loss
from vietnamese_ai.models.forward import unwrap
from vietnamese_ai.models.reference import Reference, summed_logps
from vietnamese_ai.recipes.common import load_policy, load_tokenizer_for, model_argument, pad_token_id, pair_cost, read_splits
from vietnamese_ai.recipes.preference import ReferenceConfig, attach_reference_logps, build_reference, layout_flags, tokenize_records
from vietnamese_ai.training.loop import StepOutput, TrainResult, train

log = logging.getLogger("vietnamese_ai")


class KTOConfig(ReferenceConfig):
    output_dir: str = Field("runs/kto", description="Directory for config.yaml, metrics.jsonl, checkpoints/ and final/.")
    desirable_weight: float = Field(1.0, gt=0, description="lambda_D: weight of desirable examples' losses.")
    undesirable_weight: float = Field(1.0, gt=0, description="lambda_U: weight of undesirable examples' losses.")


def kto_collate(pack: bool, share: bool, pad_id: int, cost: float, with_kl_branch: bool = False):
    """Examples as a PackedBatch of [prompt | completion] (group i), with the KL pairs
    [prompt | other completion] as a second batch in extras. `with_kl_branch=True` lays both
    completions out in one batch instead (groups 2i, 2i+1), for the reference pass."""

    def collate(examples: list[TokenizedUnpaired]) -> PackedBatch:
        if with_kl_branch:
            sequences = [s for i, e in enumerate(examples)
                         for s in branched_sequences(e.prompt_ids, [e.completion_ids, e.kl_completion_ids], 2 * i, share)]
            return layout(sequences, pack=pack, num_groups=2 * len(examples), pad_token_id=pad_id, pair_cost=cost)

        def batch_of(responses: list[list[int]]) -> PackedBatch:
            sequences = [branched_sequences(e.prompt_ids, [r], i, False)[0] for i, (e, r) in enumerate(zip(examples, responses))]
            return layout(sequences, pack=pack, num_groups=len(examples), num_items=len(examples),
                          pad_token_id=pad_id, pair_cost=cost)

        batch = batch_of([e.completion_ids for e in examples])
        batch.extras["kl_batch"] = batch_of([e.kl_completion_ids for e in examples])
        batch.extras["desirable"] = torch.tensor([e.desirable for e in examples])
        if examples[0].ref_logps is not None:
            batch.extras["ref_logps"] = torch.tensor([e.ref_logps for e in examples], dtype=torch.float32)
        return batch

    return collate


def _subset_mean(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return values[mask].sum(), mask.sum()


def kto_loss_fn(config: KTOConfig, reference: Reference | None):
    def loss(model: Any, batch: PackedBatch) -> StepOutput:
        kl_batch, desirable = batch.extras["kl_batch"], batch.extras["desirable"]
        pi = summed_logps(model, batch)
        with torch.no_grad():  # z0 is not back-propagated through: no graph for the KL pairs
            pi_kl = summed_logps(unwrap(model), kl_batch)
        if "ref_logps" in batch.extras:
            ref, ref_kl = batch.extras["ref_logps"][:, 0], batch.extras["ref_logps"][:, 1]
        else:
            ref, ref_kl = reference.logps(batch), reference.logps(kl_batch)
        kl = kto_kl_estimate(pi_kl, ref_kl)
        losses, rewards = kto_loss(pi, ref, desirable, kl, config.beta, config.desirable_weight, config.undesirable_weight)
        n = float(len(pi))
        return StepOutput(losses.sum(), {
            "kl": kl * n,
            "rewards/chosen": _subset_mean(rewards, desirable), "rewards/rejected": _subset_mean(rewards, ~desirable),
            "logps/chosen": _subset_mean(pi.detach(), desirable), "logps/rejected": _subset_mean(pi.detach(), ~desirable),
        })

    return loss


def read_unpaired(records: Any, tokenizer: Any, config: KTOConfig, name: str) -> list[TokenizedUnpaired] | None:
    if records is None:
        return None
    examples = tokenize_records(records, to_unpaired, tokenize_unpaired, tokenizer, config.max_length, name)
    desirable = sum(e.desirable for e in examples)
    if name == "train" and desirable in (0, len(examples)):
        log.warning("KTO %s data: all %d examples are %s; the loss then only pushes one way, and the rewards/%s "
                    "metrics stay empty", name, len(examples), "desirable" if desirable else "undesirable",
                    "rejected" if desirable else "chosen")
    assign_kl_completions(examples, config.seed, config.max_length)
    return examples


def run_kto(config: KTOConfig, model: Any = None, tokenizer: Any = None, ref_model: Any = None,
            train_records: Any = None, eval_records: Any = None) -> TrainResult:
    config, model = model_argument(config, model)
    config, ref_model = model_argument(config, ref_model, "ref_model_name_or_path")
    train_raw, eval_raw = read_splits(config, train_records, eval_records, validate=to_unpaired)
    tokenizer = tokenizer or load_tokenizer_for(config, model)
    train_set = read_unpaired(train_raw, tokenizer, config, "train")
    eval_set = read_unpaired(eval_raw, tokenizer, config, "eval")
    model, tokenizer = load_policy(config, model, tokenizer)
    reference, reference_model = build_reference(config, model, ref_model)
    pack, share = layout_flags(config, model, train_set, reference_model)
    args = (pack, share, pad_token_id(tokenizer, model), pair_cost(model))
    if config.precompute_ref_log_probs:
        attach_reference_logps(config, reference, [train_set, eval_set], kto_collate(*args, with_kl_branch=True), groups=2,
                               responses=lambda e: [e.prompt_ids, e.completion_ids, e.kl_completion_ids],
                               tokenizer=tokenizer, layout={"method": "kto", "pack": pack, "share": share})
        reference = reference_model = None
    return train(model, tokenizer, config, train_set, kto_collate(*args), kto_loss_fn(config, reference), eval_set)
