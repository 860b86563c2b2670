"""LoRA through PEFT: which weights get adapters, continuing an adapter, and PEFT's errors in one line.

`lora_target_modules="all-linear"` (the default) means every linear layer except the output head
and, in mixture-of-experts blocks, the router, plus the experts themselves. Transformers 5 stores
the experts of a MoE block as fused 3-D parameters (experts x out x in), not as nn.Linear layers,
so they are adapted through PEFT's `target_parameters`. Why these choices:

- PEFT's own "all-linear" on Mixtral/Qwen3-MoE-style models rewrites its targets onto the fused
  experts *and* the router, and drops the adapters of shared experts and dense MLP layers with the
  same names; we list every target by its full name instead, so nothing is moved or lost.
- A router adapted by LoRA changes load balancing, and some routers are nn.Linear subclasses that
  return tuples (Phi-MoE, Llama-4), which LoRA's forward cannot wrap: routers are left alone.
- PEFT adds an expert's adapter to the weight itself (W + BA), so there is no input to apply dropout
  to: `lora_dropout` left unset (None) means 0.05 on dense models and 0 where experts are adapted;
  an explicit non-zero value there is a one-line error naming lora_dropout.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from vietnamese_ai.errors import ConfigError

DEFAULT_DROPOUT = 0.05
# PEFT refuses these on Mamba-style models; on Jamba, transformers reads dt_proj.weight directly, so an
# adapter there would never train.
_MAMBA_TYPES = {"falcon_h1", "mamba", "mamba2", "falcon_mamba", "nemotron_h"}
_MAMBA_INCOMPATIBLE = {"out_proj", "conv1d"}
_DEAD_MODULES = {"jamba": {"dt_proj"}}
_ROUTER_NAME = re.compile(r"router|(^|_)gate$|^wg$", re.IGNORECASE)     # gate, router, shared_expert_gate, wg
_ROUTER_CLASS = re.compile(r"Router|Gate$|Gating", re.IGNORECASE)       # MixtralTopKRouter, ...Gate, ...


def _num_experts(config: Any) -> int | None:
    for part in (config, getattr(config, "text_config", None), getattr(config, "ffn_config", None)):
        for key in ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"):
            value = getattr(part, key, None) if part is not None else None
            if isinstance(value, int) and value > 1:
                return value
    return None


def moe_layout(model: nn.Module) -> tuple[list[str], list[str]]:
    """(fused expert parameter names, router module names) of a transformers model; both empty for a
    dense one. Expert parameters are 3-D with one slice per expert; routers are the gating modules
    inside the blocks that hold them."""
    n_experts = _num_experts(getattr(model, "config", None))
    if n_experts is None:
        return [], []
    modules = dict(model.named_modules())
    holders = [name for name, module in modules.items() if not isinstance(module, nn.modules.conv._ConvNd)
               and any(p.ndim == 3 and p.shape[0] == n_experts for p in module.parameters(recurse=False))]
    experts = [f"{m}.{p}" for m in sorted(holders) for p, t in modules[m].named_parameters(recurse=False) if t.ndim == 3]
    blocks = {m.rpartition(".")[0] for m in holders} | {n.rpartition(".")[0] for n in modules if n.endswith(".experts")}
    routers = []
    for name in modules:
        block = next((b for b in blocks if name.startswith(b + ".")), None)
        if block is None:
            continue
        parts = name[len(block) + 1:].split(".")
        prefixes = [".".join([block] + parts[:i + 1]) for i in range(len(parts))]
        if any(_ROUTER_NAME.search(p) for p in parts) or any(_ROUTER_CLASS.search(type(modules[p]).__name__) for p in prefixes):
            routers.append(name)
    return experts, routers


def _peft_remapped(model: nn.Module, names: set[str]) -> set[str]:
    """Leaf names PEFT would move from target_modules onto fused expert parameters (a dry run of its
    own conversion, so this follows PEFT if its mapping changes)."""
    try:
        from peft import LoraConfig
        from peft.utils.transformers_weight_conversion import convert_peft_config_for_transformers
    except ImportError:
        return set()
    probe = LoraConfig(r=8, target_modules=set(names))
    try:
        convert_peft_config_for_transformers(probe, model=model, conversions=None)
    except ValueError:  # get_peft_model raises the same error, labelled by `_label`
        return set()
    return set(names) - set(probe.target_modules or ())


def all_linear_targets(model: nn.Module) -> tuple[list[str], list[str]]:
    """(target_modules, target_parameters) by full name, for "all-linear" (see the module docstring)."""
    from transformers.pytorch_utils import Conv1D

    experts, routers = moe_layout(model)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    skip_leaves = (_MAMBA_INCOMPATIBLE if model_type in _MAMBA_TYPES else set()) | _DEAD_MODULES.get(model_type, set())
    linear = [name for name, module in model.named_modules()
              if isinstance(module, (nn.Linear, Conv1D)) and module is not output
              and not any(name == r or name.startswith(r + ".") for r in routers)
              and name.rpartition(".")[2] not in skip_leaves]
    remapped = _peft_remapped(model, {n.rpartition(".")[2] for n in linear}) if experts else set()
    modules = [n for n in linear if n.rpartition(".")[2] not in remapped]
    # Shared-expert and dense MLP layers that PEFT would move onto the experts keep an adapter: by weight.
    parameters = experts + [f"{n}.weight" for n in linear if n.rpartition(".")[2] in remapped]
    return modules, parameters


def lora_config(model: nn.Module, r: int, alpha: int, dropout: float | None, target_modules: str | list[str],
                modules_to_save: list[str] | None, task_type: str) -> Any:
    from peft import LoraConfig

    if isinstance(target_modules, str) and target_modules.lower() == "all-linear":
        modules, parameters = all_linear_targets(model)
        on_experts = bool(parameters)
    else:
        modules, parameters = target_modules, []
        names = {target_modules} if isinstance(target_modules, str) else set(target_modules)
        on_experts = bool(moe_layout(model)[0]) and bool(_peft_remapped(model, {n.rpartition(".")[2] for n in names}))
    if on_experts and dropout:
        raise ConfigError(f"lora_dropout: must be 0 on {type(model).__name__}, whose mixture-of-experts weights are "
                          f"adapted as parameters (PEFT cannot apply dropout there); leave lora_dropout unset or set "
                          f"it to 0, or give lora_target_modules without the expert projections, e.g. "
                          f"[q_proj,k_proj,v_proj,o_proj]")
    if dropout is None:
        dropout = 0.0 if on_experts else DEFAULT_DROPOUT
    if not modules and not parameters:
        raise ConfigError(f"lora_target_modules: nothing to adapt in {type(model).__name__}; give the names of its "
                          f"linear layers")
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules or None,
                      target_parameters=parameters or None, modules_to_save=modules_to_save, task_type=task_type)


def _label(error: Exception) -> str:
    """Name the setting a PEFT error is about (not every problem is the target list)."""
    message = " ".join(str(error).split())
    if "lora_dropout" in message:
        return (f"lora_dropout: must be 0 for this model's mixture-of-experts weights ({message}); set lora_dropout "
                f"to 0, or give lora_target_modules without the expert projections")
    return f"lora_target_modules: {message}"


def apply_lora(model: Any, r: int = 16, alpha: int = 32, dropout: float | None = None,
               target_modules: str | list[str] = "all-linear", modules_to_save: list[str] | None = None,
               task_type: str = "CAUSAL_LM") -> Any:
    """Wrap `model` in fresh LoRA adapters (PEFT). Only the adapters (and `modules_to_save`) train;
    with task_type="SEQ_CLS" PEFT also trains and saves the classification head (`score`)."""
    from peft import get_peft_model

    config = lora_config(model, r, alpha, dropout, target_modules, modules_to_save, task_type)
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise ConfigError(_label(e)) from None


def continue_adapter(model: Any) -> Any:
    """Train the adapter a PEFT model already carries (continuing from an adapter directory, or a
    PeftModel given in memory): its parameters become trainable again, the base stays frozen."""
    name = model.active_adapter
    model.peft_config[name].inference_mode = False
    for param_name, param in model.named_parameters():
        if f".{name}." in param_name or param_name.endswith(f".{name}"):
            param.requires_grad_(True)
    return model


def adapters_are_identity(model: Any) -> bool:
    """Whether switching the adapters off changes nothing: every LoRA B matrix is still zero, as PEFT
    initialises it. Only then is "the policy with adapters disabled" the starting policy."""
    b_matrices = [p for n, p in model.named_parameters() if "lora_B" in n or "lora_embedding_B" in n]
    return bool(b_matrices) and all(not bool(p.detach().any()) for p in b_matrices)
