"""PPO with a value head: the rollout arithmetic by hand, the first mini-batch on-policy, resuming,
learning, the seed recipe's names, and bad input."""

import os

import pytest
import torch

from tests.test_online_rl import CrashAt
from vietnamese_ai.cli import main
from vietnamese_ai.losses.ppo import AdaptiveKLController, clipped_value_loss, gae, token_rewards, whiten
from vietnamese_ai.recipes.ppo import PPOConfig, run_ppo


def _config(tmp_path, tiny_model, prompts_file, reward, **kw):
    values = dict(model_name_or_path=tiny_model, dataset=prompts_file, reward=reward, output_dir=str(tmp_path / "run"),
                  per_device_train_batch_size=4, steps_per_generation=2, max_completion_length=10,
                  learning_rate=3e-2, lr_scheduler_type="constant", max_steps=4, logging_steps=1, save_steps=0,
                  disable_tqdm=True, seed=1, num_ppo_epochs=2)
    values.update(kw)
    return PPOConfig(**values)


def test_gae_and_whitening_by_hand():
    # Two completions of lengths 3 and 2, gamma 0.9, lambda 0.5, rewards -0.1 kl at each token + score at the end.
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    kl = torch.tensor([[0.5, 1.0, 0.0], [2.0, -1.0, 9.0]])
    rewards = token_rewards(torch.tensor([1.0, -2.0]), kl, mask, 0.1)
    assert torch.allclose(rewards, torch.tensor([[-0.05, -0.1, 1.0], [-0.2, 0.1 - 2.0, 0.0]]))
    values = torch.tensor([[0.2, 0.4, 0.6], [1.0, -1.0, 7.0]])
    advantages, returns = gae(rewards, values, mask, 0.9, 0.5)
    expected = []
    for r, v, n in ((rewards[0], values[0], 3), (rewards[1], values[1], 2)):
        a, row = 0.0, [0.0] * 3
        for t in reversed(range(n)):
            following = float(v[t + 1]) if t + 1 < n else 0.0
            a = float(r[t]) + 0.9 * following - float(v[t]) + 0.9 * 0.5 * a
            row[t] = a
        expected.append(row)
    assert torch.allclose(advantages, torch.tensor(expected))
    assert torch.allclose(returns, (torch.tensor(expected) + values) * mask)
    real = advantages[mask.bool()]
    white = whiten(advantages, mask)
    assert torch.allclose(white[mask.bool()], (real - real.mean()) / real.std(), atol=1e-6)
    scaled = whiten(rewards, mask, shift_mean=False)[mask.bool()]
    flat = rewards[mask.bool()]
    assert torch.allclose(scaled, (flat - flat.mean()) / flat.std() + flat.mean(), atol=1e-6)
    assert float(scaled.mean()) == pytest.approx(float(flat.mean()), abs=1e-6)


def test_the_adaptive_kl_controller_moves_towards_its_target():
    c = AdaptiveKLController(0.1, target=4.0, horizon=100)
    c.update(kl=5.0, n=10)                    # error 0.25 clipped to 0.2: x (1 + 0.2 x 10 / 100)
    assert c.value == pytest.approx(0.1 * 1.02)
    c.update(kl=3.0, n=10)                    # error -0.25 clipped to -0.2
    assert c.value == pytest.approx(0.1 * 1.02 * 0.98)
    c.update(kl=4.4, n=50)                    # error 0.1
    assert c.value == pytest.approx(0.1 * 1.02 * 0.98 * 1.05)


def test_value_clipping_by_hand():
    values, old, returns = torch.tensor([1.0, 0.5, -1.0]), torch.tensor([0.0, 0.4, 0.0]), torch.tensor([0.0, 2.0, -2.0])
    loss, clipped = clipped_value_loss(values, old, returns, 0.2)
    # 1: (1-0)² vs (0.2-0)²: plain. 2: (0.5-2)² vs (0.5-2)²: equal. 3: (-1+2)² vs (-0.2+2)²: clipped is larger.
    assert torch.allclose(loss, torch.tensor([0.5, 0.5 * 1.5 ** 2, 0.5 * 1.8 ** 2]))
    assert clipped.tolist() == [False, False, True]


