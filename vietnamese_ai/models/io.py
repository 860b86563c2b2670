"""Save models in Hugging Face format and restore trained weights from such a directory.

A full model is saved with `save_pretrained` (safetensors); a LoRA model saves its adapter (PEFT
format) unless merging is asked for. Restoring reads safetensors only, never pickles.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vietnamese_ai.models.forward import unwrap
from vietnamese_ai.models.loading import is_peft_model


# Names of submodules saved beside the model: a head as <name>.safetensors, a transformers model (PPO's
# separate value model) in its own directory <name>/, in Hugging Face format.
HEADS_ATTRIBUTE = "auxiliary_heads"


def attach_scalar_head(model: Any, name: str = "score_head") -> torch.nn.Module:
    """Add a linear scalar head on the final hidden state as a submodule (so it trains with the
    model), saved beside it rather than inside it: final/ still loads as a plain causal LM."""
    from vietnamese_ai.models.forward import base_model

    config = base_model(model).config
    head = torch.nn.Linear(config.hidden_size, 1).to(next(model.parameters()).dtype)
    torch.nn.init.normal_(head.weight, std=getattr(config, "initializer_range", 0.02))
    torch.nn.init.zeros_(head.bias)
    return attach_auxiliary(model, name, head)


def attach_auxiliary(model: Any, name: str, module: torch.nn.Module) -> torch.nn.Module:
    """Make `module` a submodule of `model` (so it trains, moves and is checkpointed with it) that
    save_model writes beside the model rather than inside it."""
    setattr(model, name, module)
    setattr(model, HEADS_ATTRIBUTE, [*getattr(model, HEADS_ATTRIBUTE, []), name])
    return module


def save_model(model: Any, tokenizer: Any, path: str, state_dict: dict[str, torch.Tensor] | None = None,
               merge_lora: bool = False) -> None:
    """Write `model` (and its tokenizer) to `path` in Hugging Face format; auxiliary heads go to
    their own safetensors files. `state_dict`: the whole model's tensors, gathered from the shards of a
    sharded run (whose modules hold only their own shard), heads included."""
    model = unwrap(model)
    heads = {name: getattr(model, name) for name in getattr(model, HEADS_ATTRIBUTE, [])}
    for name, head in heads.items():
        own = None if state_dict is None else {k[len(name) + 1:]: v for k, v in state_dict.items()
                                               if k.startswith(f"{name}.")}
        if hasattr(head, "save_pretrained"):
            save_model(head, tokenizer, os.path.join(path, name), own, merge_lora)
        else:
            tensors = head.state_dict() if own is None else own
            save_file({k: v.detach().contiguous() for k, v in tensors.items()}, os.path.join(path, f"{name}.safetensors"))
        delattr(model, name)  # out of the way of save_pretrained, put back below
    if state_dict is not None and heads:
        state_dict = {k: v for k, v in state_dict.items() if k.split(".")[0] not in heads}
    try:
        _save_weights(model, path, state_dict, merge_lora)
    finally:
        for name, head in heads.items():
            setattr(model, name, head)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def _save_weights(model: Any, path: str, state_dict: dict[str, torch.Tensor] | None, merge_lora: bool) -> None:
    if merge_lora and is_peft_model(model):
        # Merge into a copy so that a run which goes on training keeps its adapters.
        merged = _unsharded_copy(model, state_dict).merge_and_unload()
        merged.save_pretrained(path)
    else:
        if is_peft_model(model):
            _absolute_base_path(model)
        model.save_pretrained(path, **({"state_dict": state_dict} if state_dict is not None else {}))


def _unsharded_copy(model: Any, state_dict: dict[str, torch.Tensor] | None) -> Any:
    """A copy of a PEFT model to merge. A sharded model (`state_dict` gathered from its shards) cannot
    be copied, each of its modules holding a shard: the copy is built empty from its configuration and
    filled with the gathered tensors."""
    import copy

    if state_dict is None:
        return copy.deepcopy(model)
    from peft import get_peft_model

    base = model.get_base_model()
    with torch.device("meta"):
        fresh = type(base)(base.config)
    fresh = get_peft_model(fresh.to(base.dtype), copy.deepcopy(model.peft_config[model.active_adapter]),
                           adapter_name=model.active_adapter)
    fresh.to_empty(device="cpu")
    fresh.get_base_model().tie_weights()   # to_empty gives tied parameters separate storage
    fresh.load_state_dict(state_dict, strict=True)
    return fresh


def _absolute_base_path(model: Any) -> None:
    """An adapter records its base model's name or path; a relative local path would only resolve
    from the directory the run started in, so local paths are recorded absolute."""
    for config in model.peft_config.values():
        base = config.base_model_name_or_path
        if base and os.path.isdir(base):
            config.base_model_name_or_path = os.path.abspath(base)


def _safetensors_files(path: str, stem: str) -> list[str]:
    index = os.path.join(path, f"{stem}.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(path, shard) for shard in shards]
    single = os.path.join(path, f"{stem}.safetensors")
    return [single] if os.path.isfile(single) else []


def load_weights(model: Any, path: str) -> None:
    """Restore the trained weights saved by `save_model` into `model` (for resuming)."""
    model = unwrap(model)
    heads = getattr(model, HEADS_ATTRIBUTE, [])
    for name in heads:
        head = getattr(model, name)
        if hasattr(head, "save_pretrained"):
            load_weights(head, os.path.join(path, name))
        else:
            head.load_state_dict(load_file(os.path.join(path, f"{name}.safetensors")))
    if is_peft_model(model):
        from peft import set_peft_model_state_dict

        files = _safetensors_files(path, "adapter_model")
        if not files:
            raise FileNotFoundError(f"{path}: no adapter_model.safetensors")
        state: dict[str, torch.Tensor] = {}
        for file in files:
            state.update(load_file(file))
        set_peft_model_state_dict(model, state)
        return
    files = _safetensors_files(path, "model")
    if not files:
        raise FileNotFoundError(f"{path}: no model.safetensors")
    state = {}
    for file in files:
        state.update(load_file(file))
    result = model.load_state_dict(state, strict=False)
    # save_pretrained drops tied weights (lm_head = embeddings); anything else missing is an error.
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {}) | set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in result.missing_keys if k not in tied and k.split(".")[0] not in heads]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{path}: checkpoint does not match the model (missing {missing[:3]}, "
                           f"unexpected {result.unexpected_keys[:3]})")
