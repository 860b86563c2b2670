"""Does this model compute packed rows and prefix-shared branches exactly as plain sequences?

Packing (several sequences per row) and prefix sharing ([prompt | chosen | rejected] with the
responses as branches) rely on the model honouring our attention mask and taking token positions
from `position_ids`. Most decoders do; some do not:

- ALiBi models (MPT) add position biases by column, so a shared branch that sits further right in
  the row than its position says is scored at the wrong distance: packing is exact, sharing is not;
- models whose local attention windows come from column indices (GPT-Neo) behave the same once a
  sequence is longer than the window;
- models that reject 4-D masks (Bloom, Falcon with ALiBi) cannot do either;
- a model whose layers cannot take a ready-made mask (models.attention.UnsupportedAttention).

So before training, `layout_support` runs what training will run, on random tokens, with the model
itself (the reward head included, through `measure`) and compares each layout with plain one-sequence-
per-row batches, which every model computes correctly:

    pack   three sequences in one row, the longest as long as the data's longest sequence
    share  two [prompt | a | b] pairs, each in its own row, prompt + response as long as the data's
    both   the same two pairs packed into one row

Sequences are made at least 1.5x any sliding window the config declares (when the data is that long),
so window handling is exercised. The result is cached per model. `choose_layout` switches off only
what is inexact, and says why in one warning.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vietnamese_ai.data.layout import IGNORE, Piece, layout, sft_sequence
from vietnamese_ai.models.forward import base_model, ordered_token_logps, unwrap
from vietnamese_ai.models.reference import evaluation_mode

log = logging.getLogger("vietnamese_ai")

Measure = Callable[[Any, Any], torch.Tensor]
WINDOW_ATTRIBUTES = ("sliding_window", "window_size", "attention_window", "local_window_size")
_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LayoutSupport:
    pack: bool
    share: bool
    both: bool
    problems: tuple[str, ...] = ()   # one per layout found inexact, saying how


def declared_window(model: Any) -> int | None:
    """The smallest attention window the model's config declares, if any."""
    config = base_model(model).config
    values = [getattr(config, name, None) for name in WINDOW_ATTRIBUTES]
    windows = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return min(windows) if windows else None