@pytest.mark.parametrize("values,cache_prompts", [("head", False), ("head", True), ("model", False)])
def test_the_first_mini_batch_is_on_policy(tmp_path, tiny_dropout_model, prompts_file, rewards_file,
                                           seeded_reward_model, values, cache_prompts):
    """At the first mini-batch the policy has not moved: ratio 1, nothing clipped, the values equal
    those of the rollout pass, and the value loss is 1/2 mean (V - R)² computed by hand. With a
    separate value model started from a reward model, the value of each completion token is what
    that reward model scores for the sequence up to the token before it."""
    from accelerate import Accelerator
    from transformers import AutoModelForSequenceClassification

    from vietnamese_ai.data.loading import load_records
    from vietnamese_ai.models.loading import disable_dropout, load_causal_lm, load_tokenizer
    from vietnamese_ai.models.value import attach_value_model, forward_with_values, load_value_model
    from vietnamese_ai.recipes.online import RolloutSource, build_rewards, resolve_reference, tokenize_prompts
    from vietnamese_ai.recipes.ppo import PPO, attach_value_head, ppo_loss_fn
    from vietnamese_ai.training.checkpoint import TrainerState

    separate = {"value_model_name_or_path": seeded_reward_model} if values == "model" else {}
    config = _config(tmp_path, tiny_dropout_model, prompts_file, f"python:{rewards_file}:even_tokens",
                     kl_coef=0.1, **separate).resolved()
    model, tokenizer = load_causal_lm(tiny_dropout_model), load_tokenizer(tiny_dropout_model)
    disable_dropout(model)
    reference = resolve_reference(config, model)
    if values == "head":
        attach_value_head(model)
        torch.nn.init.normal_(model.value_head.weight)      # a head that is not zero, so the values mean something
    else:
        attach_value_model(model, load_value_model(config, tokenizer.pad_token_id).train())
    source = RolloutSource(config, tokenize_prompts(load_records(prompts_file), tokenizer, None), tokenizer,
                           build_rewards(config), PPO(config), reference, True, True, tokenizer.pad_token_id, 0.0,
                           cache_prompts=cache_prompts)
    source.setup(Accelerator(cpu=True))
    source.attach(model.train(), str(tmp_path), None)
    step = source.next_step(TrainerState())
    batch = step.batches[0]
    rollout = batch.extras["rollout"]
    logps, _, estimates = forward_with_values(model, batch, config.temperature)
    assert torch.equal(logps.detach(), rollout.old_logps) and torch.equal(estimates.detach(), rollout.old_values)
    if values == "model":
        scorer = AutoModelForSequenceClassification.from_pretrained(seeded_reward_model).eval()
        whole = source.rollout
        for k in whole.micro_batches[0][:2]:
            sequence = whole.prompt_ids[whole.prompt_of(k)] + whole.completion_ids[k]
            start = len(whole.prompt_ids[whole.prompt_of(k)])
            with torch.no_grad():
                by_hand = [float(scorer(torch.tensor([sequence[:t]])).logits[0, 0])
                           for t in range(start, start + len(whole.completion_ids[k]))]
            assert whole.values[k] == pytest.approx(by_hand, abs=1e-5)
    output = ppo_loss_fn(config)(model, batch)
    tokens = float(rollout.token_mask.sum())
    assert float(output.metrics["clip_ratio"][0]) == 0.0 and float(output.metrics["ppo/val/clipfrac"][0]) == 0.0
    by_hand = 0.5 * float(((rollout.old_values - rollout.returns) ** 2).sum()) / tokens
    assert float(output.metrics["value_loss"][0]) / tokens == pytest.approx(by_hand, rel=1e-5)
    # the total: -sum(A) (ratio 1) + vf_coef x value loss, summed over tokens
    expected = -float(rollout.token_advantages.sum()) + config.vf_coef * by_hand * tokens
    assert float(output.loss.detach()) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert step.sums["kl"][0] == pytest.approx(0.0, abs=1e-6)   # the reference is the starting policy


def test_ppo_raises_its_reward_and_saves_a_loadable_model_with_its_value_head(tmp_path, tiny_model, prompts_file,
                                                                             rewards_file):
    from transformers import AutoModelForCausalLM

    result = run_ppo(_config(tmp_path, tiny_model, prompts_file, f"python:{rewards_file}:even_tokens", max_steps=32,
                             logging_steps=8, kl_coef=0.05))
    rewards = result.series("reward")
    assert rewards[-1] > rewards[0] + 0.1, rewards
    row = result.history[-1]
    for key in ("ppo/returns/mean", "ppo/val/vpred", "ppo/val/error", "ppo/mean_scores", "ppo/std_scores", "kl", "kl_coef",
                "value_loss", "policy_loss", "explained_variance", "reward", "reward_std", "time/generation",
                "time/scoring", "time/logps", "time/training"):
        assert key in row, key
    assert os.path.isfile(os.path.join(result.final_dir, "value_head.safetensors"))
    AutoModelForCausalLM.from_pretrained(result.final_dir)


