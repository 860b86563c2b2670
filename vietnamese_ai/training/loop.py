"""The training loop. It knows nothing about methods: a recipe hands it examples, a `collate`
function that lays a list of examples out as a PackedBatch, and a `loss_fn` that returns the *sum*
of the per-item losses of a micro-batch plus metric sums.

Normalisation: every micro-batch's loss sum is divided by the number of items (target tokens for
SFT, pairs for DPO) in the whole optimizer step, across accumulation and data-parallel ranks. So
batch 8 x accumulation 1 and batch 1 x accumulation 8 compute the same gradient, and so do 1 and 2
processes.

Data order: a seeded permutation per epoch; the position in it is part of the checkpoint, so a
resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from vietnamese_ai.data.layout import PackedBatch
from vietnamese_ai.errors import ConfigError, TrainingError
from vietnamese_ai.models.io import load_weights, save_model
from vietnamese_ai.training.checkpoint import (
    TrainerState,
    atomic_directory,
    checkpoint_dirs,
    prune_checkpoints,
    read_training_state,
    write_training_state,
)
from vietnamese_ai.training.config import TrainingConfig
from vietnamese_ai.training.optim import build_optimizer, build_scheduler

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

    def series(self, key: str) -> list[float]:
        return [r[key] for r in self.history if key in r]

    def summary(self) -> str:
        last = next((r for r in reversed(self.history) if "loss" in r), {})
        values = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float))
        return f"done: {self.global_step} steps; {values}; model saved to {self.final_dir}"


def mixed_precision(config: TrainingConfig) -> str:
    """'fp16', 'bf16' or 'no': bf16 by default on a GPU that supports it."""
    cuda = torch.cuda.is_available()
    if config.fp16 and not cuda:
        raise ConfigError("fp16: float16 mixed precision needs a GPU; use bf16=true on CPU")
    bf16 = config.bf16 if config.bf16 is not None else (cuda and torch.cuda.is_bf16_supported())
    return "fp16" if config.fp16 else "bf16" if bf16 else "no"


def autocast_dtype(config: TrainingConfig) -> torch.dtype | None:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision(config))


def make_accelerator(config: TrainingConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cuda = torch.cuda.is_available()
    precision = mixed_precision(config)
    try:
        return Accelerator(mixed_precision=precision, cpu=not cuda)
    except ValueError:
        # Several runs in one process (the seed-003 pipeline) may ask for different precisions.
        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(mixed_precision=precision, cpu=not cuda)


def prepare_output_dir(config: TrainingConfig, is_main: bool) -> str | None:
    """Check what output_dir already holds; returns the checkpoint to resume from, if any."""
    out = config.output_dir
    existing = checkpoint_dirs(out)
    resume = config.resume_from_checkpoint
    if resume == "latest":
        if existing:
            return existing[-1]
        log.info("resume_from_checkpoint=latest: no checkpoint in %s, starting from scratch", out)
        resume = None
    elif resume:
        if not os.path.isfile(os.path.join(resume, "trainer_state.json")):
            raise ConfigError(f"resume_from_checkpoint: '{resume}' is not a checkpoint directory (no trainer_state.json)")
        return resume
    if existing and not config.overwrite_output_dir:
        raise ConfigError(f"output_dir: '{out}' already holds checkpoints; pass resume_from_checkpoint=latest to "
                          f"continue or overwrite_output_dir=true to start again")
    if is_main and config.overwrite_output_dir:
        shutil.rmtree(os.path.join(out, "checkpoints"), ignore_errors=True)
    return None


class MetricsLog:
    """metrics.jsonl: one JSON object per logged step, always with `step` and `loss`."""

    def __init__(self, path: str, resume_step: int | None, enabled: bool):
        self.path, self.enabled, self.history = path, enabled, []
        if not enabled:
            return
        kept = []
        if resume_step is not None and os.path.isfile(path):
            # Lines written after the checkpoint belong to the interrupted run's lost steps.
            with open(path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
        with open(path, "w") as f:
            f.writelines(kept)
        self.history = [json.loads(line) for line in kept]

    def write(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


class _Window:
    """Sums since the last log line."""

    def __init__(self) -> None:
        self.loss, self.items, self.tokens, self.start = 0.0, 0, 0, time.perf_counter()
        self.metrics: dict[str, tuple[float, float]] = {}

    def add(self, out: StepOutput, batch: PackedBatch) -> None:
        self.loss += float(out.loss.detach())
        self.items += batch.num_items
        self.tokens += batch.num_tokens
        for key, value in out.metrics.items():
            total, count = value if isinstance(value, tuple) else (value, batch.num_items)
            s, c = self.metrics.get(key, (0.0, 0.0))
            self.metrics[key] = (s + float(total), c + float(count))

    def reduced(self, accelerator: Any) -> tuple[float, float, float, dict[str, float]]:
        """(loss sum, items, tokens, metric means), summed over all processes."""
        keys = sorted(self.metrics)
        flat = [self.loss, self.items, self.tokens] + [x for k in keys for x in self.metrics[k]]
        sums = _reduce_sums(accelerator, flat)
        means = {k: sums[3 + 2 * i] / sums[4 + 2 * i] for i, k in enumerate(keys) if sums[4 + 2 * i] > 0}
        return sums[0], sums[1], sums[2], means


def _reduce_sums(accelerator: Any, values: list[float]) -> list[float]:
    if accelerator.num_processes == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(tensor, reduction="sum").tolist()


@torch.no_grad()
def evaluate(model: Any, accelerator: Any, data: Sequence[Any], collate: Collate, loss_fn: LossFn,
             batch_size: int) -> dict[str, float]:
    """Item-weighted mean loss and metrics over `data`, prefixed `eval/`."""
    was_training = model.training
    model.eval()
    window = _Window()
    rank, world = accelerator.process_index, accelerator.num_processes
    for start in range(rank * batch_size, len(data), batch_size * world):
        batch = collate(list(data[start:start + batch_size])).to(accelerator.device)
        with accelerator.autocast():
            window.add(loss_fn(model, batch), batch)
    model.train(was_training)
    loss, items, _, means = window.reduced(accelerator)
    return {"eval/loss": loss / max(items, 1), **{f"eval/{k}": v for k, v in means.items()}}


@dataclass
class DataSchedule:
    """Which examples each optimizer step sees: a seeded permutation per epoch, cut into micro-batches,
    micro-batch m of a step going to rank m % world. Resuming needs only (epoch, micro_index)."""

    size: int
    batch_size: int
    accumulation: int
    world: int
    rank: int
    seed: int

    def __post_init__(self) -> None:
        # Every rank gets the same number of micro-batches; a remainder smaller than `world` is dropped.
        self.micro_per_epoch = math.ceil(self.size / self.batch_size) // self.world * self.world
        if self.micro_per_epoch == 0:
            raise ConfigError(f"per_device_train_batch_size: {self.size} training examples cannot fill one "
                              f"micro-batch on each of {self.world} processes")
        self.steps_per_epoch = math.ceil(self.micro_per_epoch // self.world / self.accumulation)
        self._order: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._order = (epoch, torch.randperm(self.size, generator=generator).tolist())
        return self._order[1]

    def next_step(self, state: TrainerState) -> list[list[int]]:
        """This rank's micro-batches (example indices) for one optimizer step; advances `state`."""
        order = self.order(state.epoch)
        rounds = min(self.accumulation, (self.micro_per_epoch - state.micro_index) // self.world)
        batches = []
        for r in range(rounds):
            m = state.micro_index + r * self.world + self.rank
            batches.append(order[m * self.batch_size:(m + 1) * self.batch_size])
        state.micro_index += rounds * self.world
        if state.micro_index >= self.micro_per_epoch:
            state.epoch, state.micro_index = state.epoch + 1, 0
        return batches


def _accumulate(model: Any, accelerator: Any, batches: list[PackedBatch], loss_fn: LossFn, window: _Window) -> float:
    """Forward and backward over one step's micro-batches; each loss sum is divided by the item count
    of the whole step on all ranks (times the world size, which DDP's gradient averaging divides out).
    Returns the step's loss sum over all ranks."""
    world = accelerator.num_processes
    step_items = _reduce_sums(accelerator, [float(sum(b.num_items for b in batches))])[0]
    step_loss = 0.0
    for k, batch in enumerate(batches):
        batch = batch.to(accelerator.device)
        last = k == len(batches) - 1  # gradients are all-reduced once, after the last micro-batch
        with (contextlib.nullcontext() if last else accelerator.no_sync(model)):
            with accelerator.autocast():
                output = loss_fn(model, batch)
            accelerator.backward(output.loss * world / max(step_items, 1.0))
        window.add(output, batch)
        step_loss += float(output.loss.detach())
    return _reduce_sums(accelerator, [step_loss])[0]


def _check_finite(loss: float, grad_norm: float | None, step: int, output_dir: str) -> None:
    """Stop before a non-finite loss or gradient reaches the weights, naming what can be resumed."""
    if math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm)):
        return
    kept = checkpoint_dirs(output_dir)
    what = f"the last good checkpoint is {kept[-1]} (resume_from_checkpoint=latest)" if kept else "no checkpoint had been saved"
    bad, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", grad_norm)
    raise TrainingError(f"the {bad} became {value} at step {step}; stopped without updating the weights; {what}; "
                        f"try a lower learning_rate")


