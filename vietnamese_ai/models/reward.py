"""Reward models: a scalar head on a causal-LM backbone, read at the last token of each response
(prompt + response + EOS).

Architectures with a transformers sequence-classification class use
`AutoModelForSequenceClassification(num_labels=1)`, so an existing reward checkpoint loads as it is
and `final/` loads back the same way. Others get `ScalarHeadModel`, our own linear head on
`AutoModel`.

Rewards are read through a forward hook on the head (`score`), which the transformers classes apply at
every position before pooling. That keeps the model's own forward (and so DDP/FSDP wrappers) while
reading any number of sequences per row: packing and prefix sharing work as for the LM losses.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.models.forward import model_inputs, unwrap
from vietnamese_ai.models.loading import LOAD_ERRORS, _load_error, check_safetensors, is_peft_model, resolve_dtype

OWN_HEAD_FILE = "scalar_head.safetensors"
STATS_FILE = "reward_stats.json"


class ScalarHeadModel(torch.nn.Module):
    """A transformers backbone (`AutoModel`) with a linear scalar head `score` at every position."""

    def __init__(self, backbone: Any):
        super().__init__()
        self.model = backbone
        self.config = backbone.config
        self.score = torch.nn.Linear(backbone.config.hidden_size, 1, bias=False)
        torch.nn.init.normal_(self.score.weight, std=getattr(backbone.config, "initializer_range", 0.02))

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            **kwargs).last_hidden_state
        logits = self.score(hidden)
        return SimpleNamespace(logits=logits)

    def get_input_embeddings(self) -> Any:
        return self.model.get_input_embeddings()

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.model.gradient_checkpointing_enable(**kwargs)

    def save_pretrained(self, path: str, state_dict: dict | None = None, **kwargs: Any) -> None:
        state = state_dict if state_dict is not None else self.state_dict()
        self.model.save_pretrained(path, state_dict={k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        save_file({"weight": state["score.weight"].detach().contiguous()}, os.path.join(path, OWN_HEAD_FILE))

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> "ScalarHeadModel":
        from transformers import AutoModel

        model = cls(AutoModel.from_pretrained(path, **kwargs))
        head = os.path.join(path, OWN_HEAD_FILE)
        if os.path.isfile(head):
            model.score.weight.data.copy_(load_file(head)["weight"])
        return model


def load_reward_model(name_or_path: str, dtype: str = "float32", attn_implementation: str | None = None,
                      trust_remote_code: bool = False, own_head: bool = False) -> Any:
    """A reward model from a checkpoint: a sequence-classification model (num_labels=1), or
    `ScalarHeadModel` when the architecture has none, when asked, or when the checkpoint is one."""
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if os.path.isdir(name_or_path):
        check_safetensors(name_or_path)
    try:
        if own_head or os.path.isfile(os.path.join(name_or_path, OWN_HEAD_FILE)):
            return ScalarHeadModel.from_pretrained(name_or_path, **kwargs)
        if _is_sequence_classifier(name_or_path, trust_remote_code):
            model = AutoModelForSequenceClassification.from_pretrained(name_or_path, **kwargs)  # its own head, as is
            if model.config.num_labels != 1:
                raise ConfigError(f"model_name_or_path: '{name_or_path}' is a classifier with {model.config.num_labels} "
                                  f"labels; a reward model has one (use it as a scorer with classifier:MODEL:LABEL)")
            return model
        try:
            return AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=1, **kwargs)
        except ValueError as e:
            if "Unrecognized configuration class" not in str(e):
                raise
            return ScalarHeadModel.from_pretrained(name_or_path, **kwargs)  # no sequence-classification class
    except LOAD_ERRORS as e:
        raise _load_error("reward model", name_or_path, e) from None


def _is_sequence_classifier(name_or_path: str, trust_remote_code: bool) -> bool:
    """Whether a checkpoint already is a sequence classifier (then its head is loaded, not replaced)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    return any(a.endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))


def reward_model_from(model: Any, own_head: bool = False) -> Any:
    """A reward model with the weights of `model`: returned as is if it already is one; a causal LM
    object (a LoRA one with its adapter merged) is saved to a temporary directory and reloaded with a
    scalar head."""
    import tempfile

    if is_reward_model(model):
        return model
    if is_peft_model(model):  # a LoRA policy: its adapter merged into a copy of the weights
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(
            next(model.parameters()).dtype, "float32")
        reward_model = load_reward_model(tmp, dtype, own_head=own_head)
    # Keep the original name, not the temporary directory, so its tokenizer can still be found.
    reward_model.config._name_or_path = getattr(model.config, "_name_or_path", "")
    return reward_model


