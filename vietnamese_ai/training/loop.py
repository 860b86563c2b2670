"""The training loop. It knows nothing about methods: a recipe hands it examples, a `collate`
function that lays a list of examples out as a PackedBatch, and a `loss_fn` that returns the *sum*
of the per-item losses of a micro-batch plus metric sums.

Normalisation: every micro-batch's loss sum is divided by the number of items (target tokens for
SFT, pairs for DPO) in the whole optimizer step, across accumulation and data-parallel ranks. So
batch 8 x accumulation 1 and batch 1 x accumulation 8 compute the same gradient, and so do 1 and 2
processes.

Data order: a seeded permutation per epoch; the position in it is part of the checkpoint, so a
resumed run sees exactly the batches an uninterrupted run would have seen.

Stopping: a NaN/inf loss or gradient stops before the weights change; Ctrl-C or SIGTERM stops at
once, but never inside the optimizer update, and (when checkpoints are on) checkpoints the last completed
step; a full disk is one line naming the checkpoint that is still intact. What the output directory
may hold when a run starts is decided in training/rundir.py.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.errors import ConfigError, Interrupted, TrainingError
from vietnamese_ai.files import atomic_directory, atomic_file, hold_directory, storage_error
from vietnamese_ai.models.io import load_weights, save_model
from vietnamese_ai.training.checkpoint import (
    RandomState,
    TrainerState,
    check_resumable,
    checkpoint_dirs,
    prune_checkpoints,
    read_trainer_state,
    read_training_state,
    write_training_state,
)
from vietnamese_ai.models.sampling import sharded_across_processes
from vietnamese_ai.training import deepspeed, flops
from vietnamese_ai.training.config import TrainingConfig
from vietnamese_ai.training.distributed import (
    SHARDED_STATE,
    Engine,
    accelerate_without_deepspeed,
    broadcast_from_main,
    check_requested_engine,
    choose_engine,
    full_state_dict,
    gradient_sync_off,
    load_sharded_state,
    prepare_accelerate_environment,
    save_sharded_state,
    shard_fsdp2,
    write_failures,
)
from vietnamese_ai.training.metrics import MetricsLog, Window, reduce_sums
from vietnamese_ai.training.optim import build_optimizer, build_scheduler
from vietnamese_ai.training.rundir import apply_current_optimisation, compare_settings, prepare_output_dir, run_settings
from vietnamese_ai.progress import progress
from vietnamese_ai.training.runinfo import write_run_info
from vietnamese_ai.training.signals import StopSignals
from vietnamese_ai.training.sources import DatasetSource, StepSource
from vietnamese_ai.training.trackers import Trackers

log = logging.getLogger("vietnamese_ai")


Metric = torch.Tensor | tuple[torch.Tensor, torch.Tensor | float]


@dataclass
class StepOutput:
    """What a recipe's loss function returns for one micro-batch.

    `metrics` holds sums: a tensor is summed over the batch's items and logged as a mean per item; a
    (sum, count) pair is logged as sum / count, for means over a subset (KTO's desirable examples) or
    over tokens.
    """

    loss: torch.Tensor                      # scalar: sum of per-item losses over the micro-batch
    metrics: dict[str, Metric] = field(default_factory=dict)


LossFn = Callable[[Any, PackedBatch], StepOutput]
Collate = Callable[[list[Any]], PackedBatch]


@dataclass
class TrainResult:
    output_dir: str
    final_dir: str
    global_step: int
    history: list[dict[str, float]]         # every metrics.jsonl record of this run
    model: Any = None                       # the trained model, unwrapped from accelerate
    method: str = ""                        # as in run.json: "sft", "dpo", ...

    def series(self, key: str) -> list[float]:
        return [r[key] for r in self.history if key in r]

    def summary(self) -> str:
        """One short line: the last logged loss (and evaluation loss), and the method's two or three
        headline metrics (metric_names.HEADLINE_METRICS; every metric of every step is in metrics.jsonl)."""
        from vietnamese_ai.metric_names import HEADLINE_METRICS

        last = next((r for r in reversed(self.history) if "loss" in r), {})
        evaluated = next((r for r in reversed(self.history) if "eval/loss" in r), {})
        chosen = HEADLINE_METRICS.get(self.method, ())
        if not any(k in last for k in chosen):   # a method without a list: its own first few
            chosen = tuple(k for k in last if k != "loss" and headline(k))[:SUMMARY_METRICS]
        shown = {"loss": last.get("loss"), **{k: last.get(k) for k in chosen}, "eval/loss": evaluated.get("eval/loss")}
        values = ", ".join(f"{k}={v:.4g}" for k, v in shown.items() if isinstance(v, (int, float)))
        return f"done: {self.global_step} steps; {values}; model saved to {self.final_dir}; every metric in metrics.jsonl"


SUMMARY_METRICS = 3
# Bookkeeping a user reads in metrics.jsonl or the report, not in the one line a run ends with.
NOT_HEADLINES = ("time/", "completions/", "clip_ratio/", "sampling/", "active_sampling/")
NOT_HEADLINE_KEYS = {"epoch", "learning_rate", "grad_norm", "tokens_per_second", "mfu", "reward_std",
                     "frac_reward_zero_std", "step"}


def headline(key: str) -> bool:
    """Whether the done line shows `key` (for a method without a list of headlines): not bookkeeping."""
    return key not in NOT_HEADLINE_KEYS and not key.startswith(NOT_HEADLINES) and not key.endswith("/std")


def mixed_precision(config: TrainingConfig) -> str:
    """'fp16', 'bf16' or 'no': bf16 by default on a GPU that supports it."""
    cuda = torch.cuda.is_available()
    if config.fp16 and not cuda:
        raise ConfigError("fp16: float16 mixed precision needs a GPU; use bf16=true on CPU")
    bf16 = config.bf16 if config.bf16 is not None else (cuda and torch.cuda.is_bf16_supported())
    return "fp16" if config.fp16 else "bf16" if bf16 else "no"


def autocast_dtype(config: TrainingConfig) -> torch.dtype | None:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision(config))


def process_state() -> Any:
    """accelerate's view of this process (rank, number of processes, device). Created the way
    `make_accelerator` creates it: accelerate keeps the first one, and without cpu=True on a machine
    without CUDA it would not see the other processes of a multi-process CPU run."""
    from accelerate import PartialState

    with accelerate_without_deepspeed():
        return PartialState(cpu=not torch.cuda.is_available())


def make_accelerator(config: TrainingConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cuda = torch.cuda.is_available()
    precision = mixed_precision(config)
    check_requested_engine()
    prepare_accelerate_environment()
    with accelerate_without_deepspeed():
        try:
            return Accelerator(mixed_precision=precision, cpu=not cuda)
        except ValueError:
            # Several runs in one process (the Vietnamese-named API's pipeline) may ask for different precisions.
            AcceleratorState._reset_state(reset_partial_state=False)
            return Accelerator(mixed_precision=precision, cpu=not cuda)


@torch.no_grad()
def evaluate(model: Any, accelerator: Any, data: Sequence[Any], collate: Collate, loss_fn: LossFn,
             batch_size: int) -> dict[str, float]:
    """Item-weighted mean loss and metrics over `data`, prefixed `eval/`. Each process takes every
    world-th batch; with sharded parameters every forward gathers them from all processes, so a process
    whose share ran out runs its first batch again, uncounted, until the others are done."""
    was_training = model.training
    model.eval()
    window = Window()
    rank, world = accelerator.process_index, accelerator.num_processes
    starts = range(rank * batch_size, len(data), batch_size * world)
    rounds = math.ceil(len(data) / (batch_size * world)) if sharded_across_processes(model) else len(starts)
    for k in range(rounds):
        start = starts[k] if k < len(starts) else 0
        batch = collate(list(data[start:start + batch_size])).to(accelerator.device)
        with accelerator.autocast():
            output = loss_fn(model, batch)
        if k < len(starts):
            window.add(output, batch)
    model.train(was_training)
    loss, items, _, means = window.reduced(accelerator)
    return {"eval/loss": loss / max(items, 1), **{f"eval/{k}": v for k, v in means.items()}}


def _accumulate(model: Any, accelerator: Any, batches: list[PackedBatch], loss_fn: LossFn, window: Window) -> float:
    """Forward and backward over one step's micro-batches; each loss sum is divided by the item count
    of the whole step on all ranks (times the world size, which DDP's gradient averaging divides out).
    Returns the step's loss sum over all ranks."""
    world = accelerator.num_processes
    step_items = reduce_sums(accelerator, [float(sum(b.num_items for b in batches))])[0]
    step_loss = 0.0
    ds = deepspeed.is_engine(model)   # DeepSpeed's backward is told where the step's accumulation ends
    for k, batch in enumerate(batches):
        batch = batch.to(accelerator.device)
        last = k == len(batches) - 1  # gradients are all-reduced once, after the last micro-batch
        with (contextlib.nullcontext() if last or ds else gradient_sync_off(model, accelerator)):
            with accelerator.autocast():
                output = loss_fn(model, batch)
            loss = output.loss * world / max(step_items, 1.0)
            if ds:
                deepspeed.backward(model, loss, last)
            else:
                accelerator.backward(loss)
        window.add(output, batch)
        step_loss += float(output.loss.detach())
    return reduce_sums(accelerator, [step_loss])[0]


def _check_finite(loss: float, grad_norm: float | None, step: int, output_dir: str, applied: bool = False) -> None:
    """Stop before a non-finite loss or gradient reaches the weights, naming what can be resumed.
    (`applied`: DeepSpeed computes the norm inside its update, so a non-finite one is known only after.)"""
    if math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm)):
        return
    kept = checkpoint_dirs(output_dir)
    what = f"the last good checkpoint is {kept[-1]} (resume_from_checkpoint=latest)" if kept else "no checkpoint had been saved"
    bad, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", grad_norm)
    done = ("stopped without saving the updated weights (DeepSpeed applies the update as it computes the norm)"
            if applied else "stopped without updating the weights")
    raise TrainingError(f"the {bad} became {value} at step {step}; {done}; {what}; try a lower learning_rate")


