"""Load tokenizers and causal LMs with `from_pretrained(name_or_path)`, and wrap them in LoRA.

Safe by default: weights load from safetensors where the checkpoint has them (transformers refuses
to unpickle .bin files unless told otherwise), and `trust_remote_code` stays off unless the config
turns it on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any

import torch

from vietnamese_ai.errors import ConfigError, UserError

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> Any:
    if name not in DTYPES:
        raise ConfigError(f"dtype: expected one of {', '.join(DTYPES)}, got '{name}'")
    return DTYPES[name]


# What from_pretrained raises for a bad model directory or name (missing or damaged files, a config it
# cannot read, a kernel that is not installed); each becomes a one-line UserError.
LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, ImportError, KeyError, RuntimeError)
try:
    from safetensors import SafetensorError

    LOAD_ERRORS += (SafetensorError,)
except ImportError:  # older safetensors: its errors are RuntimeErrors or OSErrors
    pass
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")


def plainly_local(name_or_path: str) -> bool:
    """A path no hub name can be: absolute, relative with ./ or ../, or two directories deep."""
    return os.path.isabs(name_or_path) or name_or_path.startswith(".") or name_or_path.count("/") > 1


def _load_error(kind: str, name_or_path: str, error: BaseException) -> UserError:
    detail = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    if os.path.isdir(name_or_path):
        return UserError(f"{kind} '{name_or_path}' could not be loaded ({detail})")
    if os.path.exists(name_or_path):
        return UserError(f"{kind} '{name_or_path}' is a file; give the model's directory (or a hub name)")
    if plainly_local(name_or_path):
        return UserError(f"{kind} '{name_or_path}': no such directory")
    return UserError(f"{kind} '{name_or_path}' could not be loaded: not a local directory, and the Hugging Face "
                     f"hub did not provide it ({detail})")


def check_safetensors(directory: str) -> None:
    """Every .safetensors file in a local model directory is complete: its header parses and the
    data it describes fits in the file. Cheap (headers only), and it runs before a long load."""
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".safetensors"):
            continue
        path = os.path.join(directory, name)
        size = os.path.getsize(path)
        try:
            with open(path, "rb") as f:
                header_length = int.from_bytes(f.read(8), "little")
                if header_length <= 0 or 8 + header_length > size:
                    raise ValueError("header longer than the file")
                header = json.loads(f.read(header_length))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            raise UserError(f"{path}: not a readable safetensors file (damaged or cut short)") from None
        if 8 + header_length + end > size:
            raise UserError(f"{path}: cut short ({size} bytes, the header describes {8 + header_length + end})")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """A tokenizer from a hub name or a local directory (an adapter directory without tokenizer files
    falls back to its base model's)."""
    from transformers import AutoTokenizer

    if os.path.isdir(name_or_path) and not any(os.path.isfile(os.path.join(name_or_path, f)) for f in TOKENIZER_FILES):
        base = adapter_base(name_or_path)
        if base is None:
            raise UserError(f"tokenizer: '{name_or_path}' has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...); "
                            f"save the tokenizer there or pass tokenizer_name_or_path")
        return load_tokenizer(base, trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except LOAD_ERRORS as e:
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


# Where a reward model or classifier belongs instead of a causal LM: said after every refusal.
SCORE_INSTEAD = ("a reward model or classifier scores answers instead: reward_model:PATH or "
                 "classifier:MODEL:LABEL in reward= or scorer=")


def not_a_causal_lm(path: str) -> str | None:
    """What a local checkpoint is when it is a reward model or a classifier rather than a causal LM (a
    sequence-classification checkpoint, a SEQ_CLS LoRA adapter, a reward model with our own scalar
    head), from its config files alone; None otherwise, and for hub names (they would need a download).
    Loaded as a causal LM, such a checkpoint gets a freshly initialised (or tied) LM head, and training
    or sampling goes on without a word."""
    from vietnamese_ai.models.reward import OWN_HEAD_FILE

    if not os.path.isdir(path):
        return None
    task = adapter_task(path)
    if task not in (None, "CAUSAL_LM"):
        return f"a {task} LoRA adapter"
    if task is not None:
        return None
    if os.path.isfile(os.path.join(path, OWN_HEAD_FILE)):
        return "a reward model with its own scalar head"
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            architectures = json.load(f).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None   # missing or unreadable: the loader says so in its own words
    classifiers = [a for a in architectures if str(a).endswith("ForSequenceClassification")]
    if classifiers and len(classifiers) == len(architectures):
        return f"a sequence-classification checkpoint ({classifiers[0]})"
    return None


def check_causal_lm(path: str, key: str, hint: str = SCORE_INSTEAD) -> None:
    """Refuse, in one line naming `key`, a local reward model or classifier where a causal LM is loaded."""
    what = not_a_causal_lm(path)
    if what:
        raise ConfigError(f"{key}: '{path}' is {what}, not a causal language model; {hint}")


def check_model_path(path: str, key: str, hint: str = SCORE_INSTEAD) -> None:
    """The early check of a causal LM named by `key`, before anything loads: a plainly local path must
    exist and must not be a reward model or classifier. Reads config files only, never weights."""
    if not os.path.exists(path) and plainly_local(path):
        raise ConfigError(f"{key}: '{path}': no such directory")
    check_causal_lm(path, key, hint)


def load_causal_lm(name_or_path: str, dtype: str = "float32", device: str | None = None,
                   attn_implementation: str | None = None, trust_remote_code: bool = False,
                   load_in_4bit: bool = False, trainable_adapter: bool = False) -> Any:
    """A causal LM from a hub name or a local directory. A LoRA adapter directory loads its base model
    with the adapter on top (trainable when `trainable_adapter`, frozen otherwise). A reward model or
    classifier is refused (the commands check earlier, naming their key: check_model_path)."""
    check_causal_lm(name_or_path, "model")
    base = adapter_base(name_or_path)
    model = _load_plain_causal_lm(base or name_or_path, dtype, attn_implementation, trust_remote_code, load_in_4bit,
                                  kind="base model" if base else "model")
    if base:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, name_or_path, is_trainable=trainable_adapter)
        except LOAD_ERRORS as e:
            raise _load_error("LoRA adapter", name_or_path, e) from None
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
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise UserError(f"{kind} '{name_or_path}' has no config.json: not a Hugging Face model directory")
        check_safetensors(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except LOAD_ERRORS as e:
        raise _load_error(kind, name_or_path, e) from None
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model


def load_sequence_classifier(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """Any sequence classifier (a toxicity model, say), as it is: its own labels and head."""
    from transformers import AutoModelForSequenceClassification

    if adapter_base(name_or_path) is not None:
        raise UserError(f"classifier '{name_or_path}' is a LoRA adapter directory; give a full sequence-classification "
                        f"model (merge the adapter into its base first)")
    if os.path.isdir(name_or_path):
        check_safetensors(name_or_path)
    try:
        return AutoModelForSequenceClassification.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except LOAD_ERRORS as e:
        raise _load_error("classifier", name_or_path, e) from None


def disable_dropout(model: Any) -> None:
    """Set every dropout probability to 0: nn.Dropout modules (LoRA's included), and the rates that
    transformers' modules keep as plain floats and pass to functional dropout at run time
    (`attention_dropout`, OPT's `dropout` and `activation_dropout`, `layerdrop`, ...)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if isinstance(value, float) and not isinstance(value, bool) and ("dropout" in name or name == "layerdrop"):
                setattr(module, name, 0.0)


def is_peft_model(model: Any) -> bool:
    # A PeftModel can only exist once peft has been imported: a run without LoRA never pays its import.
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
