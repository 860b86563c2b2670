"""PPO's value estimates: a scalar head on the policy, or a separate value model.

A value head reads the policy's own final hidden states in the forward pass that computes the
log-probs (one pass, shared trunk). A separate value model is a sequence-classification model (a
reward model, or any causal LM given a zero scalar head) whose head is read at every position: the
value model of Stiennon et al. (2020) and of TRL's PPO. Started from a trained reward model its
first estimates are already the reward model's scores, rather than zero, and the value loss no
longer pulls on the policy's weights.

The value model is attached to the policy as an auxiliary module (`value_model`), so it trains
with the policy's optimizer, moves with it between devices and goes into its checkpoints; it is
saved beside the policy as `value_model/` in Hugging Face format (a PEFT adapter under LoRA).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.models.forward import canonical_order, unwrap

log = logging.getLogger("vietnamese_ai")

VALUE_MODEL = "value_model"


def load_value_model(config: Any, pad_token_id: int | None) -> Any:
    """The value model named by config.value_model_name_or_path (to be made trainable as the policy
    is: full, or a fresh LoRA adapter). A trained reward model keeps its head (a LoRA reward model is
    merged first); any other checkpoint gets a zero head, so that its first values are 0 as the value
    head's are."""
    from vietnamese_ai.models.loading import is_peft_model
    from vietnamese_ai.models.reward import has_trained_head, head_module, load_reward_for_scoring, load_reward_model, set_pad_token

    path = config.value_model_name_or_path   # checked by check_value_model before the policy loaded
    if has_trained_head(path, config.trust_remote_code, kind="value model"):
        model = load_reward_for_scoring(path, config.dtype, config.trust_remote_code)
        if is_peft_model(model):
            model = model.merge_and_unload()
        log.info("value model: %s, starting from its trained head", path)
    else:
        model = load_reward_model(path, config.dtype, config.attn_implementation, config.trust_remote_code)
        head = head_module(model)
        torch.nn.init.zeros_(head.weight)
        if getattr(head, "bias", None) is not None:
            torch.nn.init.zeros_(head.bias)
        log.info("value model: %s, with a zero-initialised head", path)
    set_pad_token(model, pad_token_id)
    return model.requires_grad_(True)


def check_value_model(path: str, trust_remote_code: bool = False) -> None:
    """Refuse, before the policy loads, what cannot be a value model: a path that holds no model (a
    file, a directory without a config or without weights, a name the hub does not know), a language
    model's LoRA adapter, or a classifier with several labels (a value is one number). Reads configs
    and safetensors headers only, never weights."""
    from transformers import AutoConfig

    from vietnamese_ai.models.loading import LOAD_ERRORS, adapter_task, check_safetensors, plainly_local

    key = "value_model_name_or_path"
    if not os.path.exists(path) and plainly_local(path):
        raise ConfigError(f"{key}: '{path}': no such directory")
    if os.path.isfile(path):
        raise ConfigError(f"{key}: '{path}' is a file; give a model's directory (a reward model or a causal LM) "
                          f"or a hub name")
    task = adapter_task(path)
    if task not in (None, "SEQ_CLS"):
        raise ConfigError(f"{key}: '{path}' is a {task} LoRA adapter; give a reward model (full "
                          f"or LoRA) or a full checkpoint")
    if task is not None:
        return
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"{key}: '{path}' is not a model directory (it has no config.json); give a reward "
                              f"model or a causal LM")
        if not any(name.endswith((".safetensors", ".bin")) for name in os.listdir(path)):
            raise ConfigError(f"{key}: '{path}' has a config.json but no weights (*.safetensors or *.bin)")
        check_safetensors(path)
    try:   # a hub name's config is a small download; a local one is read from disk
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except LOAD_ERRORS as e:
        detail = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        where = "its config.json could not be read" if os.path.isdir(path) else \
            "not a local directory, and the Hugging Face hub did not provide it"
        raise ConfigError(f"{key}: '{path}' is not a model: {where} ({detail})") from None
    labels = len(getattr(config, "id2label", None) or {}) or getattr(config, "num_labels", 1)
    classifier = any(a.endswith("ForSequenceClassification") for a in getattr(config, "architectures", None) or [])
    if classifier and labels != 1:
        raise ConfigError(f"{key}: '{path}' is a classifier with {labels} labels; a value "
                          f"model has one (a reward model, or a causal LM to give a fresh head)")


def attach_value_model(policy: Any, value_model: Any) -> None:
    """Make `value_model` an auxiliary module of the policy: trained, moved and checkpointed with it."""
    from vietnamese_ai.models.io import attach_auxiliary

    attach_auxiliary(unwrap(policy), VALUE_MODEL, value_model)


def separate_value_model(policy: Any) -> Any:
    return getattr(unwrap(policy), VALUE_MODEL, None)


def token_values(value_model: Any, batch: PackedBatch) -> torch.Tensor:
    """The value model's estimate at every target position, read where the policy's logits are (the
    position before each target), in the batch's target order.

    Shape: returns (P,) float32
    """
    from vietnamese_ai.models.reward import head_outputs

    if not isinstance(batch, PackedBatch):
        raise TypeError("a separate value model reads packed or plain batches, not the prompt-cache layout")
    kept = head_outputs(value_model, batch)[batch.logits_mask.reshape(-1)]
    return kept.index_select(0, batch.target_index).float()


def ordered_token_values(value_model: Any, batch: PackedBatch) -> torch.Tensor:
    """token_values listed sequence by sequence, whatever the layout (for the exactness probe)."""
    return token_values(value_model, batch)[canonical_order(batch).to(batch.targets.device)]


def forward_with_values(model: Any, batch: Any, temperature: float,
                        entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The policy's target log-probs (and entropies) and the value of every target position: from the
    policy's value head in the same pass, or from its separate value model.

    Shape: returns (P,) float32, (P,) float32 or None, (P,) float32
    """
    from vietnamese_ai.models.prompt_cache import rollout_forward

    head = getattr(unwrap(model), "value_head", None)
    logps, entropies, values = rollout_forward(model, batch, temperature, entropy, value_head=head)
    if head is None:
        values = token_values(separate_value_model(model), batch)
    return logps, entropies, values
