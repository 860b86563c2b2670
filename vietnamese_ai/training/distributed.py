"""Which data-parallel engine a run uses, decided the accelerate way, and FSDP2 where accelerate cannot apply it.

`accelerate launch` says what it was asked for in the environment of every process it starts:
ACCELERATE_USE_FSDP=true with FSDP_VERSION (1 unless --fsdp_version 2 is given) and the FSDP_* plugin
settings, or ACCELERATE_USE_DEEPSPEED=true with ACCELERATE_DEEPSPEED_ZERO_STAGE. accelerate acts on
them only on accelerators: on CPU it ignores both and runs DDP. Here:

- FSDP on a GPU: accelerate applies FSDP2 itself in `prepare` (version 1 asked is run as version 2,
  with a warning; a layer-by-layer wrap policy is the default when none is given).
- FSDP on CPU: `shard_fsdp2` applies the same FSDP2 (`fully_shard` on each decoder layer, then on the
  root) over the gloo process group accelerate set up, so CPU machines and the tests run the sharded code.
- DeepSpeed ZeRO-2/3 (GPU or CPU): the loop drives a DeepSpeed engine itself (training/deepspeed.py), with
  the stage, offloading and config file accelerate read from the launch.
- FSDP with one process: nothing to shard; a warning says the run is a single process.

Whatever the engine, run.json records it (`Engine.record`); a run never falls back to DDP silently.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from vietnamese_ai.errors import ConfigError

log = logging.getLogger("vietnamese_ai")

ENGINES = ("none", "ddp", "fsdp2", "deepspeed-zero2", "deepspeed-zero3")


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("true", "1", "yes")


def requested_engine() -> str | None:
    """'fsdp' or 'deepspeed' when accelerate launch asked for one (its environment), else None."""
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    if _flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    return None


def check_requested_engine() -> None:
    """Refuse, before any model loads, an engine asked for that cannot run here (a ZeRO stage other than
    2 or 3, DeepSpeed not installed)."""
    if requested_engine() == "deepspeed":
        from vietnamese_ai.training.deepspeed import check_deepspeed

        check_deepspeed()


@contextlib.contextmanager
def accelerate_without_deepspeed() -> Iterator[None]:
    """While accelerate sets up its state: with DeepSpeed asked for, accelerate would (on a GPU) hand
    the model to DeepSpeed in `prepare` and step it inside `backward`; the loop drives the engine
    itself instead (training/deepspeed.py), so accelerate sets up plain data-parallel processes."""
    saved = os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = saved


def quiet_deepspeed() -> None:
    """accelerate and transformers' save_pretrained import deepspeed wherever it is installed (to
    recognise its engine), and deepspeed, told nothing, warns on import that it fell back to the CPU:
    where there is no GPU, it is told."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def prepare_accelerate_environment() -> None:
    """Before the Accelerator is created: FSDP is run as FSDP2, layer by layer unless told otherwise;
    DeepSpeed gets its CPU accelerator where there is no GPU."""
    quiet_deepspeed()
    if requested_engine() == "deepspeed":
        from vietnamese_ai.training.deepspeed import prepare_environment

        prepare_environment()
    if requested_engine() != "fsdp":
        return
    if os.environ.get("FSDP_VERSION", "1").strip() != "2":
        if os.environ.get("RANK", "0") == "0":
            log.warning("accelerate launch asked for FSDP version %s (accelerate's default); this toolkit shards with "
                        "FSDP2, which is what runs (pass --fsdp_version 2 to say so)", os.environ.get("FSDP_VERSION", "1"))
        os.environ["FSDP_VERSION"] = "2"
    # Without a policy accelerate would shard the whole model as one unit (all gathered at once).
    os.environ.setdefault("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")


def asked_engine(world_size: int) -> str:
    """The engine (one of ENGINES) that the launch environment asks for at `world_size` processes; FSDP
    with one process has nothing to shard. The memory estimate plans with it (DeepSpeed included), and
    `launched_engine` runs with it."""
    asked = requested_engine()
    if asked == "deepspeed":
        from vietnamese_ai.training.deepspeed import asked_stage

        return f"deepspeed-zero{asked_stage()}"
    if asked == "fsdp" and world_size > 1:
        return "fsdp2"
    return "ddp" if world_size > 1 else "none"


