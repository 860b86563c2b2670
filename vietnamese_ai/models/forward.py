"""The forward pass over a `PackedBatch`: attention mask, position ids, and logits only where needed.

Packing and prefix sharing need a 4-D mask (data.layout.attention_allowed). Transformers passes a
ready 4-D mask through to the attention kernel untouched: SDPA takes it as bool, eager attention adds
it as a float bias. A batch with one sequence per row and no branches gets the ordinary 2-D padding
mask instead, which keeps SDPA's fused causal kernels.

Logits are computed only at positions that predict a target (`logits_to_keep`, a boolean mask):
for chat data about half the tokens are prompt, so this halves the vocabulary projection.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from vietnamese_ai.data.layout import PackedBatch, attention_allowed, layout, sft_sequence
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
    allowed = attention_allowed(batch.segment_ids, batch.branch_ids)
    if attn_implementation(model) == "eager":
        dtype = torch.get_autocast_dtype(allowed.device.type) if torch.is_autocast_enabled(allowed.device.type) \
            else next(base_model(model).parameters()).dtype
        inputs["attention_mask"] = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)
    else:
        inputs["attention_mask"] = allowed
    return inputs


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


def canonical_order(batch: PackedBatch) -> torch.Tensor:
    """A permutation that lists targets sequence by sequence (group order), whatever the row layout."""
    return torch.argsort(batch.target_groups, stable=True)


def ordered_token_logps(model: Any, batch: PackedBatch) -> torch.Tensor:
    """Target log-probs listed sequence by sequence, whatever the row layout."""
    return batch_target_logps(model, batch)[0][canonical_order(batch).to(batch.targets.device)]


@torch.no_grad()
def packing_is_exact(model: Any, measure: Any = None, tolerance: float | None = None) -> tuple[bool, str]:
    """Whether this model computes packed sequences exactly as separate ones, and if not, why.

    Packing relies on the attention honouring a 4-D mask and on position ids restarting; recurrent
    or custom architectures may not. Three short random sequences (two of them sharing a row) are run
    both ways and compared with `measure(model, batch)` (default: target log-probs; reward models pass
    their per-sequence rewards).
    """
    measure = measure or ordered_token_logps
    vocab = base_model(model).config.vocab_size
    generator = torch.Generator().manual_seed(0)
    tokens = [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in (6, 3, 3)]
    sequences = [sft_sequence(t, t, group=g) for g, t in enumerate(tokens)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        packed = measure(model, layout(sequences, pack=True).to(device)).float()
        separate = measure(model, layout(sequences, pack=False).to(device)).float()
    except Exception as e:  # an architecture that rejects 4-D masks cannot pack
        return False, f"the model rejected a packed batch ({type(e).__name__}: {e})"
    finally:
        model.train(was_training)
    dtype = next(model.parameters()).dtype
    tolerance = tolerance if tolerance is not None else (1e-4 if dtype == torch.float32 else 3e-2)
    error = float((packed - separate).abs().max())
    if error > tolerance:
        return False, f"packed and separate outputs differ by {error:.2e} (tolerance {tolerance:.0e})"
    return True, ""
