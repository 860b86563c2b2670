"""Model FLOPs utilisation (MFU): the FLOPs a run's training needs, per second, over the machine's peak.

Model FLOPs, not hardware FLOPs (PaLM, Chowdhery et al. 2022, Appendix B): what the model needs,
whatever the implementation does on top (gradient checkpointing's recomputation, attention over the
masked-out part of a packed row, padding) is not counted, so that the number says how much of the
machine the run turns into training. The accounting is Kaplan et al. 2020 (Sec. 2.1) and PaLM's:

    forward  = 2 N_matmul per token + 2 * 2 * L * d_attn per (query, visible key) pair
    training = forward + backward, backward = 2 x forward for a weight with a gradient
             (the activation gradient and the weight gradient, 2 N each), 1 x forward for a frozen
             weight (activation gradient only), 2 x forward for the weightless score and value matmuls

so that per micro-batch

    FLOPs = T (6 N_trainable + 4 N_frozen) + K c_head V d + 12 L d_attn sum_t keys(t)     (1)

with T the real (non-padding) tokens, K the positions whose logits are computed (the layout computes
the output layer only where a token is predicted), c_head 6 (trained) or 4 (frozen: LoRA), V d the
output layer's (vocab x hidden) weights, counted even when tied to the input embeddings (it is still a
matmul), and keys(t) the number of keys token t attends to: position + 1 in our layouts (causal, each
packed document from its own start, a branch after its trunk, an online completion after its cached
prompt). PaLM's 12 L H Q T term counts a full T x T square per sequence; (1) counts the causal half
that is needed, so for a plain sequence of length n it is 12 L d_attn n (n + 1) / 2. Full fine-tuning gives the familiar 6N; LoRA
4 N_base + 6 N_adapters. Embedding lookups, norms, biases, softmax and the optimizer are not counted
(Kaplan's approximation: under 1% of the total beyond tiny models). Not modelled: a sliding attention
window (keys counted up to the full context), frozen layers below every trainable one (their
activation gradients are counted though never computed), a method's extra passes (a reference model's
forward, an online source's sampling and scoring: the step's time includes them, so an online run's
mfu says how much of the machine its policy updates use).

The peak: `config.peak_flops` if given; on CUDA the card's dense bf16 tensor peak from vendor figures,
or a measured bf16 matmul rate for a card not in the table; on CPU the measured fp32 matmul rate of
this machine with this process's torch threads, measured once per (CPU, torch, threads, dtype) and
kept in a small JSON file in the cache directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.data.rollout import CachedPromptBatch
from vietnamese_ai.files import atomic_file

log = logging.getLogger("vietnamese_ai")

# Dense (no sparsity) bf16 tensor-core peaks with fp32 accumulation, NVIDIA's figures; first match
# wins, so a specific name comes before a general one. The A10G (AWS's) has no NVIDIA datasheet: 70e12
# is the figure benchmarks/gpu_check.py already uses (the A10's is 125e12); give peak_flops where a
# card's real figure differs.
GPU_PEAKS: tuple[tuple[str, float], ...] = (
    (r"B200", 2250e12), (r"H200 NVL", 835e12), (r"H200|GH200", 989e12),
    (r"H100 PCIe", 756e12), (r"H100 NVL", 835e12), (r"H100", 989e12),
    (r"A100", 312e12), (r"L40S", 362e12), (r"L40\b", 181e12), (r"L4\b", 121e12),
    (r"A10G", 70e12), (r"A10\b", 125e12), (r"RTX 4090", 165e12),
)
WINDOW_FLOPS = "model_flops_per_token"  # the window's (FLOPs, tokens) sums; replaced by `mfu` in the line


@dataclass(frozen=True)
class ModelShape:
    """What (1) needs to know about a model: its matmul weights by kind, and its attention size."""

    trainable: int          # matmul weights with a weight gradient: every Linear, or LoRA's A and B
    frozen: int             # matmul weights without one (a LoRA or QLoRA base): activation gradients only
    head: int               # the output layer's weights (vocab x hidden), applied at kept positions only
    head_trainable: bool
    layers: int             # L: transformer blocks
    attention_width: int    # d_attn = query heads x head_dim: the width of the score and value matmuls


@dataclass(frozen=True)
class Peak:
    flops: float            # FLOP/s of one device
    source: str             # "config", "table" or "measured"
    device: str             # the card's name, or "cpu: <model>"


def model_shape(model: Any) -> ModelShape | None:
    """Count the matmul weights of a transformers causal LM (under PEFT or not), module by module: a
    Linear by its shape (in x out), so that a 4-bit weight counts whole, not by its packed storage;
    any other module's weights of 2 or more dimensions (GPT-2's Conv1D, a router) whole, except
    embeddings (a lookup, not a matmul); a mixture of experts' stacked (experts, out, in) weights at the
    fraction a token uses (num_experts_per_tok / experts). The output layer separately, also when its
    weight is the input embedding's. None for a model without a transformer config (a test's toy
    module): its run logs no mfu."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(inner, "config", None)
    if config is None or not hasattr(config, "num_attention_heads"):
        return None
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    active = getattr(config, "num_experts_per_tok", None) or experts
    trainable = frozen = 0
    for module in inner.modules():
        if module is head or isinstance(module, torch.nn.Embedding):
            continue
        if isinstance(module, torch.nn.Linear):
            weights = [(module.in_features * module.out_features, module.weight.requires_grad)]
        else:
            weights = [(p.numel() * (active / experts if p.dim() == 3 and experts else 1), p.requires_grad)
                       for p in module.parameters(recurse=False) if p.dim() >= 2]
        for count, grad in weights:
            if grad:
                trainable += int(count)
            else:
                frozen += int(count)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    head_size = head.in_features * head.out_features if isinstance(head, torch.nn.Linear) else 0
    return ModelShape(trainable=trainable, frozen=frozen, head=head_size,
                      head_trainable=head is not None and head.weight.requires_grad,
                      layers=config.num_hidden_layers, attention_width=heads * head_dim)