def _log_record(window: _Window, accelerator: Any, step: int, epoch: float, learning_rate: float,
                grad_norm: float | None) -> tuple[dict[str, Any], int]:
    """One metrics.jsonl line (item-weighted means since the last line, over all ranks), and the
    number of tokens it covers."""
    loss_sum, items, tokens, means = window.reduced(accelerator)
    record: dict[str, Any] = {"step": step, "epoch": round(epoch, 4), "loss": loss_sum / max(items, 1.0),
                              "learning_rate": learning_rate,
                              "tokens_per_second": tokens / max(time.perf_counter() - window.start, 1e-9)}
    if grad_norm is not None:
        record["grad_norm"] = grad_norm
    record.update(means)
    return record, int(tokens)


def _save_model_dir(accelerator: Any, model: Any, tokenizer: Any, path: str, sharded: bool, merge_lora: bool = False,
                    extra: Callable[[str], None] | None = None) -> None:
    """Write `path` atomically from the main process (sharded weights are gathered on every rank first)."""
    state_dict = accelerator.get_state_dict(model) if sharded else None
    if accelerator.is_main_process:
        with atomic_directory(path) as tmp:
            save_model(accelerator.unwrap_model(model), tokenizer, tmp, state_dict=state_dict, merge_lora=merge_lora)
            if extra:
                extra(tmp)
    accelerator.wait_for_everyone()


