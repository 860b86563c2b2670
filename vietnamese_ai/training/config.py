"""Run configuration: typed, validated, with the Hugging Face / TRL key names wherever one exists.

A config comes from a YAML file (read with files.load_yaml: safe, a key given twice refused) plus `key=value` overrides; an unknown key
or a bad value is a one-line ConfigError that names where it came from. `--help` is generated from
the field descriptions below, so it documents every option.
"""

from __future__ import annotations

import difflib
import enum
import importlib.util
import typing
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vietnamese_ai.data.loading import read_yaml
from vietnamese_ai.data.mixture import parse_sources
from vietnamese_ai.data.records import check_columns
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.files import DuplicateKey, load_yaml
from vietnamese_ai.training.trackers import check_report_to

C = TypeVar("C", bound=BaseModel)
ATTENTION_KERNELS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


class InvalidValue(ConfigError):
    """A config key with a bad value (or an unknown key); `key` lets callers say where it came from."""

    def __init__(self, key: str | None, problem: str):
        super().__init__(f"key '{key}': {problem}" if key else problem)
        self.key, self.problem = key, problem


def closest(key: str, valid: list[str]) -> str | None:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_key(key: str, valid: list[str]) -> InvalidValue:
    suggestion = closest(key, valid)
    hint = f"did you mean '{suggestion}'?" if suggestion else f"valid keys: {', '.join(sorted(valid))}"
    return InvalidValue(None, f"unknown key '{key}'; {hint}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Config(BaseModel):
    """Base of every command's config: unknown keys and bad values raise a one-line ConfigError
    (never pydantic's multi-line report), numbers given for text keys are text (output_dir=2024 is a
    directory), and values are checked again on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(),
                              coerce_numbers_to_str=True, allow_inf_nan=False)

    # Other names a key is known by (a peer's, or an older one): renamed before validation.
    renamed_keys: ClassVar[dict[str, str]] = {}

    def __init__(self, **values: Any):
        values = renamed(type(self), values)
        for key in values:
            if key not in type(self).model_fields:
                raise unknown_key(key, list(type(self).model_fields))
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise invalid(e) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as e:
            raise invalid(e) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def renamed(cls: type[BaseModel], values: dict[str, Any], sources: dict[str, str] | None = None) -> dict[str, Any]:
    """`values` with every other name of a key replaced by the key's own; both names at once with
    different values is an error."""
    names = getattr(cls, "renamed_keys", {})
    if not any(key in names for key in values):
        return values
    out, given_as = {}, {}
    for key, value in values.items():
        target = names.get(key, key)
        if target in out and out[target] != value:
            other = given_as[target] if key == target else key
            raise InvalidValue(other, f"the same setting as '{target}'; give one of them")
        given_as[target] = key
        if sources is not None and target != key:
            sources[target] = sources.get(key, "config")
        out[target] = value
    return out


def invalid(error: ValidationError) -> InvalidValue:
    """The first problem of a pydantic error, in one line: the key, what is wrong, the value given."""
    first = error.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a check across keys (model validator): its message names the keys
        return InvalidValue(None, message)
    key = str(first["loc"][0])
    if first["type"] == "missing":
        return InvalidValue(key, "required")
    return InvalidValue(key, f"{message} (got {_shown(first.get('input'))})")


def _columns(value: dict[str, str] | None) -> dict[str, str] | None:
    return None if value is None else check_columns(value)


def _datasets(value: Any) -> Any:
    if value is not None:
        parse_sources(value)
    return value


# A field mapping (dataset name -> the name a method reads), checked where it is given.
Columns = Annotated[dict[str, str] | None, AfterValidator(_columns)]
# One data source, or several mixed by weight (data/mixture.py).
Datasets = Annotated[str | list[str | dict[str, Any]] | None, AfterValidator(_datasets)]


class TrainingConfig(Config):
    """Keys shared by every training method."""

    # Optional in Python (a model object and records may be passed instead), required on the command line.
    required_on_command_line: ClassVar[tuple[str, ...]] = ("model_name_or_path", "dataset")
    # Keys naming a causal LM: a reward model or classifier given there is refused before anything loads
    # (recipes.common.check_local_paths). The reward recipe starts from either, so it names none.
    causal_lm_keys: ClassVar[tuple[str, ...]] = ("model_name_or_path", "ref_model_name_or_path")
    # transformers' earlier name of eval_strategy
    renamed_keys: ClassVar[dict[str, str]] = {"evaluation_strategy": "eval_strategy"}

    # Model
    model_name_or_path: str | None = Field(None, description="Hugging Face hub name or local directory of the starting model.")
    tokenizer_name_or_path: str | None = Field(None, description="Tokenizer to use, when it is not the model's own.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("float32", description="Dtype the weights are loaded in (mixed precision is separate: bf16/fp16).")
    attn_implementation: str | None = Field(None, description="Attention kernel: sdpa (the default), eager, flash_attention_2, flash_attention_3, flex_attention, or a hub kernel 'org/name'.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub to run. Off unless you trust the repository.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory.")
    # LoRA / QLoRA
    use_lora: bool = Field(False, description="Train LoRA adapters (PEFT) instead of all weights.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = lora_alpha / lora_r).")
    lora_dropout: float | None = Field(None, ge=0, lt=1, description="Dropout on the LoRA input; unset: 0.05, or 0 on mixture-of-experts models whose expert weights are adapted (PEFT cannot apply dropout there).")
    lora_target_modules: str | list[str] = Field("all-linear", description="Modules that get adapters: 'all-linear' or a list of names (q_proj,v_proj or c_attn,c_proj for GPT-2).")
    load_in_4bit: bool = Field(False, description="QLoRA: load the base model in 4-bit NF4 (needs bitsandbytes and CUDA).")
    merge_lora: bool = Field(False, description="Merge the adapters into the base weights when saving final/.")
    # Data
    dataset: Datasets = Field(None, description="Training data: a .jsonl/.json/.csv/.parquet file or a hub dataset name, or a list of them mixed by weight, each a name or {path, weight, split, subset, columns}: a weight of 2 takes every record twice, 0.5 a seeded half (README, Data).")
    dataset_split: str = Field("train", description="Split to read from a hub dataset.")
    dataset_subset: str | None = Field(None, description="Config (subset) name of a hub dataset.")
    eval_dataset: Datasets = Field(None, description="Held-out data for evaluation: a file or hub name, or a list like dataset's.")
    eval_split: str = Field("test", description="Split to read from a hub evaluation dataset.")
    columns: Columns = Field(None, description="Rename the dataset's fields to the ones the method reads before validation, in dataset and eval_dataset, e.g. {question: prompt, good: chosen, bad: rejected}.")
    max_length: int | None = Field(1024, ge=2, description="Longest tokenised sequence; longer prompts are cut from the left.")
    # Optimisation
    learning_rate: float = Field(2e-5, ge=0, description="Peak learning rate (AdamW).")
    num_train_epochs: float = Field(3.0, gt=0, description="Epochs over the training data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, ge=-1, description="Optimizer steps to run; -1 means use num_train_epochs.")
    per_device_train_batch_size: int = Field(8, ge=1, description="Examples per micro-batch on each device.")
    per_device_eval_batch_size: int = Field(8, ge=1, description="Examples per evaluation batch on each device.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step; the loss is normalised by the step's total item count.")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Fraction of the steps spent warming the learning rate up from 0.")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("linear", description="Learning-rate schedule after warmup.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not applied to biases and norms).")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2.")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    max_grad_norm: float | None = Field(1.0, ge=0, description="Clip the gradient norm to this value; null or 0 disables clipping.")
    bf16: bool | None = Field(None, description="bfloat16 autocast; by default on when a GPU supports it.")
    fp16: bool = Field(False, description="float16 autocast with loss scaling (GPU only).")
    seed: int = Field(42, description="Seed for initialisation, data order and dropout.")
    # Run
    output_dir: str = Field("runs/run", description="Directory for config.yaml, metrics.jsonl, checkpoints/ and final/.")
    overwrite_output_dir: bool = Field(False, description="Start afresh even if output_dir holds checkpoints.")
    resume_from_checkpoint: str | None = Field(None, description="'latest' or a checkpoint directory to resume from.")
    logging_steps: int = Field(10, ge=1, description="Write a metrics.jsonl line every N optimizer steps.")
    save_strategy: Literal["steps", "epoch", "no"] = Field("steps", description="When to save a checkpoint: every save_steps steps, at the end of every epoch, or never ('no': a stopped run keeps nothing but what final/ holds at the end).")
    save_steps: int = Field(500, ge=0, description="With save_strategy=steps: save a checkpoint every N steps (0: none, like save_strategy=no).")
    save_total_limit: int | None = Field(None, ge=1, description="Keep only the newest N checkpoints.")
    eval_strategy: Literal["steps", "epoch", "no"] = Field("steps", description="When to evaluate on eval_dataset: every eval_steps steps, at the end of every epoch, or never; 'steps' and 'epoch' also evaluate once at the end of training.")
    eval_steps: int | None = Field(None, ge=1, description="With eval_strategy=steps: evaluate every N steps (unset: only once at the end).")
    disable_tqdm: bool = Field(False, description="Hide the progress: a bar on a terminal, otherwise a line every ten seconds (step, pace, time left, loss).")
    peak_flops: float | None = Field(None, gt=0, description="Peak FLOP/s of one device, for the logged mfu; unset: the GPU's bf16 peak from a table (measured for a card not in it), or this CPU's measured fp32 matmul rate.")
    report_to: str | list[str] = Field("none", description="Experiment trackers that also get every metrics.jsonl line: none, or one or a list of tensorboard (output_dir/runs/<run_name>), wandb, mlflow, trackio (their own settings from their environment variables, e.g. WANDB_MODE=offline).")
    run_name: str | None = Field(None, description="The run's name in the trackers; unset: the output_dir's name.")

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 steps would train nothing; give a positive number, or -1 to use num_train_epochs")
        return value

    @model_validator(mode="after")
    def _strategy_keys(self) -> "TrainingConfig":
        # A key that only means something under another strategy would be silently ignored.
        for strategy, steps in (("save_strategy", "save_steps"), ("eval_strategy", "eval_steps")):
            if getattr(self, strategy) != "steps" and steps in self.model_fields_set and getattr(self, steps):
                raise ValueError(f"{steps}: applies only to {strategy}=steps (got {strategy}={getattr(self, strategy)}); "
                                 f"drop one of them")
        return self

    def checkpoints_on(self) -> bool:
        """Whether the run saves checkpoints (and so whether a stopped run saves its last step)."""
        return self.save_strategy == "epoch" or (self.save_strategy == "steps" and self.save_steps > 0)

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, value: str | list[str]) -> str | list[str]:
        return check_report_to(value)

    @field_validator("attn_implementation")
    @classmethod
    def _known_kernel(cls, value: str | None) -> str | None:
        return check_attention_kernel(value)


def check_attention_kernel(value: str | None) -> str | None:
    """A kernel transformers knows, and whose package is installed: found here, not minutes into a load."""
    if value is None or "/" in value:  # "org/kernel": a hub kernel, fetched by transformers
        return value
    if value not in ATTENTION_KERNELS:
        raise ValueError(f"expected one of {', '.join(ATTENTION_KERNELS)} (or a hub kernel 'org/name')")
    package = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}.get(value)
    if package and importlib.util.find_spec(package) is None:
        raise ValueError(f"{value} needs the '{package}' package, which is not installed (and a CUDA GPU); "
                         f"use sdpa")
    return value


def parse_override(item: str) -> tuple[str, Any, str]:
    """`key=value` -> (key, value read as YAML, the raw text): numbers, booleans, null and [lists] work."""
    if "=" not in item:
        raise ConfigError(f"command line: '{item}' is not key=value")
    key, raw = item.split("=", 1)
    try:
        value = load_yaml(raw) if raw != "" else ""
    except DuplicateKey as e:   # {a: 1, a: 2} is a mapping that would lose a value, not text
        raise ConfigError(f"command line: '{item}': key '{e.key}' appears twice") from None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and "," in value and key.endswith("modules"):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return key.strip(), value, raw


def text_only(cls: type[BaseModel], key: str, value: Any = None) -> bool:
    """Whether a key's command-line value is text to take as written: the key holds text and nothing
    else (str or str | None), or text or a list (dataset, report_to) and the value is no list or
    mapping. So output_dir=2024 or dataset=010 name that directory or file."""
    field = cls.model_fields.get(key)
    if field is None:
        return False
    if typing.get_origin(field.annotation) in (list, tuple, dict):   # list[str] is a list, not text
        return False
    allowed = set(typing.get_args(field.annotation)) or {field.annotation}
    if str in allowed and value is not None and not isinstance(value, (list, dict)):
        return True
    return str in allowed and allowed <= {str, type(None)}


def build_config(cls: type[C], values: dict[str, Any], sources: dict[str, str] | None = None,
                 where: str = "config") -> C:
    """Validate `values` into `cls`; the one-line error says where the bad key came from (`sources`
    per key, else `where`)."""
    sources = sources or {}
    try:
        return cls(**values)
    except InvalidValue as e:
        raise ConfigError(f"{sources.get(e.key or '', where)}: {e}") from None


def config_from_values(cls: type[C], values: dict[str, Any], sources: dict[str, str] | None = None,
                       where: str = "config") -> C:
    """`values` under any of their other names (renamed_keys), every key known, then validated."""
    sources = sources or {}
    try:
        values = renamed(cls, values, sources)
    except InvalidValue as e:
        raise ConfigError(f"{sources.get(e.key or '', where)}: {e}") from None
    for key in values:
        if key not in cls.model_fields:
            raise ConfigError(f"{sources.get(key, where)}: {unknown_key(key, list(cls.model_fields))}")
    return build_config(cls, values, sources, where)


def load_config(cls: type[C], config_file: str | None = None, overrides: list[str] | None = None) -> C:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file:
        for key, value in read_yaml(config_file).items():
            values[str(key)], sources[str(key)] = value, config_file
    for item in overrides or []:
        key, value, raw = parse_override(item)
        values[key], sources[key] = (raw if text_only(cls, key, value) and value is not None else value), "command line"
    return config_from_values(cls, values, sources)


def type_name(annotation: Any) -> str:
    """'int', 'float or null', 'one of: a, b', 'list of str' ... for --help."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of: " + ", ".join(str(m.value) for m in annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if args and (origin is typing.Union or str(origin) == "<class 'types.UnionType'>"):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    return getattr(annotation, "__name__", str(annotation))


def describe(cls: type[BaseModel]) -> str:
    """Every option for --help: name, type (choices listed), default or REQUIRED, and what it does."""
    lines = []
    required = getattr(cls, "required_on_command_line", ())
    for name, info in cls.model_fields.items():
        default = "REQUIRED" if info.is_required() or name in required else f"default: {info.default.value if isinstance(info.default, enum.Enum) else info.default!r}"
        kind = type_name(info.annotation).removesuffix(" or null") if name in required else type_name(info.annotation)
        lines.append(f"  {name} ({kind}; {default})\n      {info.description or ''}")
    names = getattr(cls, "renamed_keys", {})
    if names:
        lines.append("  also accepted: " + ", ".join(f"{old} (= {new})" for old, new in names.items()))
    return "\n".join(lines)