def _log_record(window: Window, accelerator: Any, step: int, epoch: float, learning_rate: float,
                grad_norm: float | None, peak: flops.Peak | None) -> tuple[dict[str, Any], int]:
    """One metrics.jsonl line (item-weighted means since the last line, over all ranks), and the
    number of tokens it covers."""
    loss_sum, items, tokens, means = window.reduced(accelerator)
    seconds = max(time.perf_counter() - window.start, 1e-9)
    record: dict[str, Any] = {"step": step, "epoch": round(epoch, 4), "loss": loss_sum / max(items, 1.0),
                              "learning_rate": learning_rate, "tokens_per_second": tokens / seconds}
    flops_per_token = means.pop(flops.WINDOW_FLOPS, None)
    if flops_per_token is not None and peak is not None:
        record["mfu"] = flops.utilisation(flops_per_token * tokens, seconds, peak.flops, accelerator.num_processes)
    if grad_norm is not None:
        record["grad_norm"] = grad_norm
    record.update(means)
    return record, int(tokens)


def _save_model_dir(accelerator: Any, model: Any, tokenizer: Any, path: str, sharded: bool, output_dir: str,
                    merge_lora: bool = False, extra: Callable[[str], None] | None = None) -> None:
    """Write `path` as a Hugging Face model from the main process (sharded weights are gathered from
    every rank first)."""
    state_dict = _gathered_state_dict(model) if sharded else None

    def write(tmp: str) -> None:
        save_model(accelerator.unwrap_model(model), tokenizer, tmp, state_dict=state_dict, merge_lora=merge_lora)
        if extra:
            extra(tmp)

    _write_directory(accelerator, path, output_dir, write)


