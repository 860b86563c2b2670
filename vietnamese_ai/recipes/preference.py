"""What the preference recipes (DPO family, ORPO, KTO) share: the config keys, reading and tokenising
pairs, choosing the reference model, precomputing its log-probabilities, and the batch metrics."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from vietnamese_ai.data.layout import PackedBatch, layout
from vietnamese_ai.data.loading import Record
from vietnamese_ai.data.preference import pair_sequences, sharing_pays, to_pair, tokenize_pair
from vietnamese_ai.data.types import TokenizedPair, TruncationReport
from vietnamese_ai.errors import DataError
from vietnamese_ai.models.loading import is_peft_model, load_causal_lm
from vietnamese_ai.models.lora import adapters_are_identity
from vietnamese_ai.models.reference import (
    AdapterReference,
    FrozenReference,
    Reference,
    cache_key,
    precompute,
)
from vietnamese_ai.models.fingerprint import tokenizer_fingerprint, weights_fingerprint
from vietnamese_ai.models.forward import attn_implementation
from vietnamese_ai.models.exactness import choose_layout
from vietnamese_ai.recipes.common import pad_token_id, pair_cost
from vietnamese_ai.training.config import TrainingConfig
from vietnamese_ai.training.loop import autocast_dtype, process_state

log = logging.getLogger("vietnamese_ai")


class PreferenceConfig(TrainingConfig):
    learning_rate: float = Field(1e-6, ge=0, description="Peak learning rate (AdamW).")
    max_length: int | None = Field(1024, ge=2, description="Longest prompt + response; longer prompts are cut from the left.")
    beta: float = Field(0.1, gt=0, description="Strength of the KL regularisation towards the reference (DPO's beta).")
    packing: bool = Field(True, description="Pack several pairs per row without padding (off automatically if the model cannot pack exactly).")
    prefix_sharing: bool = Field(True, description="Compute each prompt once: [prompt | chosen | rejected] with the responses as separate branches, in each batch where the cost model says that is cheaper than two plain sequences.")
    disable_dropout: bool = Field(True, description="Switch dropout off in the policy, so that its log-probs are comparable with the reference's (as in TRL).")


class ReferenceConfig(PreferenceConfig):
    """Keys of the methods that regularise towards a reference model (DPO family, KTO)."""

    ref_model_name_or_path: str | None = Field(None, description="Reference model; default: the starting policy (with LoRA: the policy with adapters disabled).")
    precompute_ref_log_probs: bool = Field(True, description="Compute reference log-probs once before training (cached on disk) so training runs only the policy.")


def tokenize_records(records: list[Record], convert: Callable[[Record], Any], tokenize: Callable[..., Any],
                     tokenizer: Any, max_length: int | None, name: str) -> list[Any]:
    """Convert and tokenise records (one record may give several examples); reports truncation."""
    report = TruncationReport()
    examples = []
    for record in records:
        converted = convert(record)
        for item in converted if isinstance(converted, list) else [converted]:
            tokenized = tokenize(item, tokenizer, max_length, report)
            if tokenized is not None:
                examples.append(tokenized)
    log.info(report.summary(name))
    if not examples:
        raise DataError(f"{name} data: every record was dropped ({report.summary(name)}); raise max_length")
    return examples


def read_pairs(records: list[Record] | None, tokenizer: Any, max_length: int | None, name: str) -> list[TokenizedPair] | None:
    if records is None:
        return None
    return tokenize_records(records, to_pair, tokenize_pair, tokenizer, max_length, name)


def longest_sequence(examples: list[Any]) -> int:
    """The longest prompt + response of pairs or unpaired examples (what the exactness probe must cover)."""
    return max(len(e.prompt_ids) + max(len(r or []) for r in responses_of(e)) for e in examples)


def responses_of(example: Any) -> list[list[int] | None]:
    if isinstance(example, TokenizedPair):
        return [example.chosen_ids, example.rejected_ids]
    return [example.completion_ids, example.kl_completion_ids]


def layout_flags(config: Any, policy: Any, examples: list[Any], reference_model: Any = None,
                 measure: Any = None) -> tuple[bool, bool]:
    """(pack, share): each stays on only where the policy (and a separate reference) computes it
    exactly (models.exactness). `config` has `packing` and `prefix_sharing`; `measure` is what the
    probe compares (default: log-probs; reward models pass their rewards)."""
    return choose_layout([policy, reference_model], config.packing, config.prefix_sharing, measure,
                         longest_sequence(examples))


@dataclass
class PairCollate:
    """Pairs as one PackedBatch; group 2i = chosen, 2i+1 = rejected; extras carry precomputed reference
    log-probs (B, 2) and margins (B,) when the pairs have them."""

    pack: bool
    share: bool
    pad_id: int
    cost: float

    def __call__(self, pairs: list[TokenizedPair]) -> PackedBatch:
        share = self.share and sharing_pays(pairs, self.pack, self.cost)   # per batch: where it is cheaper
        batch = layout(pair_sequences(pairs, share), pack=self.pack, num_groups=2 * len(pairs),
                       num_items=len(pairs), pad_token_id=self.pad_id, pair_cost=self.cost)
        if pairs[0].ref_logps is not None:
            batch.extras["ref_logps"] = torch.tensor([p.ref_logps for p in pairs], dtype=torch.float32)
        if any(p.margin is not None for p in pairs):
            batch.extras["margin"] = torch.tensor([p.margin or 0.0 for p in pairs], dtype=torch.float32)
        return batch


def collate_for(config: Any, policy: Any, tokenizer: Any, examples: list[Any], reference_model: Any = None,
                measure: Any = None) -> PairCollate:
    pack, share = layout_flags(config, policy, examples, reference_model, measure)
    log.info("layout: packing %s, prefix sharing %s", "on" if pack else "off", "on" if share else "off")
    return PairCollate(pack, share, pad_token_id(tokenizer, policy), pair_cost(policy))


def build_reference(config: ReferenceConfig, policy: Any, ref_model: Any = None) -> tuple[Reference, Any]:
    """The reference, and the separate model behind it (None when it is the policy itself).

    By default the reference is the starting policy. With a fresh LoRA adapter that is the policy with
    its adapters switched off; with an adapter that was already trained (continuing a LoRA SFT run)
    switching it off would give the base model instead, so the starting policy is read before training
    (precomputed) or kept as a frozen, merged copy."""
    if ref_model is None and config.ref_model_name_or_path:
        ref_model = load_causal_lm(config.ref_model_name_or_path, config.dtype, attn_implementation=config.attn_implementation,
                                   trust_remote_code=config.trust_remote_code)
    if ref_model is not None:
        return FrozenReference(ref_model), ref_model
    if is_peft_model(policy) and adapters_are_identity(policy):
        return AdapterReference(policy), None
    if config.precompute_ref_log_probs:
        return FrozenReference(policy, freeze=False), None  # read before training: it is the starting policy
    frozen = copy.deepcopy(policy)
    if is_peft_model(frozen):
        frozen = frozen.merge_and_unload()
    return FrozenReference(frozen), frozen


def attach_reference_logps(config: ReferenceConfig, reference: Reference, datasets: list[list[Any] | None],
                           collate: Callable[[list[Any]], PackedBatch], groups: int,
                           responses: Callable[[Any], list[list[int] | None]], tokenizer: Any,
                           layout: dict[str, Any]) -> None:
    """Precompute reference log-probs for each dataset and store them on the examples (`ref_logps`).

    The cache key covers everything the values depend on: the token ids, every bit of the reference
    weights (adapters included when they are on), the weights' dtype, mixed precision and attention
    kernel, the tokenizer, max_length, and the layout (`layout`: packing, prefix sharing, method)."""
    model = reference.model if isinstance(reference, FrozenReference) else reference.policy
    identity = {
        "weights": weights_fingerprint(model, include_adapters=isinstance(reference, FrozenReference)),
        "dtype": str(next(model.parameters()).dtype), "autocast": str(autocast_dtype(config)),
        "attention": attn_implementation(model), "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": config.max_length, "batch_size": config.per_device_eval_batch_size, **layout,
    }
    state = process_state()   # each process computes its share of the batches; all hold the whole table
    for examples in datasets:
        if not examples:
            continue
        key = cache_key(data=data_fingerprint([responses(e) for e in examples]), **identity)
        logps = precompute(reference, examples, collate, groups, config.per_device_eval_batch_size,
                           key=key, device=state.device, autocast_dtype=autocast_dtype(config),
                           progress=not config.disable_tqdm and state.is_local_main_process,
                           rank=state.process_index, world_size=state.num_processes,
                           writes_cache=state.is_local_main_process)
        for example, row in zip(examples, logps.tolist()):
            example.ref_logps = tuple(row)


def data_fingerprint(token_lists: list[list[list[int] | None]]) -> str:
    return hashlib.sha256(json.dumps(token_lists, separators=(",", ":")).encode()).hexdigest()


def pair_metrics(pi_w: torch.Tensor, pi_l: torch.Tensor, rewards_w: torch.Tensor, rewards_l: torch.Tensor,
                 logits: torch.Tensor, lengths: torch.Tensor) -> dict[str, Any]:
    """The DPO-style metrics as sums over pairs; logits/* are token-weighted means (sum, count).

    Shape: pi_w, pi_l, rewards_w, rewards_l (B,); logits, lengths (2B,) mean logit and length per response
    """
    len_w, len_l = lengths[0::2], lengths[1::2]
    return {
        "rewards/chosen": rewards_w.sum(), "rewards/rejected": rewards_l.sum(),
        "rewards/margins": (rewards_w - rewards_l).sum(),
        "rewards/accuracies": (rewards_w > rewards_l).float().sum(),
        "logps/chosen": pi_w.detach().sum(), "logps/rejected": pi_l.detach().sum(),
        "logits/chosen": ((logits[0::2] * len_w).sum(), len_w.sum()),
        "logits/rejected": ((logits[1::2] * len_l).sum(), len_l.sum()),
    }
