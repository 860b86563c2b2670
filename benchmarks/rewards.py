"""The reward both sides of benchmarks/online_vs_trl.py train on: a synthetic, learnable target (the
share of a completion's tokens whose id is even), with TRL's reward-function signature. It costs
nothing to compute, so the timings measure the trainers, not the reward."""


def token_parity(prompts, completions, completion_ids, **kwargs):
    return [sum(1 for t in ids if t % 2 == 0) / max(len(ids), 1) for ids in completion_ids]