def _gathered_state_dict(model: Any) -> dict[str, torch.Tensor] | None:
    """The whole model's tensors on the main process where the parameters are sharded (None where each
    rank holds them whole: ZeRO-2)."""
    if deepspeed.is_engine(model):
        return deepspeed.gathered_state_dict(model) if deepspeed.parameters_partitioned(model) else None
    return full_state_dict(model)


def _write_directory(accelerator: Any, path: str, output_dir: str, write: Callable[[str], None],
                     write_on_every_rank: Callable[[str], None] | None = None) -> None:
    """Write `path` atomically: the main process makes the temporary directory, every rank writes its
    part into it (`write_on_every_rank`, a collective), then the main process writes the rest (`write`,
    the manifest last) and renames it into place. A full disk or a permission problem is one line that
    says which checkpoint is still intact, on every rank: a sharded write's failure on any rank reaches
    every rank (torch.distributed.checkpoint's CheckpointException), and the main process's own outcome
    is sent to the others, so that no rank waits for one that stopped."""
    main = accelerator.is_main_process
    problem = None
    try:
        with atomic_directory(path) if main else contextlib.nullcontext("") as tmp:
            if write_on_every_rank is not None:
                write_on_every_rank(broadcast_from_main(tmp))
            if main:
                write(tmp)
    except BaseException as e:   # (CheckpointException derives from BaseException)
        errors = [storage_error("model directory", path, f) if isinstance(f, OSError) else None
                  for f in write_failures(e)]
        if None in errors:
            raise
        kept = [p for p in checkpoint_dirs(output_dir) if p != path]
        intact = f"the checkpoint {kept[-1]} is intact" if kept else "no earlier checkpoint exists"
        problem = f"{errors[0]}; {intact}"
    if accelerator.num_processes > 1:   # (in place of a barrier: the others wait for the main process here)
        problem = broadcast_from_main(problem)
    if problem:
        raise TrainingError(problem) from None