def probe_length(model: Any, longest: int) -> int:
    """How long the probe's sequences are: as long as training's (a window matters only beyond it),
    and at least 1.5 windows where the data reaches that far."""
    window = declared_window(model)
    length = min(longest, 48)
    if window is not None and window < longest:
        length = max(length, min(longest, window + window // 2 + 2))
    return max(length, 6)


def _tolerance(model: Any) -> tuple[float, float]:
    """(max, mean) absolute difference allowed: float32 is exact up to rounding; half precision
    rounds logits by about 1 part in 256, so single tokens can move by several hundredths."""
    dtype = next(model.parameters()).dtype
    return (1e-4, 1e-4) if dtype == torch.float32 else (0.15, 0.02)


def _probe_sequences(vocab: int, length: int) -> tuple[list, list, list]:
    generator = torch.Generator().manual_seed(0)

    def tokens(n: int) -> list[int]:
        return torch.randint(0, vocab, (max(1, n),), generator=generator).tolist()

    plain = [sft_sequence(t, t, group=g) for g, t in enumerate([tokens(length), tokens(length // 2), tokens(length // 3)])]
    pairs = []
    for g, prompt_length in enumerate((length // 2, length // 3)):
        prompt, a, b = tokens(prompt_length), tokens(length - prompt_length), tokens((length - prompt_length) // 2)
        pairs.append((prompt, a, b, 2 * g))
    shared = [[Piece(p, [IGNORE] * len(p)), Piece(a, list(a), 1, g), Piece(b, list(b), 2, g + 1)] for p, a, b, g in pairs]
    unshared = [s for p, a, b, g in pairs for s in ([Piece(p, [IGNORE] * len(p)), Piece(a, list(a), 0, g)],
                                                   [Piece(p, [IGNORE] * len(p)), Piece(b, list(b), 0, g + 1)])]
    return plain, shared, unshared


def _compare(model: Any, measure: Measure, candidate: Any, plain: Any, name: str) -> str | None:
    """None if the candidate layout gives the plain layout's values, else what differs."""
    device = next(model.parameters()).device
    try:
        got = measure(model, candidate.to(device)).float()
    except Exception as e:  # a model that rejects our mask cannot use this layout
        return f"{name}: the model rejected the batch ({type(e).__name__}: {str(e)[:120]})"
    want = measure(model, plain.to(device)).float()
    error = (got - want).abs()
    max_allowed, mean_allowed = _tolerance(model)
    if float(error.max()) > max_allowed or float(error.mean()) > mean_allowed:
        return f"{name}: differs from plain sequences by up to {float(error.max()):.1e}"
    return None


@torch.no_grad()
def layout_support(model: Any, measure: Measure | None = None, longest: int = 48) -> LayoutSupport:
    """Which layouts `model` computes exactly, for sequences up to `longest` tokens (cached)."""
    measure = measure or ordered_token_logps
    key = (getattr(measure, "__qualname__", repr(measure)), probe_length(model, longest))
    cache = _CACHE.setdefault(unwrap(model), {})
    if key in cache:
        return cache[key]
    vocab = int(base_model(model).get_input_embeddings().num_embeddings)
    plain, shared, unshared = _probe_sequences(vocab, key[1])
    groups = {"num_groups": 4}
    with evaluation_mode(model):
        problems = {
            "pack": _compare(model, measure, layout(plain, pack=True), layout(plain, pack=False), "packing"),
            "share": _compare(model, measure, layout(shared, pack=False, **groups), layout(unshared, pack=False, **groups),
                              "prefix sharing"),
            "both": _compare(model, measure, layout(shared, pack=True, **groups), layout(unshared, pack=False, **groups),
                             "packed prefix sharing"),
        }
    support = LayoutSupport(problems["pack"] is None, problems["share"] is None, problems["both"] is None,
                            tuple(p for p in problems.values() if p))
    cache[key] = support
    return support


def choose_layout(models: list[Any], pack: bool, share: bool, measure: Measure | None = None,
                  longest: int = 48) -> tuple[bool, bool]:
    """The requested (pack, share), minus whatever one of `models` does not compute exactly; one
    warning names what was switched off and why."""
    if not (pack or share):
        return False, False
    supports = [layout_support(m, measure if i == 0 else None, longest) for i, m in enumerate(models) if m is not None]
    can_pack, can_share, can_both = (all(getattr(s, k) for s in supports) for k in ("pack", "share", "both"))
    chosen_pack, chosen_share = pack and can_pack, share and can_share
    if chosen_pack and chosen_share and not can_both:
        chosen_share = False  # both are exact alone but not together: packing saves more
    off = [name for name, wanted, got in (("packing", pack, chosen_pack), ("prefix sharing", share, chosen_share))
           if wanted and not got]
    if off:
        reasons = "; ".join(p for s in supports for p in s.problems)
        message = f"{' and '.join(off)} switched off for this model, which does not compute it exactly ({reasons})"
        warned = _CACHE.setdefault(unwrap(models[0]), {}).setdefault("warned", set())
        if message not in warned:  # once per model, not once per batch
            warned.add(message)
            log.warning(message)
    return chosen_pack, chosen_share


@torch.no_grad()
def prompt_cache_support(model: Any, longest: int = 48) -> bool:
    """Whether completions run on their prompts' KV cache (models.prompt_cache) give the log-probs of
    plain sequences on this model; one warning when they do not (the branch layout is used instead)."""
    from vietnamese_ai.data.rollout import Rollout, cached_prompt_batch, completion_sequences
    from vietnamese_ai.models.prompt_cache import rollout_logps

    key = ("prompt_cache", probe_length(model, longest))
    cache = _CACHE.setdefault(unwrap(model), {})
    if key in cache:
        return cache[key]
    vocab = int(base_model(model).get_input_embeddings().num_embeddings)
    generator = torch.Generator().manual_seed(1)
    length = key[1]

    def tokens(n: int) -> list[int]:
        return torch.randint(0, vocab, (max(1, n),), generator=generator).tolist()

    prompts = [tokens(length // 2), tokens(length // 3)]
    completions = [tokens(length - length // 2), tokens(3), tokens(length // 3), tokens(length // 4)]
    rollout = Rollout(2, prompts, completions, [True] * 4, [0.0] * 4, [0.0] * 4, [[0, 1, 2, 3]])
    device = next(model.parameters()).device
    problem = None
    with evaluation_mode(model):
        try:
            got = rollout_logps(model, cached_prompt_batch(rollout, [0, 1, 2, 3], 0).to(device))[0].float()
        except Exception as e:  # a model whose cache cannot be indexed, or that drops it in training
            problem = f"the model cannot run completions on a cached prompt ({type(e).__name__}: {str(e)[:120]})"
        else:
            plain = layout(completion_sequences(rollout, [0, 1, 2, 3], share=False), pack=False, num_groups=4).to(device)
            want = ordered_token_logps(model, plain).float()
            max_allowed, mean_allowed = _tolerance(model)
            error = (got - want).abs()
            if float(error.max()) > max_allowed or float(error.mean()) > mean_allowed:
                problem = f"completions on a cached prompt differ from plain sequences by up to {float(error.max()):.1e}"
    if problem:
        log.warning("prompt cache switched off for this model, which does not compute it exactly (%s); "
                    "the prompts are shared as branches instead", problem)
    cache[key] = problem is None
    return cache[key]
