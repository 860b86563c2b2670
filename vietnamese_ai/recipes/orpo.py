"""ORPO (Hong et al., 2024): supervised fine-tuning and preference alignment in one stage, without a
reference model. The loss is the chosen response's per-token NLL plus lambda (`beta`, TRL's name)
times the log odds ratio term; see losses/preference.py: orpo_loss.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.losses.preference import orpo_loss
from vietnamese_ai.models.reference import response_logps
from vietnamese_ai.data.preference import to_pair
from vietnamese_ai.recipes.common import load_policy, load_tokenizer_for, model_argument, read_splits
from vietnamese_ai.recipes.preference import PreferenceConfig, collate_for, pair_metrics, read_pairs
from vietnamese_ai.training.loop import StepOutput, TrainResult, train


class ORPOConfig(PreferenceConfig):
    output_dir: str = Field("runs/orpo", description="Directory for config.yaml, metrics.jsonl, checkpoints/ and final/.")
    learning_rate: float = Field(8e-6, ge=0, description="Peak learning rate (AdamW); the ORPO paper uses 8e-6 for 7B models.")
    beta: float = Field(0.1, gt=0, description="lambda: weight of the odds-ratio term against the NLL (TRL calls it beta).")


def orpo_loss_fn(config: ORPOConfig):
    def loss(model: Any, batch: PackedBatch) -> StepOutput:
        logps, logits = response_logps(model, batch)
        lengths = batch.response_lengths()
        pi_w, pi_l = logps[0::2], logps[1::2]
        losses, rewards_w, rewards_l, nll, ratio = orpo_loss(pi_w / lengths[0::2], pi_l / lengths[1::2], config.beta)
        metrics = pair_metrics(pi_w, pi_l, rewards_w, rewards_l, logits, lengths)
        metrics.update({"nll_loss": nll.sum(), "log_odds_ratio": ratio.sum()})
        return StepOutput(losses.sum(), metrics)

    return loss


def run_orpo(config: ORPOConfig, model: Any = None, tokenizer: Any = None,
             train_records: Any = None, eval_records: Any = None) -> TrainResult:
    config, model = model_argument(config, model)
    train_raw, eval_raw = read_splits(config, train_records, eval_records, validate=to_pair)
    tokenizer = tokenizer or load_tokenizer_for(config, model)
    train_set = read_pairs(train_raw, tokenizer, config.max_length, "train")
    eval_set = read_pairs(eval_raw, tokenizer, config.max_length, "eval")
    model, tokenizer = load_policy(config, model, tokenizer)
    return train(model, tokenizer, config, train_set, collate_for(config, model, tokenizer, train_set), orpo_loss_fn(config), eval_set)