@dataclass
class _StepStart:
    """What an interrupted step must be rolled back to before it can be checkpointed."""

    state: TrainerState
    window: Window
    randomness: RandomState
    source: dict[str, Any]


SOURCE_STATE = "source_state.json"  # one entry per process: what the step source keeps (a rollout buffer)


def _gather_source_states(accelerator: Any, source: StepSource, own: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    own = source.state_dict() if own is None else own
    if accelerator.num_processes == 1:
        return [own]
    from accelerate.utils import gather_object

    return gather_object([own])


def _gather_random_states(accelerator: Any, own: RandomState | None = None) -> list[RandomState]:
    """Every process's random generators, by rank: each draws its own dropout masks."""
    own = own or RandomState.capture()
    if accelerator.num_processes == 1:
        return [own]
    from accelerate.utils import gather_object

    return gather_object([own])


def _read_source_state(path: str, rank: int) -> dict[str, Any]:
    file = os.path.join(path, SOURCE_STATE)
    if not os.path.isfile(file):
        return {}
    with open(file, encoding="utf-8") as f:
        return json.load(f)[rank]


def _save_checkpoint(accelerator: Any, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any, out: str,
                     state: TrainerState, window: Window, source: StepSource, sharded: bool,
                     save_total_limit: int | None, randomness: RandomState | None = None,
                     source_state: dict[str, Any] | None = None) -> str:
    path = os.path.join(out, "checkpoints", f"step-{state.global_step:06d}")
    state.log_window = window.state(accelerator)
    sources = _gather_source_states(accelerator, source, source_state)
    generators = _gather_random_states(accelerator, randomness)

    def extra(tmp: str) -> None:
        if any(sources):
            with open(os.path.join(tmp, SOURCE_STATE), "w", encoding="utf-8") as f:
                json.dump(sources, f)
        # A sharded optimizer's state is in distributed/, written by every rank.
        write_training_state(tmp, None if sharded else optimizer, scheduler, state, generators)

    if sharded:   # no rank gathers the whole model: each writes its shards (DeepSpeed's own files, or DCP)
        write_shards = ((lambda tmp: deepspeed.save_state(os.path.join(tmp, SHARDED_STATE), model))
                        if deepspeed.is_engine(model) else
                        (lambda tmp: save_sharded_state(os.path.join(tmp, SHARDED_STATE), model, optimizer)))
        _write_directory(accelerator, path, out, extra, write_shards)
    else:
        _save_model_dir(accelerator, model, tokenizer, path, sharded, out, extra=extra)
    if accelerator.is_main_process:
        prune_checkpoints(out, save_total_limit)
    return path


def _resume(config: TrainingConfig, path: str, model: Any, optimizer: Any, scheduler: Any,
            settings: dict[str, Any], engine: Engine, rank: int = 0) -> TrainerState:
    fresh_groups = [dict(group) for group in optimizer.param_groups]
    # Before touching anything: a checkpoint this engine cannot read, a changed data order.
    check_resumable(path, engine.name, engine.world_size)
    changed = compare_settings(read_trainer_state(path).settings, settings, path)
    if engine.sharded:   # weights and optimizer state from each rank's shards
        if engine.deepspeed:
            deepspeed.load_state(os.path.join(path, SHARDED_STATE), model)
        else:
            load_sharded_state(os.path.join(path, SHARDED_STATE), model, optimizer)
        state = read_training_state(path, None, scheduler, rank)
    else:
        load_weights(model, path)
        state = read_training_state(path, optimizer, scheduler, rank)
    apply_current_optimisation(optimizer, scheduler, fresh_groups, config.learning_rate)
    if changed:
        log.warning("resuming from %s with changed settings, applied from step %d on: %s", path, state.global_step + 1,
                    "; ".join(changed))
    log.info("resumed from %s at step %d", path, state.global_step)
    return state


def total_optimizer_steps(config: TrainingConfig, steps_per_epoch: int) -> int:
    """The optimizer steps a run takes: max_steps, else num_train_epochs of `steps_per_epoch`."""
    return config.max_steps if config.max_steps > 0 else math.ceil(config.num_train_epochs * steps_per_epoch)


def due(strategy: str, every: int | None, step: int, steps_per_epoch: int, total_steps: int, at_end: bool) -> bool:
    """Whether an evaluation or a checkpoint falls on `step` under eval_strategy / save_strategy.
    The last step is evaluated (`at_end`), and never checkpointed: final/ holds it.

    >>> [s for s in range(1, 8) if due("epoch", None, s, 3, 7, at_end=False)]
    [3, 6]
    >>> [s for s in range(1, 8) if due("steps", 2, s, 3, 7, at_end=True)]
    [2, 4, 6, 7]
    """
    if strategy == "no":
        return False
    if step == total_steps:
        return at_end
    if strategy == "epoch":
        return step % steps_per_epoch == 0
    return bool(every) and step % every == 0


def train(model: Any, tokenizer: Any, config: TrainingConfig, train_data: Sequence[Any] | None, collate: Collate | None,
          loss_fn: LossFn, eval_data: Sequence[Any] | None = None, eval_loss_fn: LossFn | None = None,
          source: StepSource | None = None) -> TrainResult:
    """Train `model` with `loss_fn` on `train_data` laid out by `collate`, or on the micro-batches a
    `source` produces (online methods); writes the run files into config.output_dir, which it holds
    (files.hold_directory: the main process, from before the start-up sweep to the end, however the
    run ends) so that a second run cannot sweep or overwrite this one's files."""
    with hold_directory(config.output_dir, "output_dir", active=process_state().is_main_process), Trackers() as trackers:
        return _train(model, tokenizer, config, train_data, collate, loss_fn, eval_data, eval_loss_fn, source, trackers)


def _train(model: Any, tokenizer: Any, config: TrainingConfig, train_data: Sequence[Any] | None, collate: Collate | None,
           loss_fn: LossFn, eval_data: Sequence[Any] | None, eval_loss_fn: LossFn | None,
           source: StepSource | None, trackers: Trackers) -> TrainResult:
    source = source or DatasetSource(train_data, collate, config.per_device_train_batch_size,
                                     config.gradient_accumulation_steps, config.seed)
    accelerator = make_accelerator(config)
    engine = choose_engine(accelerator)
    out = config.output_dir
    resume_from = prepare_output_dir(config, accelerator.is_main_process)
    if accelerator.is_main_process:
        os.makedirs(out, exist_ok=True)
        with atomic_file(os.path.join(out, "config.yaml")) as f:
            f.write(config.to_yaml())
    steps_per_epoch = source.setup(accelerator)
    total_steps = total_optimizer_steps(config, steps_per_epoch)
    settings = {**run_settings(config, source.examples, accelerator.num_processes, total_steps), "engine": engine.name}

    torch.manual_seed(config.seed)
    shape = flops.model_shape(model)   # before any wrapper or sharding hides the weights' shapes
    if engine.shard_by_hand:   # before the optimizer, which must hold the sharded parameters
        model = shard_fsdp2(model, engine.world_size)
    optimizer = build_optimizer(model, config.learning_rate, config.weight_decay,
                                (config.adam_beta1, config.adam_beta2), config.adam_epsilon)
    scheduler = build_scheduler(optimizer, config.lr_scheduler_type, total_steps, config.warmup_ratio)
    if engine.deepspeed:   # the engine steps `optimizer`; the schedule stays on its parameter groups
        model = deepspeed.initialize(model, optimizer, config, engine.world_size, mixed_precision(config))
    elif engine.shard_by_hand:   # accelerate would wrap the sharded model in DDP on top
        optimizer = accelerator.prepare(optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    sharded = engine.sharded
    state = TrainerState(settings=settings)
    if resume_from:
        state = _resume(config, resume_from, model if engine.deepspeed else accelerator.unwrap_model(model),
                        optimizer, scheduler, settings, engine, accelerator.process_index)
        state.settings = settings
        source.load_state_dict(_read_source_state(resume_from, accelerator.process_index))
    source.attach(model, out, state.global_step if resume_from else None)
    # Measured (once per machine setting) by the main process alone, which writes the lines: several
    # processes measuring at once would share the cores. Before the window's clock starts.
    peak = flops.peak_flops(accelerator.device, config.peak_flops) if accelerator.is_main_process else None
    metrics = MetricsLog(os.path.join(out, "metrics.jsonl"), state.global_step if resume_from else None,
                         accelerator.is_main_process)
    trackers.start(config, accelerator.is_main_process, state.global_step if resume_from else None)
    window = Window(state.log_window if accelerator.is_main_process else None)
    last_saved = state.global_step if resume_from else None

    bar = progress(total_steps, state.global_step, os.path.basename(os.path.normpath(out)) or "train",
                   disable=config.disable_tqdm or not accelerator.is_main_process)
    start: _StepStart | None = None
    with StopSignals() as signals:
        try:
            while state.global_step < total_steps:
                step_clock = time.perf_counter()
                start = _StepStart(copy.deepcopy(state), window.copy(), RandomState.capture(), source.state_dict())
                step_batches = source.next_step(state)
                window.add_sums(step_batches.sums, step_batches.extremes)
                window.add_sums(flops.window_sums(shape, step_batches.batches))
                step_started = time.perf_counter()
                step_loss = _accumulate(model, accelerator, step_batches.batches, loss_fn, window)
                grad_norm = (float(accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm))
                             if config.max_grad_norm and not engine.deepspeed else None)
                _check_finite(step_loss, grad_norm, state.global_step + 1, out)
                learning_rate = scheduler.get_last_lr()[0]
                with signals.critical():  # weights, optimizer, schedule and step counter move together
                    if engine.deepspeed:   # clips (and measures the norm) inside its step
                        measured = deepspeed.step(model)
                        grad_norm = measured if config.max_grad_norm else None
                    else:
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    state.global_step += 1
                    state.seconds += time.perf_counter() - step_clock
                    start = None
                if engine.deepspeed:
                    _check_finite(step_loss, measured, state.global_step, out, applied=True)
                window.add_sums({"time/training": (time.perf_counter() - step_started, 1.0)})
                step = state.global_step
                bar.update(1)

                do_eval = bool(eval_data) and due(config.eval_strategy, config.eval_steps, step, steps_per_epoch,
                                                  total_steps, at_end=True)
                if step % config.logging_steps == 0 or step == total_steps or do_eval:
                    with signals.critical(hard=False):  # the step's line is written before a checkpoint can be
                        record, tokens = _log_record(window, accelerator, step, step / steps_per_epoch,
                                                     learning_rate, grad_norm, peak)
                        if do_eval:
                            record.update(evaluate(model, accelerator, eval_data, collate, eval_loss_fn or loss_fn,
                                                   config.per_device_eval_batch_size))
                        with signals.critical():  # a logged window is never also saved as pending
                            _write_metrics(metrics, record)
                            state.tokens_seen += tokens
                            window = Window()
                        trackers.log(record)   # the same line, to report_to's trackers (none by default)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{learning_rate:.2e}",
                                    tok_s=f"{record['tokens_per_second']:.0f}")
                if due(config.save_strategy, config.save_steps, step, steps_per_epoch, total_steps, at_end=False):
                    # A signal during the save waits for it: the run then stops on a whole checkpoint,
                    # rather than on a half-written one and a second save.
                    with signals.critical():
                        _save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, out, state, window,
                                         source, sharded, config.save_total_limit)
                        last_saved = step
        except Interrupted as stop:
            bar.close()
            raise _interrupted(stop, accelerator, config, start, state, window, last_saved,
                               lambda s, w, r, src: _save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler,
                                                                     out, s, w, source, sharded, config.save_total_limit,
                                                                     r, src)) from None
    bar.close()

    final_dir = os.path.join(out, "final")
    method = type(config).__name__.removesuffix("Config").lower()
    _save_model_dir(accelerator, model, tokenizer, final_dir, sharded, out, merge_lora=config.merge_lora)
    if accelerator.is_main_process:
        write_run_info(out, method, steps=state.global_step,
                       seconds=round(state.seconds, 3), resumed_from=resume_from, processes=accelerator.num_processes,
                       distributed=engine.record(), **flops.run_summary(metrics.history, peak))
    return TrainResult(out, final_dir, state.global_step, metrics.history, accelerator.unwrap_model(model), method)


