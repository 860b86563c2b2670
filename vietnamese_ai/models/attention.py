"""The ready-made attention mask a model needs for a packed or prefix-shared batch.

transformers (5.x) uses a 4-D mask it is given as it is, for every layer: it no longer applies the
model's sliding window, so the window has to be in our mask (data.layout.attention_allowed). Two
kinds of decoder:

- decoders whose layers differ (`config.layer_types`, e.g. Gemma-2/3, Qwen2/3 with
  use_sliding_window, Cohere2, GPT-OSS) take a mapping {layer type: mask} and give layer i the mask of
  `config.layer_types[i]` (their forward opens with `causal_mask_mapping := attention_mask, dict`);
- the others (Llama, Mistral, Mixtral, Phi-3, Starcoder2, Qwen3-MoE, ...) take one mask for all
  layers, windowed when `config.sliding_window` is set, as they would build it themselves.

A layer type that is not plain or sliding-window softmax attention (chunked, linear attention, state
space layers) cannot be given a ready mask: `attention_mask` raises and the layout probe
(models.exactness) switches packing off for such a model. SDPA takes boolean masks; eager attention
adds the mask, so it gets 0 / the dtype's minimum.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch

from vietnamese_ai.data.layout import PackedBatch, attention_allowed

FULL, SLIDING = "full_attention", "sliding_attention"


class UnsupportedAttention(ValueError):
    """The model has layers whose attention a ready-made mask cannot describe."""


@dataclass(frozen=True)
class AttentionKinds:
    per_layer_type: bool              # the decoder takes {layer type: mask}
    windows: tuple[tuple[str, int | None], ...]   # (layer type, sliding window or None)


def _decoder_class(model: Any) -> type:
    """The class of the module whose forward builds the masks (the inner decoder)."""
    for name in ("model", "transformer", "gpt_neox", "decoder"):
        inner = getattr(model, name, None)
        if isinstance(inner, torch.nn.Module):
            inner = getattr(inner, "language_model", None) or getattr(inner, "decoder", None) or inner
            return type(inner)
    return type(model)


@functools.lru_cache(maxsize=None)
def _decoder_source(decoder_class: type) -> str:
    try:
        return inspect.getsource(decoder_class.forward)
    except (OSError, TypeError):  # no source (compiled, or defined interactively): the probe decides
        return ""


def attention_kinds(model: Any) -> AttentionKinds:
    """Which masks `model` (a transformers model, unwrapped) needs; raises UnsupportedAttention.

    Read from the decoder's own forward: whether it takes a per-layer-type mapping, and whether it
    builds sliding-window masks at all (a config may carry a `sliding_window` its model ignores)."""
    config = model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    source = _decoder_source(_decoder_class(model))
    window = getattr(config, "sliding_window", None) or None   # some configs use 0 for "off"
    types = getattr(config, "layer_types", None)
    if "causal_mask_mapping := attention_mask, dict" not in source or not types:
        return AttentionKinds(False, ((FULL, window if "sliding_window_causal_mask" in source else None),))
    windows = []
    for kind in sorted(set(types)):
        if kind == FULL:
            windows.append((kind, None))
        elif kind == SLIDING and window:
            windows.append((kind, window))
        else:
            raise UnsupportedAttention(f"layers of type '{kind}' cannot be given a ready-made attention mask")
    return AttentionKinds(True, tuple(windows))


def _as_kernel_mask(allowed: torch.Tensor, eager: bool, dtype: torch.dtype) -> torch.Tensor:
    if not eager:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def attention_mask(model: Any, batch: PackedBatch, eager: bool, dtype: torch.dtype) -> torch.Tensor | dict[str, torch.Tensor]:
    """The `attention_mask` argument for a packed or branched batch (see the module docstring).

    Shape: a (R, 1, L, L) tensor, or a dict of them keyed by layer type
    """
    kinds = attention_kinds(model)
    masks = {kind: _as_kernel_mask(attention_allowed(batch.segment_ids, batch.branch_ids, batch.position_ids, window),
                                   eager, dtype)
             for kind, window in kinds.windows}
    return masks if kinds.per_layer_type else masks[FULL]
