"""Active sampling of contested prompts in online RL: the weights from a pass of the starting policy
recomputed by hand, the epoch's order drawn from them, the weighted order's law, and a resumed run
equal to the uninterrupted one."""

import json
import os

import pytest
import torch

from tests.conftest import REWARDS, online_worker_pair, read_jsonl  # noqa: F401  (REWARDS: the even_tokens reward used below)
from vietnamese_ai.recipes.grpo import GRPOConfig, run_grpo
from vietnamese_ai.recipes.online.active import contested_weights, variance, weighted_order


def test_the_weighted_order_puts_index_i_first_with_probability_proportional_to_its_weight():
    weights = [4.0, 1.0, 0.5, 2.5]
    draws = 4000
    firsts = [0] * 4
    generator = torch.Generator().manual_seed(0)
    for _ in range(draws):
        order = weighted_order(weights, generator)
        assert sorted(order) == [0, 1, 2, 3]
        firsts[order[0]] += 1
    for i, w in enumerate(weights):   # binomial standard error at most 0.008; allow about 4 of them
        assert firsts[i] / draws == pytest.approx(w / sum(weights), abs=0.03)
    assert weighted_order(weights, torch.Generator().manual_seed(5)) == weighted_order(weights, torch.Generator().manual_seed(5))


def _config(tmp_path, tiny_model, prompts_file, rewards_file, name, **kw):
    values = dict(model_name_or_path=tiny_model, dataset=prompts_file, reward=f"python:{rewards_file}:even_tokens",
                  output_dir=str(tmp_path / name), num_generations=4, per_device_train_batch_size=8,
                  max_completion_length=8, learning_rate=5e-2, lr_scheduler_type="constant", max_steps=2,
                  logging_steps=1, save_steps=1, disable_tqdm=True, seed=1, active_sampling="variance",
                  num_completions_to_print=None)
    values.update(kw)
    return GRPOConfig(**values)


def test_the_weights_and_the_first_prompts_are_what_a_pass_of_the_starting_policy_gives_by_hand(
        tmp_path, tiny_model, prompts_file, rewards_file):
    from vietnamese_ai.data.tokenize import prompt_ids
    from vietnamese_ai.data.types import Message
    from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
    from vietnamese_ai.models.sampling import sample_completions
    from vietnamese_ai.recipes.online.prompts import completion_seed

    result = run_grpo(_config(tmp_path, tiny_model, prompts_file, rewards_file, "run"))
    records = read_jsonl(prompts_file)
    model, tokenizer = load_causal_lm(tiny_model), load_tokenizer(tiny_model)
    ids = [prompt_ids(tokenizer, [Message(m["role"], m["content"]) for m in r["prompt"]]) for r in records]
    variances = []
    for i, prompt in enumerate(ids):   # 4 completions of each prompt from its own seeds of epoch -1
        samples = sample_completions(model, [prompt], 4, [completion_seed(1, -1, i, j) for j in range(4)], 8,
                                     tokenizer.eos_token_id, tokenizer.pad_token_id)
        variances.append(variance([sum(t % 2 == 0 for t in s.token_ids) / len(s.token_ids) for s in samples]))
    weights = contested_weights(variances)
    state = json.loads(open(os.path.join(result.output_dir, "checkpoints", "step-000001", "source_state.json"),
                            encoding="utf-8").read())
    kept = state[0]["prompt_weights"] if isinstance(state, list) else state["prompt_weights"]
    assert kept == pytest.approx(weights, abs=1e-9)
    order = weighted_order(weights, torch.Generator().manual_seed(1 + 0))
    first_step = [r for r in read_jsonl(os.path.join(result.output_dir, "completions.jsonl")) if r["step"] == 1]
    taken = list(dict.fromkeys(r["prompt"][0]["content"] for r in first_step))
    assert taken == [records[i]["prompt"][0]["content"] for i in order[:2]]
    metrics = read_jsonl(os.path.join(result.output_dir, "metrics.jsonl"))
    assert metrics[0]["active_sampling/zero_variance_prompts"] == pytest.approx(sum(v == 0 for v in variances) / 8)


def test_a_run_with_active_sampling_resumed_from_a_checkpoint_equals_the_uninterrupted_run(
        tmp_path, tiny_model, prompts_file, rewards_file):
    from safetensors.torch import load_file

    full = run_grpo(_config(tmp_path, tiny_model, prompts_file, rewards_file, "full", max_steps=4))
    cut = _config(tmp_path, tiny_model, prompts_file, rewards_file, "cut", max_steps=2)
    run_grpo(cut)
    resumed = run_grpo(cut.model_copy(update={"max_steps": 4, "resume_from_checkpoint": "latest"}))
    assert [(r["step"], r["loss"], r.get("reward")) for r in resumed.history][-2:] == \
        [(r["step"], r["loss"], r.get("reward")) for r in full.history][-2:]
    a = load_file(os.path.join(full.final_dir, "model.safetensors"))
    b = load_file(os.path.join(resumed.final_dir, "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_weigh_and_order_the_prompts_as_one_process_does(tmp_path, tiny_model, prompts_file, rewards_file):
    """Each process scores every other prompt in the active-sampling pass and the variances are summed:
    two processes train as one process with doubled accumulation."""
    a, b = online_worker_pair(tmp_path, 29547, tiny_model, prompts_file, f"python:{rewards_file}:even_tokens",
                              ACTIVE_SAMPLING="variance")
    assert a["reward"] == pytest.approx(b["reward"], abs=1e-6) and a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    ma, mb = (read_jsonl(os.path.join(tmp_path, d, "metrics.jsonl")) for d in ("ddp", "single"))
    assert ma[0]["active_sampling/zero_variance_prompts"] == mb[0]["active_sampling/zero_variance_prompts"]
