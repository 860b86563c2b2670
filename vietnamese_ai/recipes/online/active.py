"""Active sampling of contested prompts for online RL (`active_sampling=variance`).

Before the first rollout, every prompt gets K completions from the starting policy (K =
active_sampling_samples, default G), scored by the run's rewards; a prompt's weight is the population
variance of its K rewards plus a floor:

    w_i = var_i + floor,   floor = 0.01 * mean_j(var_j)   (1 when every variance is 0: a uniform order)

Each epoch's prompt order is then a weighted random order (Efraimidis and Spirakis, 2006): with one
uniform u_i per prompt from the epoch's seeded generator, prompts are sorted by log(u_i) / w_i,
largest first. A prompt comes first with probability w_i / sum_j w_j, and so on down the remaining
ones: every prompt still appears once per epoch, but a run shorter than an epoch spends its steps on
the prompts whose samples disagree. A prompt whose samples all score the same gives GRPO and RLOO zero
advantages, a step with no signal; the floor puts such prompts last rather than never.

The weights are the source's state (they go into every checkpoint, so a resumed run uses the weights
it started with, not a new pass with the trained policy). Completion j of prompt i in the pass draws
from completion_seed(seed, -1, i, j): epoch -1 is this pass's, so it shares no seed with training.
With several processes each scores every world-th prompt and the variances are summed across them,
so every process orders the same way as a single process.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vietnamese_ai.recipes.online.prompts import completion_seed
from vietnamese_ai.training.metrics import reduce_sums


def contested_weights(variances: list[float]) -> list[float]:
    """Sampling weights from reward variances (module docstring).

    >>> contested_weights([0.0, 1.0, 2.0])
    [0.01, 1.01, 2.01]
    >>> contested_weights([0.0, 0.0])
    [1.0, 1.0]
    """
    mean = sum(variances) / len(variances) if variances else 0.0
    floor = 0.01 * mean if mean > 0 else 1.0
    return [v + floor for v in variances]


def weighted_order(weights: list[float], generator: torch.Generator) -> list[int]:
    """A random order of range(len(weights)) in which index i comes first with probability
    w_i / sum(w) (Efraimidis-Spirakis keys log(u) / w, largest first)."""
    uniforms = torch.rand(len(weights), generator=generator, dtype=torch.float64).clamp(min=1e-300).tolist()
    keys = [math.log(u) / w for u, w in zip(uniforms, weights)]
    return sorted(range(len(weights)), key=lambda i: (-keys[i], i))


def variance(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


def prompt_variances(source: Any, k: int) -> list[float]:
    """The variance of `k` scored completions of every prompt of a RolloutSource, from its current
    policy: this process takes every world-th prompt, and the variances are summed over processes."""
    accelerator, prompts, seed = source.accelerator, source.prompts, source.config.seed
    mine = list(range(accelerator.process_index, len(prompts), accelerator.num_processes))
    variances = [0.0] * len(prompts)
    # One call for all of this process's prompts: the sampler batches them, and under a sharded policy
    # agrees with the other processes on how many batches to decode (models/sampling.py).
    samples = source.generate_group([prompts[i].ids for i in mine], k,
                                    [completion_seed(seed, -1, i, j) for i in mine for j in range(k)])
    if mine:
        _, _, rewards = source.score([prompts[i] for i in mine for _ in range(k)], samples, 0, 0)
        for n, i in enumerate(mine):
            variances[i] = variance(rewards[n * k:(n + 1) * k].tolist())
    return reduce_sums(accelerator, variances)