@pytest.mark.parametrize("values", ["head", "model"])
def test_a_ppo_run_resumed_equals_the_uninterrupted_run(tmp_path, tiny_dropout_model, prompts_file, rewards_file,
                                                        seeded_reward_model, monkeypatch, values):
    import vietnamese_ai.recipes.ppo as ppo
    from safetensors.torch import load_file

    # The KL controller moves every rollout; a crash inside a rollout's second pass must resume with
    # the rollout, the value head (or value model) and the coefficient as they were.
    common = dict(max_steps=6, save_steps=1, adaptive_kl=True, target_kl=0.01, horizon=10, kl_coef=0.1)
    if values == "model":
        common["value_model_name_or_path"] = seeded_reward_model
    reward = f"python:{rewards_file}:even_tokens"
    full = run_ppo(_config(tmp_path, tiny_dropout_model, prompts_file, reward, output_dir=str(tmp_path / "full"), **common))
    config = _config(tmp_path, tiny_dropout_model, prompts_file, reward, output_dir=str(tmp_path / "cut"), **common)
    real = ppo.ppo_loss_fn
    monkeypatch.setattr(ppo, "ppo_loss_fn", lambda c: CrashAt(real(c), 3))   # dies inside step 4
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_ppo(config)
    monkeypatch.setattr(ppo, "ppo_loss_fn", real)
    resumed = run_ppo(config.model_copy(update={"resume_from_checkpoint": "latest"}))
    keys = ("step", "loss", "reward", "kl_coef", "ppo/val/vpred")
    assert [tuple(r.get(k) for k in keys) for r in resumed.history] == [tuple(r.get(k) for k in keys) for r in full.history]
    assert len({r["kl_coef"] for r in full.history if "kl_coef" in r}) > 1     # the controller did move
    names = ["model.safetensors", "value_head.safetensors" if values == "head" else "value_model/model.safetensors"]
    for name in names:
        a, b = load_file(os.path.join(full.final_dir, name)), load_file(os.path.join(resumed.final_dir, name))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_seed_recipe_names_work(tmp_path, tiny_model, prompts_file, rewards_file):
    config = PPOConfig(model_name=tiny_model, dataset=prompts_file, reward=f"python:{rewards_file}:constant",
                       learning_rate=1.41e-5, ppo_epochs=1, mini_batch_size=4, batch_size=8, init_kl_coef=0.2,
                       adap_kl_ctrl=True, target=6, horizon=10000, top_k=0, top_p=1.0, do_sample=True, max_new_tokens=5,
                       min_length=5, output_dir=str(tmp_path / "seed"), max_steps=2, disable_tqdm=True)
    resolved = config.resolved()
    assert (resolved.per_device_train_batch_size, resolved.steps_per_generation, resolved.num_iterations) == (4, 2, 1)
    assert (resolved.kl_coef, resolved.adaptive_kl, resolved.target_kl, resolved.max_completion_length) == (0.2, True, 6, 5)
    result = run_ppo(config)
    assert result.global_step == 2 and result.history[0]["ppo/mean_scores"] == 1.0


