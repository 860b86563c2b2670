"""Load tokenizers and causal LMs with `from_pretrained(name_or_path)`, and wrap them in LoRA.

Safe by default: weights load from safetensors where the checkpoint has them (transformers refuses
to unpickle .bin files unless told otherwise), and `trust_remote_code` stays off unless the config
turns it on.
"""

from __future__ import annotations

import importlib.util
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


def load_causal_lm(name_or_path: str, dtype: str = "float32", device: str | None = None,
                   attn_implementation: str | None = None, trust_remote_code: bool = False,
                   load_in_4bit: bool = False) -> Any:
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
        raise _load_error("model", name_or_path, e) from None
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    elif device:
        model.to(device)
    return model


def load_sequence_classifier(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """Any sequence classifier (a toxicity model, say), as it is: its own labels and head."""
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error("classifier", name_or_path, e) from None


def apply_lora(model: Any, r: int = 16, alpha: int = 32, dropout: float = 0.05,
               target_modules: str | list[str] = "all-linear", modules_to_save: list[str] | None = None,
               task_type: str = "CAUSAL_LM") -> Any:
    """Wrap `model` in LoRA adapters (PEFT). Only the adapters (and `modules_to_save`) train; with
    task_type="SEQ_CLS" PEFT also trains and saves the classification head (`score`)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        modules_to_save=modules_to_save, task_type=task_type)
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise ConfigError(f"lora_target_modules: {e}") from None


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
