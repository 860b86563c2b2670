"""The forward pass over a `PackedBatch`: attention mask, position ids, and logits only where needed.

Packing and prefix sharing need a 4-D mask (data.layout.attention_allowed, with the model's sliding
windows built in by models.attention). Transformers passes a ready 4-D mask through to the attention
kernel untouched: SDPA takes it as bool, eager attention adds it as a float bias. A batch with one
sequence per row and no branches gets the ordinary 2-D padding mask instead, which keeps SDPA's fused
causal kernels (and lets the model apply its own window). Whether a model computes packed and shared
batches exactly is checked before training by models.exactness.

Logits are computed only at positions that predict a target (`logits_to_keep`, a boolean mask):
for chat data about half the tokens are prompt, so this halves the vocabulary projection.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from typing import Any

import torch

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.models.attention import attention_mask
from vietnamese_ai.losses import target_logps


def unwrap(model: Any) -> Any:
    """The model under DDP/FSDP wrappers (which keep it in `.module`)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def base_model(model: Any) -> Any:
    """The transformers model under DDP and PEFT wrappers."""
    model = unwrap(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attn_implementation(model: Any) -> str:
    return getattr(base_model(model).config, "_attn_implementation", None) or "eager"


@functools.lru_cache(maxsize=None)
def _accepts_logits_to_keep(model_class: type) -> bool:
    try:
        from transformers.modeling_utils import slice_logits_to_keep  # noqa: F401  (boolean masks supported)
    except ImportError:
        return False
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def model_inputs(model: Any, batch: PackedBatch) -> dict[str, Any]:
    """input_ids, position_ids and the attention mask in the form the attention kernel wants."""
    inputs: dict[str, Any] = {"input_ids": batch.input_ids, "position_ids": batch.position_ids}
    if not batch.packed:
        padding = batch.segment_ids >= 0
        inputs["attention_mask"] = None if bool(padding.all()) else padding.long()
        return inputs
    inner = base_model(model)
    device = batch.input_ids.device
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) \
        else next(inner.parameters()).dtype
    inputs["attention_mask"] = attention_mask(inner, batch, eager=attn_implementation(model) == "eager", dtype=dtype)
    return inputs


@contextlib.contextmanager
def head_inputs(model: Any) -> Iterator[list[torch.Tensor]]:
    """Record what the output layer receives: the final hidden states at exactly the positions whose
    logits are computed, in the same order. A value head reads them, so that the policy and its value
    come from one forward pass whatever the layout."""
    captured: list[torch.Tensor] = []
    hook = base_model(model).get_output_embeddings().register_forward_hook(
        lambda module, args, output: captured.append(args[0]))
    try:
        yield captured
    finally:
        hook.remove()


def kept_logits(model: Any, batch: PackedBatch, **kwargs: Any) -> torch.Tensor:
    """Next-token logits at the positions of batch.logits_mask, in row-major order.

    Shape:
        returns: (K, V), K = batch.logits_mask.sum()
    """
    inputs = model_inputs(model, batch)
    if _accepts_logits_to_keep(type(base_model(model))):
        logits = model(**inputs, logits_to_keep=batch.logits_mask, use_cache=False, **kwargs).logits
        return logits.reshape(-1, logits.shape[-1])
    logits = model(**inputs, use_cache=False, **kwargs).logits
    return logits[batch.logits_mask]


def batch_target_logps(model: Any, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of every target (P,), the kept logits (K, V))."""
    logits = kept_logits(model, batch)
    return target_logps(logits, batch.target_index, batch.targets), logits


def scaled_target_logps(model: Any, batch: PackedBatch, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Target log-probs of the distribution sampled at `temperature` (logits / T), and those logits.
    Online RL computes its ratios and KL with these: the policy that sampled was the tempered one.

    Shape: returns (P,) float32 and (K, V) float32
    """
    logits = kept_logits(model, batch).float()
    if temperature != 1.0:
        logits = logits / temperature
    return target_logps(logits, batch.target_index, batch.targets), logits


def canonical_order(batch: PackedBatch) -> torch.Tensor:
    """A permutation that lists targets sequence by sequence (group order), whatever the row layout."""
    return torch.argsort(batch.target_groups, stable=True)


def ordered_token_logps(model: Any, batch: PackedBatch) -> torch.Tensor:
    """Target log-probs listed sequence by sequence, whatever the row layout."""
    return batch_target_logps(model, batch)[0][canonical_order(batch).to(batch.targets.device)]




def cache_argument(model: Any) -> str:
    """The name under which `model`'s forward takes a KV cache: `cache` in transformers 5.x, where
    `past_key_values` is deprecated (and warns), `past_key_values` in models that still use it."""
    import inspect

    forward = type(base_model(model)).forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache a forward returned, under either name (`cache`, or the older `past_key_values`)."""
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else getattr(output, "past_key_values", None)
