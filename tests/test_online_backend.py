"""The generation backend seam of online RL: a backend that returns fixed completions drives real
GRPO steps (what it is given, what is trained on, when it gets the weights), an inexact backend makes
the policy recompute the sampling log-probs, and a backend's wrong answer is named in one line."""

import json
import os

import pytest
import torch

from tests.test_online_rl import _config
from vietnamese_ai.errors import TrainingError
from vietnamese_ai.models.forward import unwrap
from vietnamese_ai.models.sampling import Completion
from vietnamese_ai.recipes.grpo import GRPOConfig, run_grpo
from vietnamese_ai.recipes.online import completion_seed

# Completion j of every prompt; even_tokens scores the share of even ids: 1, 1/3, 0, 2/3.
FIXED = [[10, 12, 14], [10, 11, 13], [11, 13, 15], [10, 11, 12]]


class FixedBackend:
    """Returns FIXED for every prompt (never EOS: each completion counts as cut); records what it
    was asked and the first weight of the model at every sync."""

    def __init__(self, exact: bool = True, drop: int = 0, logps: float | None = None):
        self.exact, self.drop, self.logps = exact, drop, logps
        self.calls, self.synced = [], []

    def sync_weights(self, model):
        self.synced.append(next(unwrap(model).parameters()).detach().flatten()[:4].clone())

    def generate(self, prompts, group, seeds):
        self.calls.append((prompts, group, seeds))
        logps = None if self.logps is None else [self.logps] * 3
        out = [Completion(list(FIXED[j]), finished=False, logps=logps) for _ in prompts for j in range(group)]
        return out[:len(out) - self.drop]


def _run(tmp_path, tiny_model, prompts_file, rewards_file, backend, name):
    config = _config(GRPOConfig, tmp_path, tiny_model, prompts_file, f"python:{rewards_file}:even_tokens", max_steps=2,
                     save_steps=1, output_dir=str(tmp_path / name))
    return run_grpo(config, backend=backend)


def test_a_fixed_backend_drives_grpo_steps(tmp_path, tiny_model, prompts_file, rewards_file):
    backend = FixedBackend()
    result = _run(tmp_path, tiny_model, prompts_file, rewards_file, backend, "exact")
    # 8 completions per step on one process: 2 prompts x 4, each from its own seed
    assert [(len(p), g) for p, g, _ in backend.calls] == [(2, 4), (2, 4)]
    assert backend.calls[0][2] == [completion_seed(1, 0, position, j) for position in range(2) for j in range(4)]
    assert backend.calls[1][2] == [completion_seed(1, 0, position, j) for position in range(2, 4) for j in range(4)]
    row = result.history[0]
    # rewards of FIXED: mean 1/2; deviations ±1/2 and ±1/6 twice over 8 completions, unbiased std
    assert row["reward"] == pytest.approx(0.5)
    assert row["reward_std"] == pytest.approx(((2 * (0.25 + 0.25 + 1 / 36 + 1 / 36)) / 7) ** 0.5)
    assert row["completions/mean_length"] == 3.0 and row["completions/clipped_ratio"] == 1.0
    # the weights before the first step, then after it: the backend was synced after the optimizer step
    assert len(backend.synced) == 2 and not torch.equal(backend.synced[0], backend.synced[1])
    with open(os.path.join(result.output_dir, "completions.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    assert [r["reward"] for r in logged[:4]] == pytest.approx([1.0, 1 / 3, 0.0, 2 / 3])


def test_an_inexact_backend_makes_the_policy_recompute_the_sampling_log_probs(tmp_path, tiny_model, prompts_file,
                                                                            rewards_file):
    """On-policy, an exact backend's rollout carries no old log-probs (the loss's own, detached, are
    them); an inexact one's does, computed by the policy. They are the same numbers, so both train
    to the same weights bit for bit. The backend's own log-probs are compared with the policy's."""
    from safetensors.torch import load_file

    exact = _run(tmp_path, tiny_model, prompts_file, rewards_file, FixedBackend(exact=True), "exact")
    inexact = _run(tmp_path, tiny_model, prompts_file, rewards_file, FixedBackend(exact=False, logps=-5.0), "inexact")

    def rollout(result):
        with open(os.path.join(result.output_dir, "checkpoints", "step-000001", "source_state.json")) as f:
            return json.load(f)[0]["rollout"]

    assert rollout(exact)["old_logps"] is None
    old = rollout(inexact)["old_logps"]
    assert [len(o) for o in old] == [3] * 8 and all(v < 0 for o in old for v in o)
    gap = sum(abs(v + 5.0) for o in old for v in o) / 24
    assert inexact.history[0]["sampling/logp_diff"] == pytest.approx(gap) and "sampling/logp_diff" not in exact.history[0]
    a, b = (load_file(os.path.join(r.final_dir, "model.safetensors")) for r in (exact, inexact))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_backend_returning_too_few_completions_is_named(tmp_path, tiny_model, prompts_file, rewards_file):
    with pytest.raises(TrainingError, match=r"^generation backend FixedBackend returned 7 completions for 2 prompts x 4$"):
        _run(tmp_path, tiny_model, prompts_file, rewards_file, FixedBackend(drop=1), "short")