def head_module(model: Any) -> torch.nn.Module:
    """The scalar head (under DDP/PEFT wrappers, PEFT's trainable copy of it)."""
    inner = unwrap(model)
    inner = inner.get_base_model() if is_peft_model(inner) else inner
    for name in ("score", "classifier"):
        head = getattr(inner, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise ConfigError(f"{type(inner).__name__} has no scalar head ('score'); it is not a reward model")


def is_reward_model(model: Any) -> bool:
    try:
        head_module(model)
    except ConfigError:
        return False
    return True


def head_outputs(model: Any, batch: PackedBatch) -> torch.Tensor:
    """The scalar head's output at every position of the batch, read through a forward hook (the
    model's own forward, so wrappers and packed masks work as for the language-model losses).

    Shape: returns (R * L,) in the model's dtype
    """
    captured: dict[str, torch.Tensor] = {}
    handle = head_module(model).register_forward_hook(lambda module, args, output: captured.__setitem__("out", output))
    try:
        model(**model_inputs(model, batch), use_cache=False)
    finally:
        handle.remove()
    return captured["out"].reshape(-1)


def sequence_rewards(model: Any, batch: PackedBatch) -> torch.Tensor:
    """The reward of each group (response): the head's output at the group's last token.

    Shape: returns (num_groups,) float
    """
    return head_outputs(model, batch)[batch.group_ends].float()


def set_pad_token(model: Any, pad_token_id: int | None) -> None:
    """Sequence-classification forwards refuse batches without a pad token id in the config."""
    config = unwrap(model).config
    if getattr(config, "pad_token_id", None) is None and pad_token_id is not None:
        config.pad_token_id = pad_token_id


def write_reward_stats(path: str, mean: float, std: float, count: int) -> None:
    """Reward normalisation statistics next to the weights, for normalised scoring."""
    stats = {"mean": mean, "std": std, "count": count}
    with open(os.path.join(path, STATS_FILE), "w") as f:
        json.dump(stats, f, indent=2)
    config_path = os.path.join(path, "config.json")
    if os.path.isfile(config_path):  # a full model: also in its config, so that it loads with the weights
        with open(config_path) as f:
            config = json.load(f)
        config.update({"reward_mean": mean, "reward_std": std})
        tmp = config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f, indent=2)
        os.replace(tmp, config_path)


def read_reward_stats(path: str) -> dict[str, float] | None:
    stats = os.path.join(path, STATS_FILE)
    if os.path.isfile(stats):
        with open(stats) as f:
            return json.load(f)
    return None


def has_trained_head(path: str, trust_remote_code: bool = False, kind: str = "reward model") -> bool:
    """Whether a checkpoint is a reward model (a sequence classifier, our own scalar head, or a
    sequence-classification LoRA adapter), rather than a model whose head would be new."""
    from vietnamese_ai.models.loading import adapter_task

    if adapter_task(path) == "SEQ_CLS":
        return True
    try:
        return _is_sequence_classifier(path, trust_remote_code) or os.path.isfile(os.path.join(path, OWN_HEAD_FILE))
    except LOAD_ERRORS as e:
        raise _load_error(kind, path, e) from None


def load_reward_for_scoring(path: str, dtype: str = "float32", trust_remote_code: bool = False,
                            trainable: bool = False, key: str = "model_name_or_path") -> Any:
    """A trained reward model from `final/`: a full checkpoint, or a LoRA adapter on its base.

    Refuses what has no trained head: a plain causal LM would be scored through a randomly initialised
    head, and a causal-LM adapter is a policy, not a reward model. The errors name `key`, the config
    key that gave `path` (`reward` or `scorer` when a scorer spec named it)."""
    from vietnamese_ai.models.loading import adapter_base, adapter_task

    if os.path.isdir(path):
        check_safetensors(path)
    task = adapter_task(path)
    if task is not None:
        if task != "SEQ_CLS":
            raise ConfigError(f"{key}: '{path}' is a {task} LoRA adapter (a language model), not a "
                              f"reward model; train one with `vietnamese-ai reward`")
        from peft import PeftModel

        base = load_reward_model(adapter_base(path), dtype, trust_remote_code=trust_remote_code)
        return PeftModel.from_pretrained(base, path, is_trainable=trainable)
    if not has_trained_head(path, trust_remote_code, kind=f"{key}: reward model"):
        raise ConfigError(f"{key}: '{path}' has no trained reward head (it is not a sequence-"
                          f"classification checkpoint); scoring with a random head would be meaningless; train one "
                          f"with `vietnamese-ai reward`")
    return load_reward_model(path, dtype, trust_remote_code=trust_remote_code)
