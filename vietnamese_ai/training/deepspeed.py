"""DeepSpeed ZeRO-2 and ZeRO-3, driven by the training loop itself.

`accelerate launch --use_deepspeed --zero_stage N` (or `--deepspeed_config_file F`) asks for it; accelerate
reads the request into a DeepSpeedPlugin, whose config is completed here from the training config and
handed, with the model and the loop's own optimizer, to `deepspeed.initialize`. Not through
`accelerator.prepare` and `accelerator.backward`, for two reasons: accelerate steps the optimizer inside
the backward of the last micro-batch, before the loop has checked the step's loss and outside the section
that a Ctrl-C waits for; and on a machine without a GPU accelerate does not set DeepSpeed up at all (it
runs plain DDP), where this runs the same ZeRO code (`DS_ACCELERATOR=cpu`, gloo) as on GPUs.

- Accumulation: each micro-batch's backward tells the engine whether it ends the optimizer step
  (`set_gradient_accumulation_boundary`); the loss is normalised by the loop as for every engine, so the
  engine must not divide it again (`scale_wrt_gas=False`); `engine.step()` runs once per optimizer step.
- Clipping: inside `engine.step()` (`gradient_clipping` = max_grad_norm); the norm it computed is logged.
- The learning-rate schedule is the loop's, on the optimizer the engine wraps (whose parameter groups
  it keeps), so it is the same schedule as under every other engine.
- Checkpoints: `engine.save_checkpoint`, every rank writing its partition of the optimizer state (and, for
  ZeRO-3, of the weights); read back with `torch.load(weights_only=True)`.
- `final/`: ZeRO-2 holds whole parameters on every rank; ZeRO-3's are gathered one at a time onto the
  main process.
- Models are loaded whole and partitioned by `initialize` (zero.Init is switched off), so that a
  reference or reward model loaded beside the policy stays an ordinary, whole model.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch

from vietnamese_ai.errors import ConfigError

log = logging.getLogger("vietnamese_ai")

CHECKPOINT_TAG = "zero"   # the one sub-directory engine.save_checkpoint writes inside a checkpoint


def asked_stage() -> int:
    """The ZeRO stage accelerate launch asked for: the config file's zero_optimization.stage, else the
    --zero_stage flag (ACCELERATE_DEEPSPEED_ZERO_STAGE), else 2 (accelerate's default)."""
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "").strip()
    if path and path.lower() != "none":
        try:
            with open(path, encoding="utf-8") as f:
                stage = json.load(f).get("zero_optimization", {}).get("stage", 0)
        except (OSError, ValueError, AttributeError) as e:
            raise ConfigError(f"the DeepSpeed config file {path} (--deepspeed_config_file) cannot be read: "
                              f"{type(e).__name__}: {e}") from None
    else:
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2").strip()
    if str(stage).strip() not in ("2", "3"):
        raise ConfigError(f"accelerate launch asked for DeepSpeed ZeRO stage {stage}; this toolkit runs ZeRO-2 and "
                          f"ZeRO-3 (--zero_stage 2 or 3)")
    return int(stage)


def check_deepspeed() -> None:
    """Refuse, before any model loads, a DeepSpeed run that cannot start: a stage other than 2 or 3, or
    no deepspeed package."""
    stage = asked_stage()
    prepare_environment()
    try:
        import deepspeed  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"accelerate launch asked for DeepSpeed ZeRO-{stage}, but deepspeed cannot be imported "
                          f"({e}); install it with pip install 'vietnamese-ai[deepspeed]'") from None