def training_flops(shape: ModelShape, tokens: int, kept_logits: int, visible_keys: int) -> float:
    """Eq. (1) of the module docstring: the model FLOPs of one training forward and backward.

    `tokens`: real tokens T; `kept_logits`: positions K where the output layer runs; `visible_keys`: the
    sum over tokens of the keys each attends to.

    >>> shape = ModelShape(trainable=100, frozen=0, head=50, head_trainable=True, layers=2, attention_width=8)
    >>> training_flops(shape, tokens=3, kept_logits=2, visible_keys=1 + 2 + 3)   # 6*100*3 + 6*50*2 + 12*2*8*6
    3552.0
    """
    weights = tokens * (6.0 * shape.trainable + 4.0 * shape.frozen)
    head = kept_logits * (6.0 if shape.head_trainable else 4.0) * shape.head
    attention = 12.0 * shape.layers * shape.attention_width * visible_keys
    return weights + head + attention


def visible_keys(batch: PackedBatch) -> int:
    """Sum over the batch's real tokens of the keys each attends to: its position + 1, since positions
    restart for each packed document and a branch's continue from its trunk, which it sees whole.

    Shape: batch.position_ids, batch.segment_ids (R, L); padding has segment -1.
    """
    real = batch.segment_ids >= 0
    return int(((batch.position_ids + 1) * real).sum())


def cached_prompt_counts(batch: CachedPromptBatch) -> tuple[int, int]:
    """(kept logits K, visible keys) of online RL's layout: each prompt once, its completions on its KV
    cache. The output layer runs at each prompt's last position (it predicts the first token of all its
    completions) and at every completion token but the last; a prompt token sees its prompt up to itself,
    and token j of a completion whose prompt has n tokens sees n + j + 1 keys.

    Shape: batch.prompt_mask (N, Lp), batch.completion_mask (C, Lc), batch.owner (C,)

    >>> from vietnamese_ai.data.rollout import CachedPromptBatch
    >>> prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])          # prompts of 2 and 3 tokens
    >>> completion_mask = torch.tensor([[1, 1], [1, 0], [1, 1]])    # 2 + 1 completion tokens on prompt 0, 2 on 1
    >>> b = CachedPromptBatch(prompt_mask, prompt_mask, torch.tensor([0, 0, 1]), completion_mask, completion_mask,
    ...                       torch.zeros(5), torch.zeros(5), 3, 10, 3, {})
    >>> cached_prompt_counts(b)    # K = 2 + (5 - 3); keys = (1+2) + (1+2+3) + (3+4) + 3 + (4+5)
    (4, 28)
    """
    prompt = batch.prompt_mask.sum(-1)
    completion = batch.completion_mask.sum(-1)
    before = prompt[batch.owner]
    kept = len(prompt) + int(completion.sum()) - len(completion)
    keys = (prompt * (prompt + 1)).sum() // 2 + (completion * before + completion * (completion + 1) // 2).sum()
    return kept, int(keys)


def batch_flops(shape: ModelShape, batch: PackedBatch | CachedPromptBatch) -> float:
    """Eq. (1) for one laid-out micro-batch (a packed one, or online RL's cached-prompt one)."""
    if isinstance(batch, CachedPromptBatch):
        kept, keys = cached_prompt_counts(batch)
    else:
        kept, keys = int(batch.logits_mask.sum()), visible_keys(batch)
    return training_flops(shape, batch.num_tokens, kept, keys)


def window_sums(shape: ModelShape | None, batches: list[PackedBatch | CachedPromptBatch]) -> dict[str, tuple[float, float]]:
    """A step's model FLOPs as a window (sum, count) pair whose count is its tokens, so that the window's
    mean times its token count is the FLOPs over all processes, and a checkpoint keeps it with the rest."""
    if shape is None:
        return {}
    return {WINDOW_FLOPS: (sum(batch_flops(shape, b) for b in batches), float(sum(b.num_tokens for b in batches)))}