def train(model: Any, tokenizer: Any, config: TrainingConfig, train_data: Sequence[Any], collate: Collate,
          loss_fn: LossFn, eval_data: Sequence[Any] | None = None, eval_loss_fn: LossFn | None = None) -> TrainResult:
    """Train `model` on `train_data` with `loss_fn`; writes the run files into config.output_dir."""
    accelerator = make_accelerator(config)
    out = config.output_dir
    resume_from = prepare_output_dir(config, accelerator.is_main_process)
    if accelerator.is_main_process:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "config.yaml"), "w", encoding="utf-8") as f:
            f.write(config.to_yaml())
    schedule = DataSchedule(len(train_data), config.per_device_train_batch_size, config.gradient_accumulation_steps,
                            accelerator.num_processes, accelerator.process_index, config.seed)
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(config.num_train_epochs * schedule.steps_per_epoch)

    torch.manual_seed(config.seed)
    optimizer = build_optimizer(model, config.learning_rate, config.weight_decay,
                                (config.adam_beta1, config.adam_beta2), config.adam_epsilon)
    scheduler = build_scheduler(optimizer, config.lr_scheduler_type, total_steps, config.warmup_ratio)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    sharded = accelerator.distributed_type.value in ("FSDP", "DEEPSPEED")
    state = TrainerState()
    if resume_from:
        load_weights(accelerator.unwrap_model(model), resume_from)
        state = read_training_state(resume_from, optimizer, scheduler)
        log.info("resumed from %s at step %d", resume_from, state.global_step)
    metrics = MetricsLog(os.path.join(out, "metrics.jsonl"), state.global_step if resume_from else None,
                         accelerator.is_main_process)

    window = _Window()
    bar = tqdm(total=total_steps, initial=state.global_step, disable=config.disable_tqdm or not accelerator.is_main_process,
               desc=os.path.basename(os.path.normpath(out)) or "train", dynamic_ncols=True)
    while state.global_step < total_steps:
        batches = [collate([train_data[i] for i in indices]) for indices in schedule.next_step(state)]
        step_loss = _accumulate(model, accelerator, batches, loss_fn, window)
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)) if config.max_grad_norm else None
        _check_finite(step_loss, grad_norm, state.global_step + 1, out)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        step = state.global_step
        bar.update(1)

        do_eval = bool(eval_data) and ((config.eval_steps and step % config.eval_steps == 0) or step == total_steps)
        if step % config.logging_steps == 0 or step == total_steps or do_eval:
            record, tokens = _log_record(window, accelerator, step, step / schedule.steps_per_epoch, learning_rate, grad_norm)
            state.tokens_seen += tokens
            if do_eval:
                record.update(evaluate(model, accelerator, eval_data, collate, eval_loss_fn or loss_fn,
                                       config.per_device_eval_batch_size))
            metrics.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{learning_rate:.2e}", tok_s=f"{record['tokens_per_second']:.0f}")
            window = _Window()
        if config.save_steps and step % config.save_steps == 0 and step < total_steps:
            # A sharded optimizer's state_dict on one rank is only its shard: such checkpoints keep the
            # weights but cannot resume exactly, and say so (read_training_state).
            _save_model_dir(accelerator, model, tokenizer, os.path.join(out, "checkpoints", f"step-{step:06d}"), sharded,
                            extra=lambda tmp: write_training_state(tmp, None if sharded else optimizer, scheduler, state))
            if accelerator.is_main_process:
                prune_checkpoints(out, config.save_total_limit)
    bar.close()

    final_dir = os.path.join(out, "final")
    _save_model_dir(accelerator, model, tokenizer, final_dir, sharded, merge_lora=config.merge_lora)
    return TrainResult(out, final_dir, state.global_step, metrics.history, accelerator.unwrap_model(model))
