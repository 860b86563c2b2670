"""The rollout source: the training loop's StepSource for every online method.

One rollout phase, on each process:

1. take the next P prompts of the epoch's seeded order (P = per_device_train_batch_size x
   steps_per_generation / num_generations);
2. sample G completions of each through the generation backend (default: models.sampling, each
   prompt prefilled once); completion j of the prompt at position i of epoch e draws from its own
   seed (seed, e, i, j), so what is sampled does not depend on the number of processes or the batching;
3. score them with every reward (RewardInputs: scorers by their registry strings, or Python
   functions), add the weighted rewards, subtract `missing_eos_penalty` from completions cut without EOS;
4. the rollout pass, without gradients, in the layout training will use: the reference's log-probs
   (beta > 0) and the sampling policy's when the policy will have moved by the time a micro-batch is
   trained (num_iterations > 1 or steps_per_generation > gradient_accumulation_steps), when the method
   needs them anyway, or when the backend is not exact; the value estimates, if the method needs them;
5. the method's advantages (OnlineMethod.advantages).

The rollout is then trained on in `steps_per_generation` micro-batches, `num_iterations` times over,
`gradient_accumulation_steps` micro-batches per optimizer step. The rollout, the position in it and
the method's own state are the source's state: they go into checkpoints, so a resumed run continues
exactly. The backend gets the policy's weights before the first step and after each optimizer step.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import torch

from vietnamese_ai.data.rollout import Rollout, rollout_batch
from vietnamese_ai.data.types import message_dicts
from vietnamese_ai.errors import TrainingError
from vietnamese_ai.models.sampling import Completion, GenerationBackend, SamplerBackend
from vietnamese_ai.recipes.online.active import contested_weights, prompt_variances, weighted_order
from vietnamese_ai.recipes.online.config import OnlineConfig, RolloutShape
from vietnamese_ai.recipes.online.method import OnlineMethod, ScoredRollout, global_mean_std
from vietnamese_ai.recipes.online.prompts import PromptExample, completion_seed
from vietnamese_ai.recipes.online.rewards import RewardInputs, RewardTerm, score_completions
from vietnamese_ai.training.checkpoint import TrainerState
from vietnamese_ai.training.metrics import MetricsLog, reduce_sums
from vietnamese_ai.training.sources import StepBatches


class RolloutSource:
    """A StepSource that samples, scores and lays out rollouts (see the module docstring)."""

    def __init__(self, config: OnlineConfig, prompts: list[PromptExample], tokenizer: Any, rewards: list[RewardTerm],
                 method: OnlineMethod, reference: Any, pack: bool, share: bool, pad_token_id: int, pair_cost: float,
                 backend: GenerationBackend | None = None, cache_prompts: bool = False):
        self.config, self.prompts, self.tokenizer, self.rewards, self.method = config, prompts, tokenizer, rewards, method
        self.reference, self.pack, self.share = reference, pack, share
        self.cache_prompts = cache_prompts   # run_online sets it when the model computes it exactly
        self.pad_token_id, self.pair_cost = pad_token_id, pair_cost
        self.backend = backend or SamplerBackend(config.max_completion_length, tokenizer.eos_token_id, pad_token_id,
                                                 config.temperature, config.top_k, config.top_p,
                                                 config.sampling_batch_size)
        self.examples = len(prompts)
        self.rollout: Rollout | None = None
        self.rollout_json: dict[str, Any] | None = None
        self.cursor = 0          # micro-batches of the current rollout already handed out (over all passes)
        self.synced_step: int | None = None   # the optimizer step whose weights the backend has
        self.completions_log: MetricsLog | None = None
        self.prompt_weights: list[float] | None = None   # active sampling's weights (recipes/online/active.py)

    # --- the StepSource protocol

    def setup(self, accelerator: Any) -> int:
        self.accelerator = accelerator
        self.shape = RolloutShape.of(self.config, accelerator.num_processes)
        # The loop's epoch is step / this: whole rollouts trained over the rollouts an epoch holds.
        return self.shape.rollouts_per_epoch(len(self.prompts)) * self.shape.steps_per_rollout

    def attach(self, model: Any, output_dir: str, resume_step: int | None) -> None:
        self.model = model
        if self.config.log_completions and self.accelerator.is_main_process:
            self.completions_log = MetricsLog(os.path.join(output_dir, "completions.jsonl"), resume_step, True)

    def state_dict(self) -> dict[str, Any]:
        weights = {"prompt_weights": self.prompt_weights} if self.prompt_weights is not None else {}
        return {"cursor": self.cursor, "rollout": self.rollout_json, **weights, **self.method.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor = state.get("cursor", 0)
        self.prompt_weights = state.get("prompt_weights", self.prompt_weights)
        data = state.get("rollout")
        if data is not self.rollout_json:
            self.rollout, self.rollout_json = (Rollout.from_json(data), data) if data else (None, None)
        self.method.load_state_dict(state)

    def next_step(self, state: TrainerState) -> StepBatches:
        if self.synced_step != state.global_step:   # the first step, or an optimizer step since the last one
            self.backend.sync_weights(self.model)
            self.synced_step = state.global_step
        step = StepBatches([])
        if self.config.active_sampling != "none" and self.prompt_weights is None:
            self._weigh_prompts(step)
        passes = self.shape.steps * self.config.num_iterations
        if self.rollout is None or self.cursor >= passes:
            self._new_rollout(state, step)
        for _ in range(self.config.gradient_accumulation_steps):
            indices = self.rollout.micro_batches[self.cursor % self.shape.steps]
            step.batches.append(self._batch(self.rollout, indices))
            self.cursor += 1
        return step

    # --- one rollout phase

    def _batch(self, rollout: Rollout, indices: list[int]) -> Any:
        return rollout_batch(rollout, indices, self.pack, self.share, self.pad_token_id, self.pair_cost,
                             self.method.count_tokens, self.config.mask_truncated_completions, self.cache_prompts)

    def _take_prompts(self, state: TrainerState) -> list[tuple[int, int, PromptExample]]:
        """This process's prompts for the next rollout: (epoch, position in the epoch's order, prompt)."""
        needed = self.shape.prompts * self.shape.world
        if state.micro_index + needed > len(self.prompts):
            state.epoch, state.micro_index = state.epoch + 1, 0
        generator = torch.Generator().manual_seed(self.config.seed + state.epoch)
        order = (weighted_order(self.prompt_weights, generator) if self.prompt_weights is not None
                 else torch.randperm(len(self.prompts), generator=generator).tolist())
        first = state.micro_index + self.accelerator.process_index * self.shape.prompts
        taken = [(state.epoch, p, self.prompts[order[p]]) for p in range(first, first + self.shape.prompts)]
        state.micro_index += needed
        return taken

    def generate_group(self, prompts: list[list[int]], group: int, seeds: list[int]) -> list[Completion]:
        """The backend's completions, `group` per prompt, checked: one per seed, none empty."""
        samples = self.backend.generate(prompts, group, seeds)
        name = type(self.backend).__name__
        if len(samples) != len(seeds):
            raise TrainingError(f"generation backend {name} returned {len(samples)} completions for {len(prompts)} "
                                f"prompts x {group}")
        for k, s in enumerate(samples):
            if not s.token_ids:
                raise TrainingError(f"generation backend {name} returned no tokens for completion {k}")
            if s.logps is not None and len(s.logps) != len(s.token_ids):
                raise TrainingError(f"generation backend {name} returned {len(s.logps)} log-probs for the "
                                    f"{len(s.token_ids)} tokens of completion {k}")
        return samples

    def _new_rollout(self, state: TrainerState, step: StepBatches) -> None:
        config, group = self.config, self.config.num_generations
        taken = self._take_prompts(state)
        seeds = [completion_seed(config.seed, epoch, position, j) for epoch, position, _ in taken for j in range(group)]
        started = time.perf_counter()
        samples = self.generate_group([p.ids for _, _, p in taken], group, seeds)
        generated = time.perf_counter()
        prompts = [p for _, _, p in taken for _ in range(group)]
        texts, parts, rewards = self.score(prompts, samples, state.global_step, state.epoch)
        finished = [s.finished for s in samples]
        scored = time.perf_counter()

        rollout = Rollout(group_size=group, prompt_ids=[p.ids for _, _, p in taken],
                          completion_ids=[s.token_ids for s in samples], finished=finished, rewards=rewards.tolist(),
                          advantages=[0.0] * len(samples), micro_batches=self._micro_batches(len(samples), state))
        kl = self._rollout_pass(rollout)
        self._compare_logps(step, samples, rollout.old_logps)
        result = self.method.advantages(ScoredRollout(rollout, rewards, kl), self.accelerator)
        rollout.advantages = result.per_completion.tolist()
        rollout.token_advantages, rollout.returns = result.per_token, result.returns
        for name, value in result.statistics.items():
            step.sums[name] = (value, 1.0)
        self.rollout, self.rollout_json, self.cursor = rollout, rollout.as_json(), 0
        done = time.perf_counter()
        self._measure(step, parts, rewards, samples, {"generation": generated - started, "scoring": scored - generated,
                                                      "logps": done - scored})
        shown = result.shown if result.shown is not None else result.per_completion
        self._log_completions(state, prompts, texts, parts, rewards, shown)

    def score(self, prompts: list[PromptExample], samples: list[Completion], step: int,
               epoch: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """The completions' texts, each reward's values (N, R) and the weighted total reward (N,)."""
        texts = [self.tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in samples]
        inputs = RewardInputs.of(prompts, [s.token_ids for s in samples], texts, step, epoch)
        parts = score_completions(self.rewards, inputs, len(samples), step + 1)
        weights = torch.tensor([t.weight for t in self.rewards], dtype=torch.float64)
        rewards = torch.nansum(parts * weights, dim=1)
        if self.config.missing_eos_penalty:
            rewards = rewards - self.config.missing_eos_penalty * (~torch.tensor([s.finished for s in samples])).double()
        return texts, parts, rewards

    def _weigh_prompts(self, step: StepBatches) -> None:
        started = time.perf_counter()
        variances = prompt_variances(self, self.config.active_sampling_samples or self.config.num_generations)
        self.prompt_weights = contested_weights(variances)
        step.sums.update({"active_sampling/zero_variance_prompts": (sum(v == 0 for v in variances) / len(variances), 1.0),
                          "time/active_sampling": (time.perf_counter() - started, 1.0)})

    def _micro_batches(self, count: int, state: TrainerState) -> list[list[int]]:
        """Completion indices per micro-batch. With several micro-batches, a seeded shuffle mixes the
        prompts' completions across them (as TRL does), so each sees several prompts."""
        order = list(range(count))
        if self.shape.steps > 1:
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + state.global_step)
            order = torch.randperm(count, generator=generator).tolist()
        size = self.config.per_device_train_batch_size
        return [order[i:i + size] for i in range(0, count, size)]

    @torch.no_grad()
    def _rollout_pass(self, rollout: Rollout) -> torch.Tensor | None:
        """Reference log-probs (beta > 0); the sampling policy's when the policy will move before a
        micro-batch is trained, when the method needs them, or when the backend is not exact; the
        values if the method needs them. Computed in the training layout, so that a rollout's first
        pass reproduces them bit for bit. Returns KL(old || ref) summed per completion, (N, G), if both exist."""
        config, needs = self.config, self.method.needs()
        on_policy = config.num_iterations == 1 and self.shape.optimizer_steps == 1 and self.backend.exact
        want_old = needs.old_logps or needs.values or not on_policy
        if not want_old and self.reference is None:
            return None
        from vietnamese_ai.models.forward import unwrap
        from vietnamese_ai.models.prompt_cache import rollout_forward
        from vietnamese_ai.models.reference import evaluation_mode
        from vietnamese_ai.models.value import forward_with_values

        old = [[] for _ in rollout.completion_ids] if want_old else None
        ref = [[] for _ in rollout.completion_ids] if self.reference is not None else None
        policy = unwrap(self.model)
        values = [[] for _ in rollout.completion_ids] if needs.values else None
        device = next(policy.parameters()).device
        for indices in rollout.micro_batches:
            batch = self._batch(rollout, indices).to(device)
            order = torch.argsort(batch.target_groups, stable=True)
            splits = [len(rollout.completion_ids[k]) for k in indices]
            with self.accelerator.autocast():
                if old is not None:
                    with evaluation_mode(policy):
                        logps, _, estimates = (forward_with_values(policy, batch, config.temperature) if values is not None
                                               else rollout_forward(policy, batch, config.temperature))
                    for k, v in zip(indices, logps[order].float().cpu().split(splits)):
                        old[k] = v.tolist()
                    if values is not None:
                        for k, v in zip(indices, estimates[order].float().cpu().split(splits)):
                            values[k] = v.tolist()
                if ref is not None:
                    reference = self.reference.token_logps(batch, config.temperature)
                    for k, v in zip(indices, reference[order].float().cpu().split(splits)):
                        ref[k] = v.tolist()
        rollout.old_logps, rollout.ref_logps, rollout.values = old, ref, values
        if old is None or ref is None:
            return None
        sums = [sum(a - b for a, b in zip(o, r)) for o, r in zip(old, ref)]
        return torch.tensor(sums, dtype=torch.float32).view(-1, rollout.group_size)

    def _compare_logps(self, step: StepBatches, samples: list[Completion], old: list[list[float]] | None) -> None:
        """Where the backend gave log-probs and the policy recomputed them: their mean absolute gap per
        token (`sampling/logp_diff`), which says how far the backend's distribution is from the policy's."""
        if old is None or any(s.logps is None for s in samples):
            return
        gap = sum(abs(a - b) for s, o in zip(samples, old) for a, b in zip(s.logps, o))
        gap, tokens = reduce_sums(self.accelerator, [gap, float(sum(len(o) for o in old))])
        step.sums["sampling/logp_diff"] = (gap / tokens, 1.0)

    def _measure(self, step: StepBatches, parts: torch.Tensor, rewards: torch.Tensor, samples: list[Completion],
                 seconds: dict[str, float]) -> None:
        """The rollout's statistics over all processes, as (value, 1) so that the window averages them."""
        mean, std = global_mean_std(rewards, self.accelerator)
        step.sums.update({"reward": (mean, 1.0), "reward_std": (std, 1.0)})
        if len(self.rewards) > 1:
            for i, term in enumerate(self.rewards):
                column = parts[:, i][~parts[:, i].isnan()]
                m, s = global_mean_std(column, self.accelerator)
                step.sums[f"rewards/{term.name}/mean"], step.sums[f"rewards/{term.name}/std"] = (m, 1.0), (s, 1.0)
        groups = rewards.view(-1, self.config.num_generations)
        flat_groups = float((groups.std(dim=1) < 1e-8).sum()) if groups.shape[1] > 1 else 0.0
        lengths = torch.tensor([len(s.token_ids) for s in samples], dtype=torch.float64)
        unfinished = torch.tensor([not s.finished for s in samples], dtype=torch.float64)
        n_groups, flat, count, total, cut = reduce_sums(self.accelerator, [float(groups.shape[0]), flat_groups,
                                                                          float(len(samples)), float(lengths.sum()),
                                                                          float(unfinished.sum())])
        if groups.shape[1] > 1:
            step.sums["frac_reward_zero_std"] = (flat / n_groups, 1.0)
        step.sums.update({"completions/mean_length": (total / count, 1.0),
                          "completions/clipped_ratio": (cut / count, 1.0)})
        step.extremes.update({"completions/min_length": ("min", float(lengths.min())),
                              "completions/max_length": ("max", float(lengths.max()))})
        for phase, value in seconds.items():
            step.sums[f"time/{phase}"] = (value, 1.0)

    def _log_completions(self, state: TrainerState, prompts: list[PromptExample], texts: list[str], parts: torch.Tensor,
                         rewards: torch.Tensor, advantages: torch.Tensor) -> None:
        step = state.global_step + 1
        every = self.config.completions_steps or self.config.logging_steps
        if self.completions_log is None or (step - 1) % every:
            return
        count = len(texts) if self.config.num_completions_to_print is None else min(len(texts), self.config.num_completions_to_print)
        names = [t.name for t in self.rewards]
        for k in range(count):
            prompt = prompts[k].prompt
            self.completions_log.write({
                "step": step, "prompt": prompt if isinstance(prompt, str) else message_dicts(prompt),
                "completion": texts[k], "reward": float(rewards[k]), "advantage": float(advantages[k]),
                "rewards": {n: (None if math.isnan(float(v)) else float(v)) for n, v in zip(names, parts[k].tolist())},
            })
