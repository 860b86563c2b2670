"""run_online: everything an online method does before the training loop, in the order that lets a
mistake fail before any model loads (prompts, rollout shape, rewards, run length), then the policy,
the reference, the layout, and the rollout source the loop trains from."""

from __future__ import annotations

import logging
from typing import Any

from vietnamese_ai.models.sampling import GenerationBackend
from vietnamese_ai.recipes.online.config import OnlineConfig, RolloutShape, plan_rollouts
from vietnamese_ai.recipes.online.method import OnlineMethod
from vietnamese_ai.recipes.online.prompts import read_prompt, tokenize_prompts
from vietnamese_ai.recipes.online.rewards import build_rewards, read_sampled_ids
from vietnamese_ai.recipes.online.source import RolloutSource
from vietnamese_ai.training.loop import TrainResult, process_state, train

log = logging.getLogger("vietnamese_ai")


def resolve_reference(config: OnlineConfig, policy: Any) -> Any:
    """The KL reference (beta > 0), as DPO's: a separate model, the policy with a fresh adapter off,
    or a frozen copy of the starting policy (merged, for a trained adapter). None when beta == 0: no
    reference is loaded at all."""
    if config.beta == 0:
        return None
    import copy

    from vietnamese_ai.models.loading import is_peft_model, load_causal_lm
    from vietnamese_ai.models.lora import adapters_are_identity
    from vietnamese_ai.models.reference import AdapterReference, FrozenReference

    if config.ref_model_name_or_path:
        return FrozenReference(load_causal_lm(config.ref_model_name_or_path, config.dtype,
                                              attn_implementation=config.attn_implementation,
                                              trust_remote_code=config.trust_remote_code))
    if is_peft_model(policy) and adapters_are_identity(policy):
        return AdapterReference(policy)
    frozen = copy.deepcopy(policy)
    if is_peft_model(frozen):
        frozen = frozen.merge_and_unload()
    return FrozenReference(frozen)


def run_online(config: OnlineConfig, method: OnlineMethod, model: Any = None, tokenizer: Any = None,
               train_records: Any = None, reward_funcs: list[Any] | None = None,
               backend: GenerationBackend | None = None) -> TrainResult:
    """Everything an online method does before the loop: prompts checked and tokenised, rollout shape
    and rewards checked (all before the model loads), then the policy, the reference, the layout.
    `backend` samples the completions (default: the built-in sampler, models.sampling)."""
    from vietnamese_ai.models.exactness import choose_layout, prompt_cache_support
    from vietnamese_ai.models.value import ordered_token_values, separate_value_model
    from vietnamese_ai.recipes.common import (
        load_policy,
        load_tokenizer_for,
        model_argument,
        pad_token_id,
        pair_cost,
        read_splits,
    )

    config, model = model_argument(config, model)
    train_raw, _ = read_splits(config, train_records, None, validate=read_prompt)
    state = process_state()
    shape = RolloutShape.of(config, state.num_processes)  # a batch that cannot hold whole groups fails here
    rewards = build_rewards(config, state.device, reward_funcs)
    tokenizer = tokenizer or load_tokenizer_for(config, model)
    read_sampled_ids(rewards, tokenizer, config.reward_cut_completions == "with_eos")
    prompts = tokenize_prompts(train_raw, tokenizer, config.max_prompt_length)
    config = plan_rollouts(config, shape, len(prompts), method.name)   # too few prompts for a rollout fails here
    method.check_prompts(prompts)
    model, tokenizer = load_policy(config, model, tokenizer)
    reference = resolve_reference(config, model)
    method.prepare_policy(model, tokenizer)   # after the reference was copied from it
    reference_model = getattr(reference, "model", None)
    longest = max(len(p.ids) for p in prompts) + config.max_completion_length
    # One completion per prompt (PPO) leaves nothing to share: the plain layout is the cheaper one.
    sharing = config.prefix_sharing and config.num_generations > 1
    pack, share = choose_layout([model, reference_model], config.packing, sharing, longest=longest)
    value_model = separate_value_model(model)
    if value_model is not None:   # PPO's separate value model reads the same batches: it must be exact on them too
        pack, share = choose_layout([value_model], pack, share, ordered_token_values, longest)
    cache_prompts = sharing and config.prompt_cache and not config.gradient_checkpointing and value_model is None and all(
        prompt_cache_support(m, longest) for m in (model, reference_model) if m is not None)
    log.info("%s: %d prompts, %d completions each, rewards: %s; layout: %s", method.name, len(prompts),
             config.num_generations, ", ".join(f"{t.name} x{t.weight:g}" for t in rewards),
             "prompts once, completions on their KV cache" if cache_prompts else
             f"packing {'on' if pack else 'off'}, prefix sharing {'on' if share else 'off'}")
    source = RolloutSource(config, prompts, tokenizer, rewards, method, reference, pack, share,
                           pad_token_id(tokenizer, model), pair_cost(model), backend=backend, cache_prompts=cache_prompts)
    return train(model, tokenizer, config, None, None, method.loss_fn(), source=source)
