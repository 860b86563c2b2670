"""Reward model training (Bradley-Terry) on preference pairs.

A scalar head on any causal-LM backbone is read at the EOS of prompt + response. Pairs use the same
layout as DPO (the prompt computed once, pairs packed). After training, the mean and standard
deviation of the rewards over the training responses are saved with the model (reward_stats.json,
and reward_mean/reward_std in config.json) for reward normalisation when scoring (normalize=true).
"""

from __future__ import annotations

import logging
import statistics
from typing import Any, ClassVar

import torch
from pydantic import Field

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.data.types import TokenizedPair
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.losses.reward import bradley_terry_loss
from vietnamese_ai.models.reference import evaluation_mode
from vietnamese_ai.models.loading import adapter_task, is_peft_model, load_causal_lm
from vietnamese_ai.models.reward import (
    is_reward_model,
    load_reward_for_scoring,
    load_reward_model,
    reward_model_from,
    sequence_rewards,
    set_pad_token,
    write_reward_stats,
)
from vietnamese_ai.recipes.common import (
    load_tokenizer_for,
    prepare_trainable,
    quiet_transformers,
    model_argument,
    read_splits,
)
from vietnamese_ai.data.preference import to_pair
from vietnamese_ai.recipes.preference import collate_for, read_pairs
from vietnamese_ai.training.config import TrainingConfig
from vietnamese_ai.training.loop import StepOutput, TrainResult, process_state, train

log = logging.getLogger("vietnamese_ai")


class RewardConfig(TrainingConfig):
    causal_lm_keys: ClassVar[tuple[str, ...]] = ()   # a causal LM, its adapter or a reward model (load_reward_policy)
    output_dir: str = Field("runs/reward", description="Directory for config.yaml, metrics.jsonl, checkpoints/ and final/.")
    learning_rate: float = Field(1e-5, ge=0, description="Peak learning rate (AdamW).")
    packing: bool = Field(True, description="Pack several pairs per row without padding (off automatically if the model cannot pack exactly).")
    prefix_sharing: bool = Field(True, description="Compute each prompt once: [prompt | chosen | rejected] with the responses as separate branches.")
    center_rewards_coefficient: float | None = Field(None, ge=0, description="Weight of (r_chosen + r_rejected)^2, which keeps rewards centred on 0.")
    disable_dropout: bool = Field(True, description="Switch dropout off, so that chosen and rejected are scored by the same function (as in TRL).")
    own_head: bool = Field(False, description="Use our own linear head even if the architecture has a sequence-classification class.")


def reward_loss_fn(config: RewardConfig):
    def loss(model: Any, batch: PackedBatch) -> StepOutput:
        rewards = sequence_rewards(model, batch)
        r_w, r_l = rewards[0::2], rewards[1::2]
        losses = bradley_terry_loss(r_w, r_l, batch.extras.get("margin"), config.center_rewards_coefficient or 0.0)
        return StepOutput(losses.sum(), {
            "accuracy": (r_w > r_l).float().sum(),
            "margin": (r_w - r_l).detach().sum(),
            "mean_reward": ((r_w + r_l) / 2).detach().sum(),
        })

    return loss


def load_reward_policy(config: RewardConfig, model: Any = None, tokenizer: Any = None) -> tuple[Any, Any]:
    """The reward model to train: from config.model_name_or_path (a causal LM, a LoRA adapter of one,
    or an existing reward checkpoint), or built around a given model object; with LoRA the head trains
    too.

    A causal-LM adapter (a LoRA SFT run's final/) is merged into its base first: the reward model
    starts from the SFT policy's weights. Those merged weights exist nowhere on disk, so a LoRA reward
    model on top of them is saved merged (final/ is then a full model)."""
    quiet_transformers()
    torch.manual_seed(config.seed)  # the new head's initialisation
    from_policy_adapter = False
    if model is None:
        if not config.model_name_or_path:
            raise ConfigError("model_name_or_path: required (a hub name or a local model directory)")
        if adapter_task(config.model_name_or_path) == "SEQ_CLS":
            model = load_reward_for_scoring(config.model_name_or_path, config.dtype, config.trust_remote_code,
                                            trainable=True)
        elif adapter_task(config.model_name_or_path) is not None:
            policy = load_causal_lm(config.model_name_or_path, config.dtype, trust_remote_code=config.trust_remote_code)
            tokenizer = tokenizer or load_tokenizer_for(config, policy)
            model, from_policy_adapter = reward_model_from(policy, own_head=config.own_head), True
        else:
            model = load_reward_model(config.model_name_or_path, config.dtype, config.attn_implementation,
                                      config.trust_remote_code, own_head=config.own_head)
    else:
        tokenizer = tokenizer or load_tokenizer_for(config, model)  # from the original model's name or path
        from_policy_adapter = is_peft_model(model) and not is_reward_model(model)
        model = reward_model_from(model, own_head=config.own_head)
    tokenizer = tokenizer or load_tokenizer_for(config, model)
    set_pad_token(model, tokenizer.pad_token_id)
    if config.use_lora and not hasattr(model, "get_base_model") and type(model).__name__ == "ScalarHeadModel":
        raise ConfigError("use_lora: LoRA needs a transformers sequence-classification model; this one uses own_head")
    if from_policy_adapter and config.use_lora and not config.merge_lora:
        log.warning("the reward model starts from a LoRA policy merged in memory; final/ is saved merged "
                    "(merge_lora=true) because an adapter would point at a base model without the policy's adapter")
        config.merge_lora = True
    return prepare_trainable(config, model, task_type="SEQ_CLS"), tokenizer


@torch.no_grad()
def reward_statistics(model: Any, pairs: list[TokenizedPair], collate: Any, batch_size: int) -> tuple[float, float]:
    """Mean and standard deviation of the rewards of every training response (chosen and rejected)."""
    device = next(model.parameters()).device
    values: list[float] = []
    with evaluation_mode(model):
        for start in range(0, len(pairs), batch_size):
            values += sequence_rewards(model, collate(pairs[start:start + batch_size]).to(device)).tolist()
    return statistics.fmean(values), statistics.pstdev(values)


def run_reward(config: RewardConfig, model: Any = None, tokenizer: Any = None,
               train_records: Any = None, eval_records: Any = None) -> TrainResult:
    config, model = model_argument(config, model)
    train_raw, eval_raw = read_splits(config, train_records, eval_records, validate=to_pair)
    tokenizer = tokenizer or load_tokenizer_for(config, model)
    train_set = read_pairs(train_raw, tokenizer, config.max_length, "train")
    eval_set = read_pairs(eval_raw, tokenizer, config.max_length, "eval")
    model, tokenizer = load_reward_policy(config, model, tokenizer)
    collate = collate_for(config, model, tokenizer, train_set, measure=sequence_rewards)
    result = train(model, tokenizer, config, train_set, collate, reward_loss_fn(config), eval_set)
    mean, std = reward_statistics(result.model, train_set, collate, config.per_device_eval_batch_size)
    if process_state().is_main_process:
        write_reward_stats(result.final_dir, mean, std, 2 * len(train_set))
    log.info("reward statistics over %d training responses: mean %.4f, std %.4f", 2 * len(train_set), mean, std)
    return result
