"""What every recipe does before training: load the model and tokenizer, wrap LoRA, read the data,
and decide whether packing is exact for this model."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from vietnamese_ai.data.loading import Record, load_records
from vietnamese_ai.data.mixture import read_sources
from vietnamese_ai.data.records import rename_columns
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.files import atomic_file, storage_error
from vietnamese_ai.data.layout import attention_pair_cost
from vietnamese_ai.models.exactness import choose_layout
from vietnamese_ai.models.forward import base_model
from vietnamese_ai.models.lora import apply_lora, continue_adapter
from vietnamese_ai.models.loading import (
    check_model_path,
    count_parameters,
    disable_dropout,
    is_peft_model,
    load_causal_lm,
    load_tokenizer,
    plainly_local,
)
from vietnamese_ai.training.config import TrainingConfig
from vietnamese_ai.training.checkpoint import check_resumable
from vietnamese_ai.training.distributed import check_requested_engine, launched_engine, quiet_deepspeed
from vietnamese_ai.training.loop import mixed_precision
from vietnamese_ai.training.rundir import check_output_dir

log = logging.getLogger("vietnamese_ai")
C = TypeVar("C", bound=TrainingConfig)


def quiet_transformers() -> None:
    """Keep transformers' own progress bars and advisory warnings out of training logs."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    quiet_deepspeed()
    # PEFT still calls a transformers property that warns about its own rename on every LoRA run.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def model_argument(config: C, model: Any, key: str = "model_name_or_path") -> tuple[C, Any]:
    """A model given in Python: a loaded model, or a hub name / local path (which goes into the config)."""
    if model is None or isinstance(model, torch.nn.Module):
        return config, model
    if isinstance(model, (str, os.PathLike)):
        return config.model_copy(update={key: os.fspath(model)}), None
    raise ConfigError(f"{key.replace('_name_or_path', '')}: expected a transformers model or a hub name / local path, "
                      f"got {type(model).__name__}")


def load_tokenizer_for(config: TrainingConfig, model: Any = None) -> Any:
    """The tokenizer: tokenizer_name_or_path, else the model's (by path, or the loaded model's name).
    Loaded before the model, so that the data is tokenised (and checked) before the expensive load."""
    name = config.tokenizer_name_or_path or config.model_name_or_path
    if name is None and model is not None:
        name = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    if not name:
        raise ConfigError("model_name_or_path: required (a hub name or a local model directory)")
    return load_tokenizer(name, config.trust_remote_code)


def declared_vocab_size(config: TrainingConfig, model: Any = None) -> int | None:
    """The model's vocabulary size without loading its weights (from its config), for checking
    pre-tokenised ids early; None when it cannot be read."""
    if model is not None:
        return vocab_size(model)
    from transformers import AutoConfig

    from vietnamese_ai.models.loading import adapter_base

    path = adapter_base(config.model_name_or_path) or config.model_name_or_path
    try:
        model_config = AutoConfig.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    except Exception:  # the model load reports the problem properly
        return None
    return getattr(model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config,
                   "vocab_size", None)


def load_policy(config: TrainingConfig, model: Any = None, tokenizer: Any = None) -> tuple[Any, Any]:
    """The model to train (loaded from config.model_name_or_path unless given) and its tokenizer,
    with LoRA and gradient checkpointing applied as configured. A LoRA adapter directory (or a PEFT
    model object) is trained further as it is: see `prepare_trainable`."""
    quiet_transformers()
    torch.manual_seed(config.seed)  # LoRA's random initialisation happens here, before the loop seeds anything
    if model is None:
        if not config.model_name_or_path:
            raise ConfigError("model_name_or_path: required (a hub name or a local model directory)")
        model = load_causal_lm(config.model_name_or_path, config.dtype, attn_implementation=config.attn_implementation,
                               trust_remote_code=config.trust_remote_code, load_in_4bit=config.load_in_4bit,
                               trainable_adapter=True)
    if tokenizer is None:
        tokenizer = load_tokenizer_for(config, model)
    return prepare_trainable(config, model), tokenizer


LORA_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")


def prepare_trainable(config: TrainingConfig, model: Any, task_type: str = "CAUSAL_LM") -> Any:
    """Gradient checkpointing and LoRA as configured; logs the trainable parameter count.

    A model that already carries a LoRA adapter (a LoRA run's final/, or a PEFT model object) keeps
    it and trains it further, whatever use_lora says: a fresh adapter on top would start from the base
    model and throw the earlier training away. Its rank and targets are the adapter's own."""
    if config.load_in_4bit and not config.use_lora:
        raise ConfigError("load_in_4bit: 4-bit weights cannot be trained directly; set use_lora=true (QLoRA)")
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if is_peft_model(model):
        model = continue_adapter(model)
        ignored = [k for k in LORA_KEYS if k in config.model_fields_set]
        log.info("continuing to train the model's LoRA adapter (rank %s)%s", model.peft_config[model.active_adapter].r,
                 f"; {', '.join(ignored)} do not apply to an existing adapter" if ignored else "")
    elif config.use_lora:
        model = apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules,
                           task_type=task_type)
    if getattr(config, "disable_dropout", False):
        disable_dropout(model)
    trainable, total = count_parameters(model)
    log.info("model: %s parameters, %s trainable (%.2f%%)", f"{total:,}", f"{trainable:,}", 100 * trainable / max(total, 1))
    return model


