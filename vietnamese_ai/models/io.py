"""Save models in Hugging Face format and restore trained weights from such a directory.

A full model is saved with `save_pretrained` (safetensors); a LoRA model saves its adapter (PEFT
format) unless merging is asked for. Restoring reads safetensors only, never pickles.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file

from vietnamese_ai.models.forward import unwrap
from vietnamese_ai.models.loading import is_peft_model


def save_model(model: Any, tokenizer: Any, path: str, state_dict: dict[str, torch.Tensor] | None = None,
               merge_lora: bool = False) -> None:
    """Write `model` (and its tokenizer) to `path` in Hugging Face format."""
    model = unwrap(model)
    if merge_lora and is_peft_model(model):
        # Merge into a copy so that a run which goes on training keeps its adapters.
        import copy

        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(path)
    elif state_dict is not None:
        model.save_pretrained(path, state_dict=state_dict)
    else:
        model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


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
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{path}: checkpoint does not match the model (missing {missing[:3]}, "
                           f"unexpected {result.unexpected_keys[:3]})")