def utilisation(flops: float, seconds: float, peak: float, processes: int) -> float:
    """MFU = model FLOPs / seconds / (peak of one device x processes).

    >>> utilisation(flops=6e12, seconds=2.0, peak=1e13, processes=2)
    0.15
    """
    return flops / max(seconds, 1e-9) / (peak * processes)


def mean_of(history: list[dict[str, Any]], key: str) -> float | None:
    """The mean of `key` over the metrics.jsonl lines that have it (None if none has).

    >>> mean_of([{"mfu": 0.1}, {"loss": 1.0}, {"mfu": 0.3}], "mfu")
    0.2
    """
    values = [float(r[key]) for r in history if key in r]
    return sum(values) / len(values) if values else None


def table_peak(name: str) -> float | None:
    """The dense bf16 peak of a CUDA card from its name, or None if it is not in the table.

    >>> table_peak("NVIDIA H100 80GB HBM3"), table_peak("NVIDIA H100 PCIe"), table_peak("NVIDIA L4")
    (989000000000000.0, 756000000000000.0, 121000000000000.0)
    >>> table_peak("NVIDIA A100-SXM4-80GB"), table_peak("NVIDIA A10"), table_peak("Tesla T4") is None
    (312000000000000.0, 125000000000000.0, True)
    """
    for pattern, peak in GPU_PEAKS:
        if re.search(pattern, name):
            return peak
    return None


def cpu_name() -> str:
    """The CPU's model string (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, size: int, budget_s: float = 0.3) -> float:
    """The best FLOP/s of a (size x size) @ (size x size) matmul over repeats within ~`budget_s`
    (at least 3): the best, not the mean, because the peak is what the hardware can reach."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.mm(a, b)  # warm-up: kernel selection, thread pool start
    sync()
    best, spent, repeats = math.inf, 0.0, 0
    while repeats < 3 or spent < budget_s:
        started = time.perf_counter()
        torch.mm(a, b)
        sync()
        elapsed = time.perf_counter() - started
        best, spent, repeats = min(best, elapsed), spent + elapsed, repeats + 1
    return 2.0 * size ** 3 / max(best, 1e-12)


def peak_cache_file() -> str:
    """In the project's cache directory (VIETNAMESE_AI_CACHE, else ~/.cache/vietnamese_ai), as
    models.reference keeps its cached log-probs."""
    root = os.environ.get("VIETNAMESE_AI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vietnamese_ai")
    return os.path.join(root, "peak_flops.json")


def peak_cache_key(device_name: str, dtype: torch.dtype, threads: int | None = None) -> str:
    """Everything a measured peak depends on: the device, torch (its kernels), the CPU threads, the dtype.

    >>> peak_cache_key("cpu: Example CPU", torch.float32, 4).replace(torch.__version__, "V")
    'cpu: Example CPU|torch V|threads 4|float32'
    """
    threads_part = f"|threads {threads}" if threads is not None else ""
    return f"{device_name}|torch {torch.__version__}{threads_part}|{str(dtype).removeprefix('torch.')}"


def cached_measurement(key: str, measure: Callable[[], float]) -> float:
    """`measure()` once per key: later calls read the number back from the cache file. A cache that
    cannot be read or written only costs a new measurement."""
    path = peak_cache_file()
    try:
        with open(path, encoding="utf-8") as f:
            known = json.load(f)
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), (int, float)) and known[key] > 0:
        return float(known[key])
    value = measure()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_file(path) as f:
            json.dump({**known, key: value}, f, indent=1)
    except OSError as e:
        log.debug("could not cache the measured peak in %s: %s", path, e)
    return value


def peak_flops(device: torch.device, override: float | None = None) -> Peak:
    """One device's peak FLOP/s and where it came from: the config, the table, or a measurement."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if override:
            return Peak(override, "config", name)
        known = table_peak(name)
        if known is not None:
            return Peak(known, "table", name)
        measured = cached_measurement(peak_cache_key(name, torch.bfloat16),
                                      lambda: measure_matmul_flops(device, torch.bfloat16, 8192))
        return Peak(measured, "measured", name)
    name = f"cpu: {cpu_name()}"
    if override:
        return Peak(override, "config", name)
    threads = torch.get_num_threads()
    # 2048, not 1024: on a 2-thread Xeon 1024 reached 135 GFLOP/s and 2048 187 (fewer, longer kernels).
    measured = cached_measurement(peak_cache_key(name, torch.float32, threads),
                                  lambda: measure_matmul_flops(torch.device("cpu"), torch.float32, 2048))
    return Peak(measured, "measured", name)


def run_summary(history: list[dict[str, Any]], peak: Peak | None) -> dict[str, Any]:
    """What run.json keeps: the run's mean mfu and tokens/s over its metrics.jsonl lines, and the peak."""
    summary: dict[str, Any] = {"mfu": mean_of(history, "mfu"), "tokens_per_second": mean_of(history, "tokens_per_second")}
    if peak is not None:
        summary["peak_flops"] = {"value": peak.flops, "source": peak.source, "device": peak.device}
    return summary