@pytest.mark.parametrize("extra,fragments", [
    (["do_sample=false"], ["do_sample=false"]),
    (["min_length=500"], ["min_length=500", "EOS would be suppressed"]),
    (["ppo_epochs=2", "num_ppo_epochs=3"], ["key 'ppo_epochs'", "same setting as 'num_ppo_epochs'"]),
    (["batch_size=6", "mini_batch_size=4"], ["batch_size=6 is not a multiple of the mini-batch"]),
    (["kl_estimator=k2"], ["key 'kl_estimator'"]),
    (["beta=0.1"], ["unknown key 'beta'"]),
    (["num_generations=2"], ["key 'num_generations'", "one completion per prompt"]),
    (["max_rollouts=2"], ["max_rollouts=2 and max_steps=1: give one of them"]),
    (["max_rollouts=0"], ["key 'max_rollouts'"]),
])
def test_bad_ppo_input_is_one_line(tmp_path, capsys, tiny_model, prompts_file, rewards_file, extra, fragments):
    argv = ["ppo", f"model_name_or_path={tiny_model}", f"dataset={prompts_file}", f"reward=python:{rewards_file}:constant",
            f"output_dir={tmp_path / 'out'}", "max_completion_length=4", "max_steps=1", "disable_tqdm=true", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vietnamese-ai: error:"), err
    for fragment in fragments:
        assert fragment in err, err


def test_ppo_with_lora_keeps_its_reference_as_the_base_and_saves_an_adapter(tmp_path, tiny_model, prompts_file,
                                                                            rewards_file):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = run_ppo(_config(tmp_path, tiny_model, prompts_file, f"python:{rewards_file}:even_tokens", use_lora=True,
                             lora_r=4, lora_alpha=8, kl_coef=0.1, max_steps=8))
    kl = result.series("kl")                  # one value per rollout: 4 optimizer steps each here
    assert len(kl) == 2 and kl[0] == pytest.approx(0.0, abs=1e-6)   # adapters off = the starting policy
    assert kl[1] != 0.0
    assert os.path.isfile(os.path.join(result.final_dir, "adapter_model.safetensors"))
    assert os.path.isfile(os.path.join(result.final_dir, "value_head.safetensors"))
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), result.final_dir)


@pytest.mark.parametrize("lora", [False, True])
def test_a_separate_value_model_trains_beside_the_policy_and_is_saved(tmp_path, tiny_model, prompts_file, rewards_file,
                                                                      seeded_reward_model, lora):
    """Started from a reward model: the policy still learns, the value model's head moves, the policy
    saves as a plain causal LM (or its adapter) and the value model beside it in Hugging Face format."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    extra = dict(use_lora=True, lora_r=4, lora_alpha=8) if lora else {}
    result = run_ppo(_config(tmp_path, tiny_model, prompts_file, f"python:{rewards_file}:even_tokens", max_steps=64,
                             logging_steps=8, kl_coef=0.05, value_model_name_or_path=seeded_reward_model, **extra))
    rewards, errors = result.series("reward"), result.series("ppo/val/error")
    # the reward model's scores are a poor first guess of this reward's returns: the value model must learn them
    assert errors[-1] < errors[0] / 10, errors
    assert sum(rewards[-4:]) / 4 > rewards[0] + 0.05, rewards
    saved = os.path.join(result.final_dir, "value_model")
    assert not os.path.exists(os.path.join(result.final_dir, "value_head.safetensors"))
    start = AutoModelForSequenceClassification.from_pretrained(seeded_reward_model).score.weight
    if lora:
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), result.final_dir)
        adapter = load_file(os.path.join(saved, "adapter_model.safetensors"))
        assert any("lora_B" in k for k in adapter)
        value_model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1),
                                                saved).merge_and_unload()
    else:
        AutoModelForCausalLM.from_pretrained(result.final_dir)
        value_model = AutoModelForSequenceClassification.from_pretrained(saved)
    assert not torch.equal(value_model.score.weight, start)        # the value model trained


def test_a_value_model_that_cannot_be_one_is_refused_before_training(tmp_path, capsys, tiny_model, prompts_file,
                                                                     rewards_file):
    argv = ["ppo", f"model_name_or_path={tiny_model}", f"dataset={prompts_file}", f"reward=python:{rewards_file}:constant",
            f"output_dir={tmp_path / 'out'}", "max_completion_length=4", "max_steps=1", "disable_tqdm=true"]
    assert main([*argv, f"value_model_name_or_path={tmp_path / 'missing' / 'model'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "value_model_name_or_path" in err and "no such directory" in err, err
    lora = run_ppo(_config(tmp_path, tiny_model, prompts_file, f"python:{rewards_file}:constant", use_lora=True, lora_r=2,
                           max_steps=1, output_dir=str(tmp_path / "lora")))
    assert main([*argv, f"value_model_name_or_path={lora.final_dir}"]) == 2      # a policy's adapter
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a CAUSAL_LM LoRA adapter" in err, err
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).save_pretrained(tmp_path / "clf")
    assert main([*argv, f"value_model_name_or_path={tmp_path / 'clf'}"]) == 2      # two labels
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a classifier with 2 labels" in err, err


def test_two_processes_with_a_value_model_equal_one_with_doubled_accumulation(tmp_path, tiny_model, prompts_file,
                                                                              rewards_file, seeded_reward_model):
    """The value model runs outside the data-parallel wrapper's forward; its gradients must still be
    averaged over processes, like the policy's."""
    from safetensors.torch import load_file

    from tests.conftest import online_worker_pair

    a, b = online_worker_pair(tmp_path, 29542, tiny_model, prompts_file, f"python:{rewards_file}:even_tokens",
                              seeded_reward_model)
    assert a["reward"] == pytest.approx(b["reward"], abs=1e-6)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    for name in ("model.safetensors", "value_model/model.safetensors"):
        wa = load_file(os.path.join(tmp_path, "ddp", "final", name))
        wb = load_file(os.path.join(tmp_path, "single", "final", name))
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=0)