def _write_metrics(metrics: MetricsLog, record: dict[str, Any]) -> None:
    try:
        metrics.write(record)
    except OSError as e:
        error = storage_error("metrics file", metrics.path, e)
        if error is None:
            raise
        raise TrainingError(str(error)) from None


def _interrupted(stop: Interrupted, accelerator: Any, config: TrainingConfig, start: _StepStart | None,
                 state: TrainerState, window: Window, last_saved: int | None,
                 save: Callable[[TrainerState, Window, RandomState | None, dict[str, Any] | None], str]) -> Interrupted:
    """Checkpoint the last completed step (when checkpoints are on), and say what was kept."""
    name = signal.Signals(stop.signum).name
    if start is not None:  # stopped inside a step: the weights are still those of the step before
        state, window, randomness, source_state = start.state, start.window, start.randomness, start.source
    else:
        randomness, source_state = None, None
    step = state.global_step
    if not config.checkpoints_on():
        kept = "checkpoints are off (save_strategy=no or save_steps=0), nothing was saved"
    elif accelerator.num_processes > 1:
        # Saving needs every process, and some may already be gone: keep the periodic checkpoints.
        newest = checkpoint_dirs(config.output_dir)
        kept = f"the last checkpoint is {newest[-1]}" if newest else "no checkpoint had been saved"
    elif step == 0:
        kept = "no step had completed, nothing was saved"
    elif last_saved == step:
        kept = f"step {step} is checkpointed in {checkpoint_dirs(config.output_dir)[-1]}"
    else:
        kept = f"step {step} was checkpointed in {save(state, window, randomness, source_state)}"
    resume = "; resume with resume_from_checkpoint=latest" if config.checkpoints_on() and step else ""
    return Interrupted(stop.signum, f"{name} at step {step}; {kept}{resume}")
