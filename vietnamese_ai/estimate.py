"""How much memory a run needs on each device, from the model's config.json and the run's config alone.

`vietnamese-ai <method> ... --estimate` prints this without loading a weight. The arithmetic is
`estimate_memory`, a pure function of a `ModelShape` (read from config.json) and the run's config; the
formulas are written out in docs/memory.md, with the error measured against real runs.

What is counted, per device (W = world size):
- weights: parameters x bytes of `dtype` (4-bit NF4 linears at 0.5625 bytes with QLoRA), plus the
  LoRA adapters in fp32; sharded over W by fsdp2 and deepspeed-zero3; under bf16/fp16 autocast with
  fp32 weights, the half-precision copies autocast keeps of the trained weights during the forward;
- gradients and AdamW's two moments, in the dtype of the trainable parameters; gradients sharded by
  fsdp2 and ZeRO-2/3, moments by fsdp2 and ZeRO-2/3;
- the reference, reward and value models the method keeps beside the policy (frozen copies unless
  noted); the reference and reward models are whole on every process (the loop shards only what it
  trains), the value model is counted like the policy;
- the sampler's KV cache for online methods (one rollout's sequences at full length);
- activations of one micro-batch (a per-layer formula, or one layer's with gradient checkpointing)
  and its logits;
- on CPU, the framework itself (FRAMEWORK_CPU_BYTES): the figure is the process's resident peak. On a
  GPU the figure is the device's peak (torch.cuda.max_memory_allocated), where the framework does not
  count.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from vietnamese_ai.errors import ConfigError
from vietnamese_ai.scoring.combine import weighted_parts

TRAINING_METHODS = ("sft", "score-sft", "dpo", "orpo", "kto", "reward", "grpo", "rloo", "ppo")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
UNCAPPED_PROMPT = 512   # prompt tokens assumed for online methods when max_prompt_length is unset
NF4_BYTES = 0.5625    # 4 bits + a fp32 absmax per block of 64, quantised again (bitsandbytes' double quant)

# Peak resident memory of a whole CPU training process whose model is negligible: `vietnamese-ai sft`
# with a 41K-parameter model, 2 steps, torch 2.13 CPU, transformers 5.23 (importing torch and
# transformers alone peaks at 297 MiB; accelerate, peft, tokenizers and the first kernels bring the
# rest). Measured with resource.getrusage(RUSAGE_CHILDREN).ru_maxrss around the subprocess.
FRAMEWORK_CPU_BYTES = 475 * 2**20

# Linear layers of a Llama-style decoder layer that LoRA's "all-linear" adapts: name -> (in, out) in
# terms of the shape (h = hidden, q = heads x head_dim, kv = kv_heads x head_dim, i = intermediate).
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a decoder-only model; `from_config` reads it from config.json."""

    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool = True           # lm_head shares the embedding
    qkv_bias: bool = False      # Qwen2 has biases on q, k, v
    gated_mlp: bool = True      # gate, up, down (SwiGLU); False: up, down (GPT-2)
    experts: int = 1            # mixture of experts: every expert's MLP is held
    dtype: str | None = None    # the checkpoint's own dtype (what dtype=auto loads)

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "config.json") -> "ModelShape":
        def first(*keys: str, default: Any = None) -> Any:
            for key in keys:
                if config.get(key) is not None:
                    return config[key]
            if default is None:
                raise ConfigError(f"{where}: no '{keys[0]}'; --estimate reads decoder-only configs (Llama, Qwen2, "
                                  f"Mistral, Gemma, GPT-2 style)")
            return default

        if "text_config" in config and "hidden_size" not in config:   # multimodal wrappers: the language model
            config = {**config["text_config"], "tie_word_embeddings": config.get("tie_word_embeddings")}
        hidden = int(first("hidden_size", "n_embd", "d_model"))
        heads = int(first("num_attention_heads", "n_head"))
        act = str(first("hidden_act", "activation_function", default="silu"))
        return cls(vocab=int(first("vocab_size")), hidden=hidden, layers=int(first("num_hidden_layers", "n_layer")),
                   intermediate=int(first("intermediate_size", "n_inner", default=4 * hidden) or 4 * hidden),
                   heads=heads, kv_heads=int(first("num_key_value_heads", default=heads)),
                   head_dim=int(first("head_dim", default=hidden // heads) or hidden // heads),
                   tied=bool(first("tie_word_embeddings", default=True)),
                   qkv_bias=bool(config.get("attention_bias") or config.get("model_type") == "qwen2"),
                   gated_mlp=not act.startswith("gelu") or config.get("model_type") in ("gemma", "gemma2", "gemma3_text"),
                   experts=int(first("num_local_experts", "num_experts", default=1) or 1),
                   dtype=config.get("torch_dtype") or config.get("dtype"))

    @property
    def q(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        h, i = self.hidden, self.intermediate
        shapes = {"q_proj": (h, self.q), "k_proj": (h, self.kv), "v_proj": (h, self.kv), "o_proj": (self.q, h),
                  "up_proj": (h, i), "down_proj": (i, h)}
        if self.gated_mlp:
            shapes["gate_proj"] = (h, i)
        return shapes

    @property
    def linear_params(self) -> int:
        """Weights of the decoder layers' linear layers (what QLoRA quantises), all layers."""
        attention = sum(a * b for n, (a, b) in self.linears().items() if n in LINEARS[:4])
        mlp = sum(a * b for n, (a, b) in self.linears().items() if n not in LINEARS[:4]) * self.experts
        return self.layers * (attention + mlp)

    @property
    def params(self) -> int:
        """Every parameter: embeddings, the linears, q/k/v biases, two norms per layer and the final norm."""
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        per_layer_other = 2 * self.hidden + ((self.q + 2 * self.kv) if self.qkv_bias else 0)
        return embeddings + self.linear_params + self.layers * per_layer_other + self.hidden

    def lora_params(self, rank: int, targets: str | list[str]) -> int:
        """Adapter parameters: r x (in + out) for every targeted linear of every layer."""
        names = set(self.linears()) if targets == "all-linear" else set(targets if isinstance(targets, list) else [targets])
        per_layer = sum(rank * (a + b) * (self.experts if n in ("gate_proj", "up_proj", "down_proj") else 1)
                        for n, (a, b) in self.linears().items() if n in names)
        return self.layers * per_layer

    def activation_elements(self) -> int:
        """Elements one token leaves saved for the backward pass in one decoder layer: the inputs and outputs
        of the two norms (4h); q, k and v, q and k again after the rotary embedding, and the attention
        output (3q + 3kv); the MLP's gate, up, activation and product (4i; 3i without a gate)."""
        mlp = (4 if self.gated_mlp else 3) * self.intermediate
        return 4 * self.hidden + 3 * self.q + 3 * self.kv + mlp


@dataclass
class MemoryEstimate:
    """Bytes per device, by part; `peak_bytes_per_device` is their sum."""

    parts: dict[str, int]
    device: str
    engine: str
    world_size: int
    device_memory: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def peak_bytes_per_device(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool | None:
        return None if self.device_memory is None else self.peak_bytes_per_device <= self.device_memory

    def to_json(self) -> dict[str, Any]:
        return {"peak_bytes_per_device": self.peak_bytes_per_device, "device": self.device, "engine": self.engine,
                "world_size": self.world_size, "parts": dict(self.parts), "device_memory": self.device_memory,
                "fits": self.fits}

    def lines(self) -> list[str]:
        out = [f"memory per device ({self.device}, {self.engine}, {self.world_size} process"
               f"{'es' if self.world_size > 1 else ''}):"]
        out += [f"  {name:<16} {gib(size):>10}" for name, size in self.parts.items() if size]
        out.append(f"  {'peak':<16} {gib(self.peak_bytes_per_device):>10}")
        if self.device_memory is not None:
            out.append(f"  {'fits' if self.fits else 'does NOT fit'} in {gib(self.device_memory)}")
        return out + [f"  note: {n}" for n in self.notes]


def gib(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def parse_size(text: str, key: str = "--device-memory") -> int:
    """'80GB', '80GiB', '80G', '512MiB' or a number of bytes -> bytes (GB and GiB both mean 2**30, as
    device makers' '80GB' cards report about 80 GiB).

    >>> parse_size("80GB"), parse_size("512MiB"), parse_size("1024")
    (85899345920, 536870912, 1024)
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ConfigError(f"{key}: expected a size such as 80GB or 24GiB, got '{text}'")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


def read_model_config(name_or_path: str | None, key: str = "model_name_or_path") -> dict[str, Any]:
    """config.json of a model directory (an adapter directory: its base model's), or of a hub name from
    transformers' offline cache; nothing is downloaded and no weight is read."""
    if not name_or_path:
        raise ConfigError(f"--estimate needs {key}: a model directory holding config.json")
    if os.path.isdir(name_or_path):
        config_file = os.path.join(name_or_path, "config.json")
        if not os.path.isfile(config_file):
            from vietnamese_ai.models.loading import adapter_base   # deferred: the CLI imports this module for every
            # command, the report's too, which must not import torch
            base = adapter_base(name_or_path)   # an adapter directory: its base model's config (one-line errors)
            if base is not None:
                return read_model_config(base, key)
            raise ConfigError(f"{key}: {name_or_path} holds no config.json, which --estimate reads")
        try:
            with open(config_file, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{config_file}: unreadable model config ({type(e).__name__}: {e})") from None
    try:
        from transformers import AutoConfig   # deferred: only a hub name needs it

        return AutoConfig.from_pretrained(name_or_path, local_files_only=True).to_dict()
    except Exception:   # not cached, or not a model name: either way there is nothing to read offline
        raise ConfigError(f"{key}: '{name_or_path}' is neither a directory nor in the offline cache; --estimate needs "
                          f"its config.json (download it, or give a directory holding it)") from None


def scorer_models(config: Any) -> list[str]:
    """Model paths that an online method's reward loads beside the policy (reward models, classifiers, judges)."""
    specs = config.reward if isinstance(config.reward, list) else [config.reward] if config.reward else []
    paths = []
    for spec in specs:
        for name, _ in weighted_parts(spec, nonzero=False):
            kind, _, rest = name.partition(":")
            if kind in ("reward_model", "judge"):
                paths.append(rest)
            elif kind == "classifier":
                paths.append(rest.split(":")[0])
    return paths


def estimate_memory(method: str, config: Any, shape: ModelShape, engine: str = "none", world_size: int = 1,
                    device: str = "cpu", device_memory: int | None = None,
                    side_models: dict[str, ModelShape] | None = None) -> MemoryEstimate:
    """Bytes per device of training `shape` with `config` (a command's config: dtype, bf16/fp16, LoRA,
    batch and lengths, the method's keys) under `engine` over `world_size` processes.

    `side_models` gives the shapes of other models the config names (ref_model_name_or_path,
    value_model_name_or_path, reward model paths), read by the caller; a separate model not given is
    taken to have the policy's shape."""
    side_models = side_models or {}
    notes: list[str] = []
    dtype = config.dtype if config.dtype != "auto" else (shape.dtype or "float32")
    weight_bytes = DTYPE_BYTES.get(dtype, 4)
    mixed = config.fp16 or config.bf16 or (config.bf16 is None and device == "cuda")
    act_bytes = 2 if mixed or weight_bytes == 2 else 4
    W = world_size if engine in ("fsdp2", "deepspeed-zero3") else 1
    shard_grads = world_size if engine in ("fsdp2", "deepspeed-zero2", "deepspeed-zero3") else 1

    def model_bytes(s: ModelShape, quantised: bool = False) -> float:
        if quantised:
            return s.linear_params * NF4_BYTES + (s.params - s.linear_params) * weight_bytes
        return s.params * weight_bytes

    lora = config.use_lora
    trainable = shape.lora_params(config.lora_r, config.lora_target_modules) if lora else shape.params
    trainable_bytes = 4 if lora else weight_bytes   # PEFT keeps adapters in fp32
    if lora and not trainable:
        notes.append(f"lora_target_modules={config.lora_target_modules} names none of {', '.join(shape.linears())}: "
                     f"the adapters are not counted")
    parts = {"weights": model_bytes(shape, config.load_in_4bit) / W + (trainable * 4 / W if lora else 0)}
    if mixed and weight_bytes == 4 and not lora:
        # autocast keeps a half-precision copy of every weight that requires grad for the whole forward
        parts["autocast_copies"] = trainable * 2 / W
    parts["gradients"] = trainable * trainable_bytes / shard_grads
    parts["optimizer"] = 2 * trainable * trainable_bytes / shard_grads   # AdamW: exp_avg and exp_avg_sq
    if engine == "ddp" and world_size > 1:
        # DDP all-reduces through flat buckets of its own: a second copy of the gradients
        parts["ddp_buckets"] = trainable * trainable_bytes

    # The models beside the policy.
    def side(key: str) -> ModelShape:
        return side_models.get(key, shape)

    parts["reference"] = parts["value_model"] = parts["reward_models"] = parts["kv_cache"] = 0
    if method in ("dpo", "kto", "grpo", "rloo", "ppo"):
        beta = {"grpo": getattr(config, "beta", 0), "rloo": getattr(config, "beta", 0),
                "ppo": getattr(config, "kl_coef", 0)}.get(method, 1)
        separate = getattr(config, "ref_model_name_or_path", None)
        if beta and (separate or (not lora and not (method in ("dpo", "kto") and config.precompute_ref_log_probs))):
            # the training loop prepares only the policy: a separate reference is whole on every process
            parts["reference"] = model_bytes(side("ref_model_name_or_path"))
            if W > 1:
                notes.append("the reference model is replicated on every process, not sharded")
        elif beta and not lora:
            notes.append("reference log-probs are precomputed: the reference is the policy before training")
        elif beta:
            notes.append("the reference is the policy with its LoRA adapters off: no copy")
    if method == "ppo" and getattr(config, "value_model_name_or_path", None):
        value = side("value_model_name_or_path")
        value_trainable = value.lora_params(config.lora_r, config.lora_target_modules) if lora else value.params
        parts["value_model"] = (model_bytes(value) / W + (value_trainable * 4 / W if lora else 0)
                                + 3 * value_trainable * trainable_bytes / shard_grads)
    if method in ("grpo", "rloo", "ppo"):
        for path in scorer_models(config):
            parts["reward_models"] += model_bytes(side(path))
        prompt = config.max_prompt_length or UNCAPPED_PROMPT
        if not config.max_prompt_length:
            notes.append(f"prompts are not cut (max_prompt_length unset): taken as {UNCAPPED_PROMPT} tokens")
        sequences = config.sampling_batch_size * config.num_generations
        parts["kv_cache"] = (sequences * (prompt + config.max_completion_length) * shape.layers * 2 * shape.kv
                             * act_bytes)
        if parts["reward_models"]:
            notes.append("reward models are replicated on every process, not sharded")

    # Activations of one micro-batch: tokens x (per-layer elements x layers, or one layer's and every
    # layer's input with gradient checkpointing), LoRA dropout's copies of the adapted inputs, and
    # the logits (fp32: logits, log-softmax and their gradient).
    tokens = config.per_device_train_batch_size * (config.max_length or 1024)
    if method in ("dpo", "orpo", "reward"):
        tokens *= 2    # a pair is [prompt | chosen | rejected], each response up to max_length with its prompt
    if method in ("grpo", "rloo", "ppo"):
        tokens = config.per_device_train_batch_size * ((config.max_prompt_length or UNCAPPED_PROMPT)
                                                       + config.max_completion_length)
    per_layer = shape.activation_elements()
    if lora and (config.lora_dropout is None or config.lora_dropout > 0):
        per_layer += sum(a for n, (a, _) in shape.linears().items()
                         if config.lora_target_modules == "all-linear" or n in config.lora_target_modules)
    if config.attn_implementation == "eager":
        # eager attention keeps each head's softmax over the whole row for the backward (fused kernels do not)
        per_layer += shape.heads * tokens // config.per_device_train_batch_size
    saved = (shape.layers * shape.hidden + per_layer) if config.gradient_checkpointing else shape.layers * per_layer
    logits = 0 if method == "reward" else 3 * shape.vocab * 4
    parts["activations"] = tokens * (saved * act_bytes + logits)
    if engine in ("fsdp2", "deepspeed-zero3") and world_size > 1:
        parts["gathered_layer"] = 2 * model_bytes(shape) / shape.layers   # one layer unsharded, the next prefetched
    if device == "cpu":
        parts["framework"] = FRAMEWORK_CPU_BYTES
    return MemoryEstimate({k: int(v) for k, v in parts.items()}, device, engine, world_size, device_memory, notes)
