"""Load tokenizers and causal LMs with `from_pretrained(name_or_path)`, and wrap them in LoRA.

Safe by default: weights load from safetensors where the checkpoint has them (transformers refuses
to unpickle .bin files unless told otherwise), and `trust_remote_code` stays off unless the config
turns it on.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import torch

from vietnamese_ai.errors import ConfigError, UserError

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> Any:
    if name not in DTYPES:
        raise ConfigError(f"dtype: expected one of {', '.join(DTYPES)}, got '{name}'")
    return DTYPES[name]


def _load_error(kind: str, name_or_path: str, error: Exception) -> UserError:
    return UserError(f"{kind} '{name_or_path}' could not be loaded: not a local model directory, and the "
                     f"Hugging Face hub did not provide it ({type(error).__name__}: {error})")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error("tokenizer", name_or_path, e) from None
    if tokenizer.pad_token_id is None:
        # Padding only fills unused slots (the mask hides them), so EOS is a safe stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(load_in_4bit: bool) -> Any:
    """QLoRA's 4-bit NF4 base weights; needs bitsandbytes and a CUDA GPU."""
    if not load_in_4bit:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("load_in_4bit: QLoRA needs bitsandbytes (pip install 'vietnamese-ai[qlora]')")
    if not torch.cuda.is_available():
        raise ConfigError("load_in_4bit: QLoRA needs a CUDA GPU; none is visible")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


ADAPTER_CONFIG = "adapter_config.json"


def adapter_base(name_or_path: str) -> str | None:
    """The base model of a PEFT adapter directory (its adapter_config.json), None for anything else."""
    config_path = os.path.join(name_or_path, ADAPTER_CONFIG)
    if not os.path.isfile(config_path):
        return None
    try:
        with open(config_path, encoding="utf-8") as f:
            base = json.load(f).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise UserError(f"{config_path}: unreadable adapter config ({type(e).__name__}: {e})") from None
    if not base:
        raise UserError(f"{config_path}: the adapter names no base model (base_model_name_or_path)")
    return base


def adapter_task(name_or_path: str) -> str | None:
    """The task type recorded by a PEFT adapter directory ('CAUSAL_LM', 'SEQ_CLS', ...), None when
    `name_or_path` is not an adapter directory."""
    if adapter_base(name_or_path) is None:
        return None
    with open(os.path.join(name_or_path, ADAPTER_CONFIG), encoding="utf-8") as f:
        return json.load(f).get("task_type") or "CAUSAL_LM"


def load_causal_lm(name_or_path: str, dtype: str = "float32", device: str | None = None,
                   attn_implementation: str | None = None, trust_remote_code: bool = False,
                   load_in_4bit: bool = False, trainable_adapter: bool = False) -> Any:
    """A causal LM from a hub name or a local directory. A LoRA adapter directory loads its base model
    with the adapter on top (trainable when `trainable_adapter`, frozen otherwise)."""
    base = adapter_base(name_or_path)
    model = _load_plain_causal_lm(base or name_or_path, dtype, attn_implementation, trust_remote_code, load_in_4bit,
                                  kind="base model" if base else "model")
    if base:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, name_or_path, is_trainable=trainable_adapter)
    if device and not load_in_4bit:
        model.to(device)
    return model


def _load_plain_causal_lm(name_or_path: str, dtype: str, attn_implementation: str | None, trust_remote_code: bool,
                          load_in_4bit: bool, kind: str) -> Any:
    from transformers import AutoModelForCausalLM

    quantization = quantization_config(load_in_4bit)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as e:
        raise _load_error(kind, name_or_path, e) from None
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model


def load_sequence_classifier(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """Any sequence classifier (a toxicity model, say), as it is: its own labels and head."""
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error("classifier", name_or_path, e) from None


def disable_dropout(model: Any) -> None:
    """Set every dropout probability to 0: nn.Dropout modules (LoRA's included) and the attention
    dropout rates that transformers' attention modules keep as plain floats."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "attn_dropout", "dropout_p"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