def prepare_environment() -> None:
    """Before deepspeed is imported: its CPU accelerator where there is no GPU, and no zero.Init."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["ACCELERATE_DEEPSPEED_ZERO3_INIT"] = "false"


# Keys the loop decides; a config file may leave them out or say "auto".
def _loop_settings(config: Any, world_size: int, precision: str) -> dict[str, Any]:
    batch, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    return {"train_micro_batch_size_per_gpu": batch, "gradient_accumulation_steps": accumulation,
            "train_batch_size": batch * accumulation * world_size,
            "gradient_clipping": float(config.max_grad_norm or 0.0),
            "bf16": {"enabled": precision == "bf16"}, "fp16": {"enabled": precision == "fp16"}}


def engine_config(config: Any, world_size: int, precision: str) -> dict[str, Any]:
    """The DeepSpeed config of this run: what accelerate read from the launch (stage, offloading, a
    config file's other settings) with the loop's batch, accumulation, clipping and precision."""
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin()
    settings = json.loads(json.dumps(plugin.deepspeed_config, default=str))   # a copy the engine may keep
    for section in ("optimizer", "scheduler"):
        if section in settings:
            raise ConfigError(f"the DeepSpeed config has an '{section}' section; the optimizer and its schedule are "
                              f"this toolkit's (learning_rate, lr_scheduler_type, warmup_ratio, ...): remove the "
                              f"section")
    ours = _loop_settings(config, world_size, precision)
    # accelerate's flags leave these keys "auto" (but --gradient_clipping); a config file may set them.
    differs = [key for key, value in ours.items()
               if not isinstance(value, dict) and settings.get(key, "auto") not in ("auto", value)]
    if differs and os.environ.get("RANK", "0") == "0":
        log.warning("the DeepSpeed config sets %s; the training config's values are used (%s)", ", ".join(differs),
                    ", ".join(f"{k}={ours[k]}" for k in differs))
    settings.update(ours)
    settings["zero_allow_untested_optimizer"] = True   # the loop's AdamW, not one of DeepSpeed's
    settings["steps_per_print"] = 2 ** 31 - 1
    return settings


def initialize(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: Any, world_size: int,
               precision: str) -> Any:
    """The DeepSpeed engine around `model`, stepping `optimizer`."""
    import warnings

    import deepspeed

    # DeepSpeed calls torch.distributed functions that this torch deprecates, warning on every call.
    warnings.filterwarnings("ignore", message=r".*is deprecated\. Please use .*_single", category=FutureWarning)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                      config=engine_config(config, world_size, precision))
    engine.checkpoint_engine = _weights_only_checkpoint_engine()
    return engine


def _weights_only_checkpoint_engine() -> Any:
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    # Besides tensors and plain values, DeepSpeed's optimizer files hold its stage (an enum), its loss
    # scaler and ZeRO-2's partition boundaries (records of numbers): these classes may be built, no other.
    allowed = [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]

    class WeightsOnly(TorchCheckpointEngine):
        """DeepSpeed's own files, read without unpickling anything but tensors, plain values and `allowed`."""

        def load(self, path: str, map_location: Any = None) -> Any:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location=map_location, weights_only=True)

    return WeightsOnly()


def is_engine(model: Any) -> bool:
    return type(model).__name__ == "DeepSpeedEngine"


def parameters_partitioned(model: Any) -> bool:
    """ZeRO-3: each rank holds a partition of every parameter, gathered by each forward (a collective)."""
    return is_engine(model) and model.zero_optimization_stage() == 3


def backward(engine: Any, loss: torch.Tensor, last: bool) -> None:
    """One micro-batch's backward; the gradients are reduced on the step's last one."""
    engine.set_gradient_accumulation_boundary(last)
    engine.backward(loss, scale_wrt_gas=False)


def step(engine: Any) -> float | None:
    """Clip, update and zero the gradients; the norm of the whole gradient before clipping."""
    engine.step()
    norm = engine.get_global_grad_norm()
    return None if norm is None else float(norm)


def save_state(path: str, engine: Any) -> None:
    """Every rank writes its partitions to `path`. Every rank must call it."""
    engine.save_checkpoint(path, tag=CHECKPOINT_TAG, client_state={}, save_latest=False)


def load_state(path: str, engine: Any) -> None:
    """Read back what `save_state` wrote, each rank its own partitions (bit for bit)."""
    loaded, _ = engine.load_checkpoint(path, tag=CHECKPOINT_TAG, load_optimizer_states=True,
                                       load_lr_scheduler_states=False)
    if loaded is None:
        raise ConfigError(f"resume_from_checkpoint: DeepSpeed could not read the checkpoint in {path}")


def gathered_state_dict(engine: Any) -> dict[str, torch.Tensor]:
    """The whole model's tensors on the main process's CPU (empty on the others), ZeRO-3's partitioned
    parameters gathered one at a time so that no rank holds more than one whole parameter at once. Every
    rank must call it."""
    import deepspeed

    module = engine.module
    main = torch.distributed.get_rank() == 0
    state: dict[str, torch.Tensor] = {}
    first_name: dict[int, str] = {}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        if id(parameter) in first_name:   # a tied parameter: one tensor under both names, written once
            if main:
                state[name] = state[first_name[id(parameter)]]
            continue
        first_name[id(parameter)] = name
        with deepspeed.zero.GatheredParameters([parameter], modifier_rank=None):
            if main:
                state[name] = parameter.detach().to("cpu", copy=True)
    if main:   # the buffers a state dict holds (not the ones computed at load, such as rotary frequencies)
        saved = module.state_dict(keep_vars=True).keys()
        state.update({name: buffer.detach().to("cpu", copy=True) for name, buffer in module.named_buffers()
                      if name in saved})
    return state