def read_split(config: TrainingConfig, which: str, records: Any = None) -> list[Record] | None:
    """Records for 'train' or 'eval': given in memory, or read from config.dataset / config.eval_dataset
    (one source, or several mixed by weight: data/mixture.py), with their fields renamed by
    config.columns (and dataset_text_field, where the method has it)."""
    columns = dict(config.columns or {})
    text_field = getattr(config, "dataset_text_field", None)
    if text_field and text_field != "text":
        if "text" in columns.values():
            raise ConfigError(f"dataset_text_field: '{text_field}' and columns both name the 'text' field; give one")
        columns[text_field] = "text"
    if records is not None:
        return rename_columns(load_records(records, name=f"{which} data"), columns or None)
    if which == "train":
        if not config.dataset:
            raise ConfigError("dataset: required (a .jsonl/.json/.csv/.parquet file or a hub dataset name)")
        return read_sources(config.dataset, config.dataset_split, config.dataset_subset, columns or None, config.seed)
    if config.eval_dataset:
        return read_sources(config.eval_dataset, config.eval_split, config.dataset_subset, columns or None, config.seed)
    return None


def check_local_paths(config: TrainingConfig) -> None:
    """A model, reference or tokenizer named by a path that plainly is local (absolute, relative with
    ./ or ../, or two directories deep) must exist, and one the method loads as a causal LM (the
    config's `causal_lm_keys`) must not be a reward model or classifier; hub names (`org/name`) are
    left to the loader. The value model may be a reward model (models.value)."""
    for key in ("model_name_or_path", "ref_model_name_or_path", "value_model_name_or_path", "tokenizer_name_or_path"):
        value = getattr(config, key, None)
        if not value:
            continue
        if key in config.causal_lm_keys:
            check_model_path(value, key)
        elif not os.path.exists(value) and plainly_local(value):
            raise ConfigError(f"{key}: '{value}': no such directory")


def read_splits(config: TrainingConfig, train_records: Any = None, eval_records: Any = None,
                validate: Callable[[Record], Any] | None = None) -> tuple[list[Record], list[Record] | None]:
    """Training and (optional) evaluation records, read before anything is loaded so that a bad file,
    a bad record (`validate` converts each one to its canonical type) or an output_dir that cannot be
    used fails in seconds, not after a model load."""
    resume = check_output_dir(config)
    mixed_precision(config)  # fp16 without a GPU fails here, not after the model has loaded
    check_requested_engine()  # so does an engine accelerate launch asked for that cannot run
    if resume:   # and a checkpoint this engine cannot read
        check_resumable(resume, *launched_engine())
    train, held_out = read_split(config, "train", train_records), read_split(config, "eval", eval_records)
    if validate is not None:
        for record in train + (held_out or []):
            validate(record)
    check_local_paths(config)
    return train, held_out


def write_jsonl(path: str, rows: list[dict[str, Any]]) -> str:
    """Write rows as JSON Lines through a temporary file renamed into place, so a failed or killed run
    never leaves a half-written file in place of a good one. Returns `path`."""
    try:
        with atomic_file(path) as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    except OSError as e:
        error = storage_error("output file", path, e)
        if error is None:
            raise
        raise error from None
    return path


def resolve_packing(requested: bool, model: Any, longest: int, measure: Any = None) -> bool:
    """Packing stays on only if this model computes packed sequences exactly as separate ones
    (models.exactness, probed with sequences as long as the data's `longest`)."""
    return choose_layout([model], requested, False, measure, longest)[0]


def pad_token_id(tokenizer: Any, model: Any) -> int:
    for source in (tokenizer, getattr(model, "config", None)):
        value = getattr(source, "pad_token_id", None)
        if value is not None:
            return int(value)
    return 0


def pair_cost(model: Any) -> float:
    """Attention's relative cost per token pair for this model (see data.layout.choose_rows)."""
    hidden = getattr(base_model(model).config, "hidden_size", None)
    return attention_pair_cost(hidden) if hidden else 0.0


def vocab_size(model: Any) -> int:
    return int(model.get_input_embeddings().num_embeddings)