def launched_engine() -> tuple[str, int]:
    """The engine and world size this process was launched for, read before anything is set up (the
    environment of accelerate launch or torchrun); `choose_engine` decides the same from accelerate."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return asked_engine(world), world


@dataclass(frozen=True)
class Engine:
    name: str              # one of ENGINES
    world_size: int
    shard_by_hand: bool    # FSDP2 applied by `shard_fsdp2` (CPU), not by accelerate's prepare

    @property
    def sharded(self) -> bool:
        """Each rank holds only a shard of the optimizer state (and, but for ZeRO-2, of the parameters)."""
        return self.name != "none" and self.name != "ddp"

    @property
    def deepspeed(self) -> bool:
        return self.name.startswith("deepspeed")

    def record(self) -> dict[str, Any]:
        return {"engine": self.name, "world_size": self.world_size}


def choose_engine(accelerator: Any) -> Engine:
    """The engine this run uses, from what was asked and what accelerate set up."""
    world = accelerator.num_processes
    asked = requested_engine()
    kind = accelerator.distributed_type.value
    if asked == "deepspeed" or kind == "DEEPSPEED":
        check_requested_engine()
        return Engine(asked_engine(world), world, False)
    if asked == "fsdp" and world == 1:
        log.warning("accelerate launch asked for FSDP with one process: there is nothing to shard, the run is a "
                    "single process")
        return Engine("none", 1, False)
    if asked == "fsdp" or kind == "FSDP":
        if kind == "FSDP" and not accelerator.is_fsdp2:
            raise ConfigError("FSDP version 1 was set up by accelerate; this toolkit shards with FSDP2 (fsdp_version: 2)")
        return Engine("fsdp2", world, shard_by_hand=kind != "FSDP")
    return Engine("ddp" if world > 1 else "none", world, False)


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The repeated blocks of a transformers model (its `_no_split_modules` classes), under PEFT too."""
    from vietnamese_ai.models.forward import base_model

    names = set(getattr(base_model(model), "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def shard_fsdp2(model: torch.nn.Module, world_size: int) -> torch.nn.Module:
    """FSDP2 by hand: each decoder layer is one unit (gathered for its forward and backward, then freed),
    the root holds the rest (embeddings, final norm, head, auxiliary heads). Parameters become DTensors
    sharded along their first dimension; build the optimizer after this."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world_size,))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_fsdp2(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gradient_sync_off(model: Any, accelerator: Any) -> Iterator[None]:
    """Accumulate gradients locally until the step's last micro-batch (DDP's no_sync; FSDP2 keeps the
    unsharded gradients and reduce-scatters once, as accelerate's FSDP2 does)."""
    if is_fsdp2(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with accelerator.no_sync(model):
            yield


def full_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The whole model's tensors gathered from the shards onto the main process's CPU (empty on the
    others). Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # A parameter shared under two names (an lm_head tied to the embeddings) comes back as two copies;
    # one tensor under both names lets save_pretrained recognise the tie and write it once, as unsharded.
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    for aliases in names.values():
        for alias in aliases[1:]:
            if aliases[0] in state and alias in state:
                state[alias] = state[aliases[0]]
    return state


# torch.distributed.checkpoint (DCP) layout inside a checkpoint: one file per rank plus .metadata.
SHARDED_STATE = "distributed"


def _inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)   # under accelerate's AcceleratedOptimizer


def save_sharded_state(path: str, model: Any, optimizer: Any) -> None:
    """Every rank writes its own shard of the weights and of the optimizer state to `path` (DCP); no
    rank ever holds the whole. Every rank must call it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, moments = get_state_dict(model, _inner_optimizer(optimizer))
    dcp.save({"model": weights, "optimizer": moments}, checkpoint_id=path)


def write_failures(error: BaseException) -> list[BaseException]:
    """What failed in a write: the error itself, or, for torch.distributed.checkpoint's CheckpointException
    (which gathers every rank's failure and is raised on every rank alike), each rank's error."""
    from torch.distributed.checkpoint.api import CheckpointException

    if isinstance(error, CheckpointException):
        return [failure for failure, _ in error.failures.values()]
    return [error]


def load_sharded_state(path: str, model: Any, optimizer: Any) -> None:
    """Read back what `save_sharded_state` wrote, each rank its own shard, into `model` and `optimizer`
    (bit for bit). Every rank must call it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    # The optimizer's state is created here (a step with learning rate 0, which leaves the weights
    # as they are), so that there is a tensor of the right shard shape for each saved one to land in.
    weights, moments = get_state_dict(model, _inner_optimizer(optimizer))
    state = {"model": weights, "optimizer": moments}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, _inner_optimizer(optimizer), model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])


def broadcast_from_main(value: Any) -> Any:
    """The main process's `value` on every rank."""
    if not torch.distributed.is_initialized():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