# ------------------------------------------------------------------ several completions per prompt


def test_several_completions_per_prompt_are_refused_in_one_line_everywhere(tmp_path, capsys, tiny_model, prompts_file,
                                                                           rewards_file):
    """PPO's baseline is its value estimate, so one completion per prompt: num_generations=4 must be
    refused before anything loads, from the command line, a pipeline stage and RLHFPipeline alike."""
    from vietnamese_ai.errors import ConfigError
    from vietnamese_ai.vietnamese_api import RLHFPipeline

    argv = ["ppo", f"model_name_or_path={tiny_model}", f"dataset={prompts_file}", f"reward=python:{rewards_file}:constant",
            f"output_dir={tmp_path / 'out'}", "max_steps=1", "disable_tqdm=true", "num_generations=4"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "num_generations" in err and "one completion per prompt" in err, err
    assert "grpo" in err and "(got 4)" in err, err
    assert not (tmp_path / "out").exists()

    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"output_dir: {tmp_path / 'run'}\nstages:\n  ppo:\n    model_name_or_path: {tiny_model}\n"
                        f"    dataset: {prompts_file}\n    reward: python:{rewards_file}:constant\n"
                        f"    num_generations: 4\n", encoding="utf-8")
    assert main(["pipeline", "run", str(pipeline)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stage 'ppo'" in err and "num_generations" in err, err
    assert "one completion per prompt" in err and not (tmp_path / "run").exists(), err

    with pytest.raises(ConfigError, match="num_generations.*one completion per prompt"):
        RLHFPipeline(rlhf="ppo", ppo_config={"num_generations": 4})
    assert PPOConfig(num_generations=1).num_generations == 1      # saying the default aloud is fine


@pytest.mark.parametrize("kind,fragment", [("missing", "no such directory"), ("empty", "not a model"),
                                           ("file", "is a file"), ("not a model", "not a model")])
def test_a_value_model_that_is_not_there_is_found_before_the_policy_loads(tmp_path, monkeypatch, tiny_model,
                                                                          prompts_file, rewards_file, kind, fragment):
    import vietnamese_ai.recipes.common as common
    from vietnamese_ai.errors import UserError

    path = tmp_path / "value"
    if kind == "empty":
        path.mkdir()
    elif kind == "file":
        path.write_text("{}", encoding="utf-8")
    elif kind == "not a model":
        path.mkdir()
        (path / "notes.txt").write_text("a directory, but no model in it", encoding="utf-8")

    def no_policy(*args, **kwargs):
        raise AssertionError("the policy was loaded before the value model was checked")

    monkeypatch.setattr(common, "load_policy", no_policy)
    monkeypatch.setattr(common, "load_causal_lm", no_policy)
    config = _config(tmp_path, tiny_model, prompts_file, f"python:{rewards_file}:constant", value_model_name_or_path=str(path))
    with pytest.raises(UserError) as error:
        run_ppo(config)
    message = str(error.value)
    assert message.startswith("value_model_name_or_path: ") and str(path) in message and fragment in message, message
    assert "\n" not in message


# ------------------------------------------------------------------------------ rollouts, steps and epochs


def test_max_rollouts_with_the_recipe_names_runs_that_many_rollouts(tmp_path, caplog, tiny_model, prompts_file,
                                                                   rewards_file):
    """The original recipe's names: batch_size=4 completions per rollout, mini_batch_size=2 per
    optimizer step, ppo_epochs=2 passes: 4 / 2 x 2 = 4 optimizer steps per rollout. max_rollouts=3 is
    3 rollouts (12 optimizer steps), said at start-up; 8 prompts make 2 rollouts of 4 per epoch, so
    step s is at epoch s / 8."""
    import logging

    from tests.conftest import read_jsonl

    config = PPOConfig(model_name=tiny_model, dataset=prompts_file, reward=f"python:{rewards_file}:even_tokens",
                       batch_size=4, mini_batch_size=2, ppo_epochs=2, max_rollouts=3, max_new_tokens=4,
                       output_dir=str(tmp_path / "run"), logging_steps=1, save_steps=0, disable_tqdm=True)
    with caplog.at_level(logging.INFO, logger="vietnamese_ai"):
        result = run_ppo(config)
    assert result.global_step == 12
    sampled = [r["step"] for r in result.history if "reward" in r]            # rollout statistics: one set per rollout
    assert sampled == [1, 5, 9], sampled
    assert sorted({row["step"] for row in read_jsonl(tmp_path / "run" / "completions.jsonl")}) == [1, 5, 9]
    logged = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in logged] == [round(s / 8, 4) for s in range(1, 13)]
    assert logged[3]["epoch"] == 0.5 and logged[-1]["epoch"] == 1.5        # rollout 1 of 2 per epoch; 3 rollouts
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ppo: 3 rollouts")]
    assert lines == ["ppo: 3 rollouts x 4 optimizer steps each = 12 optimizer steps; a rollout: 4 prompts x "
                     "1 completion on 1 process, 2 optimizer steps per pass x 2 passes; 1.5 epochs of 8 prompts"], \
        [r.getMessage() for r in caplog.records]


def test_the_start_up_line_and_a_run_that_stops_inside_a_rollout(caplog):
    """max_rollouts becomes the max_steps it amounts to; a max_steps or num_train_epochs that ends
    inside a rollout is said (GRPO and RLOO share the engine, and the line)."""
    import logging

    from vietnamese_ai.recipes.grpo import GRPOConfig
    from vietnamese_ai.recipes.online import RolloutShape, plan_rollouts

    recipe = PPOConfig(batch_size=4, mini_batch_size=2, ppo_epochs=2).resolved()
    shape = RolloutShape.of(recipe, 1)
    assert (shape.prompts, shape.steps_per_rollout) == (4, 4)
    with caplog.at_level(logging.INFO, logger="vietnamese_ai"):
        planned = plan_rollouts(recipe.model_copy(update={"max_rollouts": 5}), shape, 8, "ppo")
        assert (planned.max_steps, planned.max_rollouts) == (20, None)
        plan_rollouts(recipe.model_copy(update={"max_steps": 10}), shape, 8, "ppo")
        plan_rollouts(recipe.model_copy(update={"num_train_epochs": 0.75}), shape, 8, "ppo")   # 6 of 2 x 4 steps
        grpo = GRPOConfig(per_device_train_batch_size=8, num_generations=4, gradient_accumulation_steps=2,
                          steps_per_generation=4, num_iterations=3)
        plan_rollouts(grpo, RolloutShape.of(grpo, 2), 40, "grpo")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("ppo: 5 rollouts x 4 optimizer steps each = 20 optimizer steps;"), messages
    assert messages[0].endswith("2.5 epochs of 8 prompts"), messages
    assert messages[1].startswith("ppo: 3 rollouts x 4 optimizer steps each, the last cut to 2 = 10 optimizer steps;")
    assert messages[2] == ("max_steps=10 stops rollout 3 after 2 of its 4 optimizer steps (max_steps counts optimizer "
                           "steps; max_rollouts counts rollouts)")
    assert messages[4].startswith("num_train_epochs=0.75 stops rollout 2 after 2 of its 4"), messages
    # GRPO: 8 x 4 / 4 = 8 prompts per rollout on each of 2 processes, 40 prompts = 2 rollouts per epoch;
    # 4 micro-batches / 2 accumulation = 2 optimizer steps per pass x 3 passes; num_train_epochs=3: 6 rollouts
    assert messages[5] == ("grpo: 6 rollouts x 6 optimizer steps each = 36 optimizer steps; a rollout: 8 prompts x "
                           "4 completions on each of 2 processes, 2 optimizer steps per pass x 3 passes; "
                           "3 epochs of 40 prompts"), messages
