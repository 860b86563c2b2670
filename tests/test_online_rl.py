"""The online-RL engine and GRPO/RLOO on a tiny model: layouts, ratios, rewards, learning, resuming,
and bad input."""

import os

import pytest
import torch

from tests.conftest import QUESTIONS, online_worker_pair, read_jsonl, write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.data.rollout import Rollout, rollout_batch
from vietnamese_ai.data.tokenize import prompt_ids
from vietnamese_ai.data.types import Message
from vietnamese_ai.models.forward import canonical_order, scaled_target_logps
from vietnamese_ai.models.loading import disable_dropout, load_causal_lm, load_tokenizer
from vietnamese_ai.models.sampling import sample_completions
from vietnamese_ai.recipes.grpo import GRPOConfig, run_grpo
from vietnamese_ai.recipes.rloo import RLOOConfig, run_rloo

def _config(cls, tmp_path, tiny_model, prompts_file, reward, **kw):
    values = dict(model_name_or_path=tiny_model, dataset=prompts_file, reward=reward, output_dir=str(tmp_path / "run"),
                  num_generations=4, per_device_train_batch_size=8, max_completion_length=10, learning_rate=5e-2,
                  lr_scheduler_type="constant", max_steps=4, logging_steps=1, save_steps=0, disable_tqdm=True, seed=1)
    values.update(kw)
    return cls(**values)


def _sampled_rollout(tiny_model, prompts=3, group=3, max_new_tokens=7):
    model, tokenizer = load_causal_lm(tiny_model), load_tokenizer(tiny_model)
    ids = [prompt_ids(tokenizer, [Message("user", q)]) for q in QUESTIONS[:prompts]]
    samples = sample_completions(model, ids, group, list(range(prompts * group)), max_new_tokens,
                                 tokenizer.eos_token_id, tokenizer.pad_token_id)
    rollout = Rollout(group, ids, [s.token_ids for s in samples], [s.finished for s in samples],
                      [0.0] * len(samples), [0.0] * len(samples), [list(range(len(samples)))])
    return model, tokenizer, rollout


@pytest.mark.parametrize("cache_prompts", [False, True])
def test_shared_prompt_trunk_gives_the_log_probs_of_separate_sequences(tiny_model, cache_prompts):
    """Both ways of computing each prompt once (branches of one row; completions on the prompt's KV
    cache) give the per-token log-probs, and the gradients, of G separate sequences."""
    from vietnamese_ai.models.prompt_cache import rollout_logps

    model, tokenizer, rollout = _sampled_rollout(tiny_model)
    indices = list(range(len(rollout.completion_ids)))
    shared = rollout_batch(rollout, indices, pack=True, share=True, pad_token_id=0, pair_cost=0.0, count_tokens=True,
                           mask_truncated=False, cache_prompts=cache_prompts)
    plain = rollout_batch(rollout, indices, pack=False, share=False, pad_token_id=0, pair_cost=0.0, count_tokens=True,
                          mask_truncated=False)
    model.eval()
    a = rollout_logps(model, shared, 0.7)[0][torch.argsort(shared.target_groups, stable=True)]
    grad_a = torch.autograd.grad(a.sum(), model.model.embed_tokens.weight)[0]
    b = scaled_target_logps(model, plain, 0.7)[0][canonical_order(plain)]
    grad_b = torch.autograd.grad(b.sum(), model.model.embed_tokens.weight)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_a, grad_b, atol=1e-5, rtol=1e-4)
    assert a.numel() == sum(len(c) for c in rollout.completion_ids)    # every completion token, the first included


def test_sampling_does_not_depend_on_batching_and_falls_back_to_generate_identically(tiny_model, monkeypatch):
    import vietnamese_ai.models.sampling as sampling

    model, tokenizer = load_causal_lm(tiny_model), load_tokenizer(tiny_model)
    ids = [prompt_ids(tokenizer, [Message("user", q)]) for q in QUESTIONS[:5]]
    kwargs = dict(group=3, seeds=list(range(100, 115)), max_new_tokens=9, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, temperature=0.9, top_k=40, top_p=0.95)
    together = sample_completions(model, ids, batch_size=5, **kwargs)
    one_by_one = sample_completions(model, ids, batch_size=1, **kwargs)
    # a prompt's completions depend on their seeds only: the last two prompts alone sample the same
    alone = sample_completions(model, ids[3:], **{**kwargs, "seeds": kwargs["seeds"][9:]})
    monkeypatch.setattr(sampling, "_decode_loop", lambda *a, **k: (_ for _ in ()).throw(NotImplementedError("test")))
    through_generate = sample_completions(model, ids, batch_size=2, **kwargs)
    tokens = [c.token_ids for c in together]
    assert tokens == [c.token_ids for c in one_by_one] == [c.token_ids for c in through_generate]
    assert tokens[9:] == [c.token_ids for c in alone]


@pytest.mark.parametrize("cache_prompts", [False, True])
def test_the_first_pass_over_a_fresh_rollout_has_ratio_exactly_one(tmp_path, tiny_dropout_model, prompts_file,
                                                                    rewards_file, cache_prompts):
    """With two passes per rollout the sampling policy's log-probs are computed at rollout time; on
    the first pass the policy has not moved, so they must equal the training forward's bit for bit
    (dropout is off), and nothing is clipped."""
    from accelerate import Accelerator

    from vietnamese_ai.recipes.grpo import GRPO, grpo_loss_fn
    from vietnamese_ai.recipes.online import RolloutSource, build_rewards, tokenize_prompts
    from vietnamese_ai.data.loading import load_records
    from vietnamese_ai.training.checkpoint import TrainerState

    config = _config(GRPOConfig, tmp_path, tiny_dropout_model, prompts_file, f"python:{rewards_file}:even_tokens",
                     num_iterations=2)
    model, tokenizer = load_causal_lm(tiny_dropout_model), load_tokenizer(tiny_dropout_model)
    disable_dropout(model)
    source = RolloutSource(config, tokenize_prompts(load_records(prompts_file), tokenizer, None), tokenizer,
                           build_rewards(config), GRPO(config), None, True, True, tokenizer.pad_token_id, 0.0)
    source.cache_prompts = cache_prompts
    source.setup(Accelerator(cpu=True))
    source.attach(model.train(), str(tmp_path), None)
    step = source.next_step(TrainerState())
    batch = step.batches[0]
    from vietnamese_ai.models.prompt_cache import rollout_logps

    logps = rollout_logps(model, batch, config.temperature)[0]            # training mode, with gradients
    assert torch.equal(logps.detach(), batch.extras["rollout"].old_logps)
    output = grpo_loss_fn(config)(model, batch)
    assert float(output.metrics["clip_ratio/region_mean"][0]) == 0.0


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_a_tiny_model_learns_to_raise_its_reward(tmp_path, tiny_model, prompts_file, rewards_file, method):
    cls, run = (GRPOConfig, run_grpo) if method == "grpo" else (RLOOConfig, run_rloo)
    result = run(_config(cls, tmp_path, tiny_model, prompts_file, f"python:{rewards_file}:even_tokens", max_steps=24,
                         logging_steps=4))
    rewards = result.series("reward")
    assert rewards[-1] > rewards[0] + 0.15, rewards
    assert os.path.isfile(os.path.join(result.final_dir, "model.safetensors"))
    row = result.history[-1]
    for key in ("loss", "reward", "reward_std", "entropy", "clip_ratio/region_mean", "completions/mean_length",
                "completions/min_length", "completions/max_length", "completions/clipped_ratio",
                "frac_reward_zero_std", "time/generation", "time/scoring"):
        assert key in row, key
    logged = read_jsonl(os.path.join(result.output_dir, "completions.jsonl"))
    assert logged and {"step", "prompt", "completion", "reward", "advantage", "rewards"} <= set(logged[0])


def test_rewards_get_the_data_set_columns_and_several_rewards_are_weighted(tmp_path, tiny_model, prompts_file,
                                                                           rewards_file):
    result = run_grpo(_config(GRPOConfig, tmp_path, tiny_model, prompts_file,
                              [f"python:{rewards_file}:sees_columns", f"python:{rewards_file}:constant"],
                              reward_weights=[2.0, 0.5], max_steps=1, learning_rate=0.0))
    row = result.history[0]
    # constant 1 x 0.5 plus 2 x [topic == geo]
    assert row["reward"] == pytest.approx(0.5 + 2 * row["rewards/sees_columns/mean"])
    assert row["rewards/constant/mean"] == 1.0


def test_reward_weights_make_a_weighted_sum_with_zero_and_negative_weights(tmp_path, tiny_model, prompts_file,
                                                                         rewards_file):
    """a@w+b@v is w*a + v*b (TRL's reward_weights), a Python reward takes '@w' like a scorer, and an
    entry's reward_weights multiplies its parts: here 3 x (2 x constant - 0.5 x even_tokens) + 0 x rules."""
    from vietnamese_ai.recipes.online import build_rewards

    rewards = [f"python:{rewards_file}:constant@2+python:{rewards_file}:even_tokens@-0.5", "constitution@0"]
    config = _config(GRPOConfig, tmp_path, tiny_model, prompts_file, rewards, reward_weights=[3.0, 1.0], max_steps=1,
                     learning_rate=0.0)
    assert [(t.name, t.weight) for t in build_rewards(config)] == [("constant", 6.0), ("even_tokens", -1.5),
                                                                   ("constitution", 0.0)]
    row = run_grpo(config).history[0]
    assert row["rewards/constant/mean"] == 1.0 and 0 < row["rewards/even_tokens/mean"] < 1
    assert row["reward"] == pytest.approx(6.0 - 1.5 * row["rewards/even_tokens/mean"])
    assert "rewards/constitution/mean" in row     # a zero weight is computed and logged, not trained on
    same = build_rewards(_config(GRPOConfig, tmp_path, tiny_model, prompts_file, "constitution@2+constitution@2"))
    assert [t.weight for t in same] == [2.0, 2.0]


def test_reward_functions_may_return_numpy_and_torch_scalars_but_not_other_things():
    """TRL turns whatever a reward function returns into a float tensor, so numpy and torch scalars
    and booleans are numbers here too; text, lists, arrays and complex numbers are refused."""
    import math

    import numpy as np

    from vietnamese_ai.errors import TrainingError
    from vietnamese_ai.recipes.online import RewardInputs, RewardTerm, score_completions

    inputs = RewardInputs(prompts=[], completions=[], completion_ids=[], trainer_state=None, columns={}, prompt_ids=[],
                          texts=[], scorer_prompts=[])
    values = [np.float32(0.5), np.int64(2), np.bool_(True), False, torch.tensor(-0.25), np.float64(1.5), 3, None]
    terms = [RewardTerm("f", 1.0, lambda inputs: values), RewardTerm("one", 1.0, lambda inputs: [1.0] * len(values))]
    out = score_completions(terms, inputs, len(values), 1)
    assert out[:7, 0].tolist() == [0.5, 2.0, 1.0, 0.0, -0.25, 1.5, 3.0] and math.isnan(out[7, 0])
    for bad, shown in (("0.5", "'0.5'"), ([1.0], "[1.0]"), (np.array([1.0, 2.0]), "array"), (np.str_("1"), "'1'"),
                       (1j, "1j"), (np.float32("inf"), "inf"), (torch.tensor([1.0, 2.0]), "tensor")):
        term = RewardTerm("f", 1.0, lambda inputs, bad=bad: [1.0, bad])
        with pytest.raises(TrainingError, match="reward 'f' returned .* for completion 1 \\(at step 3\\); rewards must be "
                                                "finite numbers") as error:
            score_completions([term], inputs, 2, 3)
        assert shown in str(error.value)


def test_missing_eos_penalty_is_subtracted_from_cut_completions(tmp_path, tiny_model, prompts_file, rewards_file):
    result = run_grpo(_config(GRPOConfig, tmp_path, tiny_model, prompts_file, f"python:{rewards_file}:constant",
                              missing_eos_penalty=0.25, max_completion_length=3, max_steps=1, learning_rate=0.0))
    row = result.history[0]
    assert row["completions/clipped_ratio"] > 0
    assert row["reward"] == pytest.approx(1.0 - 0.25 * row["completions/clipped_ratio"])


def test_kl_to_the_reference_starts_at_zero(tmp_path, tiny_model, prompts_file, rewards_file):
    for cls, run in ((GRPOConfig, run_grpo), (RLOOConfig, run_rloo)):
        result = run(_config(cls, tmp_path, tiny_model, prompts_file, f"python:{rewards_file}:even_tokens",
                             beta=0.1, max_steps=2, output_dir=str(tmp_path / cls.__name__)))
        assert abs(result.history[0]["kl"]) < 1e-6 and result.history[1]["kl"] > 0


class CrashAt:
    def __init__(self, loss, calls):
        self.loss, self.left = loss, calls

    def __call__(self, model, batch):
        if self.left == 0:
            raise RuntimeError("simulated crash")
        self.left -= 1
        return self.loss(model, batch)


def test_an_online_run_resumed_from_the_middle_of_a_rollout_equals_the_uninterrupted_run(
        tmp_path, tiny_dropout_model, prompts_file, rewards_file, monkeypatch):
    import vietnamese_ai.recipes.grpo as grpo

    # Two passes over each rollout, two micro-batches per step: checkpoints after odd steps fall in the
    # middle of a rollout, so the rollout itself must come back from the checkpoint.
    common = dict(num_iterations=2, gradient_accumulation_steps=2, per_device_train_batch_size=4, max_steps=6,
                  save_steps=1, learning_rate=1e-2, beta=0.05)
    reward = f"python:{rewards_file}:even_tokens"
    full = run_grpo(_config(GRPOConfig, tmp_path, tiny_dropout_model, prompts_file, reward,
                            output_dir=str(tmp_path / "full"), **common))
    config = _config(GRPOConfig, tmp_path, tiny_dropout_model, prompts_file, reward, output_dir=str(tmp_path / "cut"),
                     **common)
    real = grpo.grpo_loss_fn
    monkeypatch.setattr(grpo, "grpo_loss_fn", lambda c: CrashAt(real(c), 2 * 3 + 1))   # dies inside step 4
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_grpo(config)
    monkeypatch.setattr(grpo, "grpo_loss_fn", real)
    resumed = run_grpo(config.model_copy(update={"resume_from_checkpoint": "latest"}))
    assert [(r["step"], r["loss"], r.get("reward")) for r in resumed.history] == \
        [(r["step"], r["loss"], r.get("reward")) for r in full.history]
    from safetensors.torch import load_file

    a, b = load_file(os.path.join(full.final_dir, "model.safetensors")), load_file(os.path.join(resumed.final_dir,
                                                                                                "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_equal_one_with_doubled_accumulation(tmp_path, tiny_model, prompts_file, rewards_file):
    a, b = online_worker_pair(tmp_path, 29541, tiny_model, prompts_file, f"python:{rewards_file}:even_tokens")
    assert a["reward"] == pytest.approx(b["reward"], abs=1e-6)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    from safetensors.torch import load_file

    wa = load_file(os.path.join(tmp_path, "ddp", "final", "model.safetensors"))
    wb = load_file(os.path.join(tmp_path, "single", "final", "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("reward, extra, fragments", [
    ("magic", [], ["reward: cannot read 'magic'"]),
    ("", [], ["key 'reward': empty"]),
    ("+", [], ["key 'reward': '+' has an empty part"]),
    ("constitution+", [], ["key 'reward': 'constitution+' has an empty part"]),
    ("constitution@", [], ["key 'reward': 'constitution@' has no weight after '@'"]),
    ("constitution@x", [], ["key 'reward': weight 'x' in 'constitution@x' is not a number"]),
    ("constitution@inf", [], ["key 'reward': weight 'inf' in 'constitution@inf' is not a finite number"]),
    ("@2", [], ["key 'reward': '@2' names nothing before '@'"]),
    ("constitution@0", [], ["reward: every weight is 0", "at least one must be non-zero"]),
    ("[constitution,constitution@2]", ["reward_weights=[0,0]"], ["reward: every weight is 0"]),
    ("python:{rewards}:constant@x", [], ["key 'reward': weight 'x' in 'python:"]),
    ("reward_model:{model}", [], ["reward: '{model}' has no trained reward head"]),
    ("reward_model:/nonexistent/rm", [], ["reward: reward model '/nonexistent/rm': no such directory"]),
    ("python:{rewards}:nope", [], ["defines no 'nope'", "even_tokens"]),
    ("python:/nonexistent/r.py:f", [], ["file '/nonexistent/r.py' not found"]),
    ("python:{rewards}:raises", [], ["reward 'raises' raised ValueError: the judge is down", "step 1"]),
    ("python:{rewards}:too_few", [], ["reward 'too_few' returned 1 values for 8 completions"]),
    ("python:{rewards}:not_a_number", [], ["reward 'not_a_number' returned nan for completion 0"]),
    ("python:{rewards}:constant", ["per_device_train_batch_size=6"], ["not a multiple of num_generations=4"]),
    ("python:{rewards}:constant", ["steps_per_generation=3", "gradient_accumulation_steps=2"],
     ["steps_per_generation: 3", "not a multiple of gradient_accumulation_steps=2"]),
    ("python:{rewards}:constant", ["num_generations=1"], ["key 'num_generations'"]),
    ("python:{rewards}:constant", ["scale_rewards=sometimes"], ["key 'scale_rewards'"]),
])
def test_bad_online_input_is_one_line(tmp_path, capsys, tiny_model, prompts_file, rewards_file, reward, extra,
                                      fragments):
    argv = ["grpo", f"model_name_or_path={tiny_model}", f"dataset={prompts_file}",
            f"reward={reward.format(rewards=rewards_file, model=tiny_model)}",
            f"output_dir={tmp_path / 'out'}", "num_generations=4", "per_device_train_batch_size=8",
            "max_completion_length=4", "max_steps=1", "disable_tqdm=true", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vietnamese-ai: error:"), err
    for fragment in fragments:
        assert fragment.format(model=tiny_model) in err, err


def test_a_prompt_record_without_a_prompt_is_named_before_the_model_loads(tmp_path, capsys, rewards_file):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}, {"question": "y"}])
    assert main(["rloo", "model_name_or_path=/nonexistent/model", f"dataset={data}",
                 f"reward=python:{rewards_file}:constant", f"output_dir={tmp_path / 'o'}"]) == 2
    assert "p.jsonl: line 2: field 'prompt': missing" in capsys.readouterr().err


def test_a_reward_model_with_the_policys_tokenizer_reads_the_sampled_ids(tiny_model, seeded_reward_model):
    """Where text round-trips, the ids path equals the text path; where it does not (the same text
    from other ids), the ids path scores the ids actually given."""
    from vietnamese_ai.recipes.online import RewardInputs, RewardTerm, read_sampled_ids
    from vietnamese_ai.scoring.reward_model import RewardModelScorer

    tokenizer = load_tokenizer(tiny_model)
    scorer = RewardModelScorer(seeded_reward_model)
    prompts = [[Message("user", q)] for q in QUESTIONS[:4]]
    texts = ["Thủ đô của Việt Nam là Hà Nội.", "AI is a field of study.", "Xin chào bạn", "Hello"]
    ids = [tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id] for t in texts]
    by_ids = scorer.rewards_of_ids([prompt_ids(tokenizer, p) for p in prompts], ids)
    assert by_ids == pytest.approx(scorer.rewards(prompts, texts), abs=1e-5)
    cut = scorer.rewards_of_ids([prompt_ids(tokenizer, p) for p in prompts], [i[:-1] for i in ids])   # no EOS sampled
    assert cut == pytest.approx(by_ids, abs=1e-5)   # EOS is appended, as the text path appends it
    # as sampled: read at the last sampled token, as transformers' own pooling reads the cut sequence
    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(seeded_reward_model).eval()
    as_sampled = scorer.rewards_of_ids([prompt_ids(tokenizer, p) for p in prompts], [i[:-1] for i in ids], append_eos=False)
    with torch.no_grad():
        by_hand = [float(plain(torch.tensor([prompt_ids(tokenizer, p) + i[:-1]])).logits[0, 0]) for p, i in zip(prompts, ids)]
    assert as_sampled == pytest.approx(by_hand, abs=1e-5) and max(abs(a - b) for a, b in zip(as_sampled, cut)) > 1e-3

    # The same text spelled in single characters: other ids, which the text path cannot tell apart.
    spelled = [[t for ch in text for t in tokenizer.encode(ch, add_special_tokens=False)] + [tokenizer.eos_token_id]
               for text in texts]
    assert [tokenizer.decode(s, skip_special_tokens=True) for s in spelled] == texts and spelled != ids
    other = scorer.rewards_of_ids([prompt_ids(tokenizer, p) for p in prompts], spelled)
    assert max(abs(a - b) for a, b in zip(other, by_ids)) > 1e-4

    terms = [RewardTerm("rm", 1.0, lambda inputs: "text", scorer)]
    read_sampled_ids(terms, tokenizer)
    # the text path is never read: texts and scorer prompts that would give other values
    inputs = RewardInputs(prompts=[], completions=[], completion_ids=spelled, trainer_state=None, columns={},
                          prompt_ids=[prompt_ids(tokenizer, p) for p in prompts], texts=["x"] * 4, scorer_prompts=["y"] * 4)
    assert terms[0].compute(inputs) == pytest.approx(other)
    # the engine's default reads a cut completion as sampled; reward_cut_completions=with_eos appends EOS
    inputs.completion_ids = [i[:-1] for i in ids]
    assert terms[0].compute(inputs) == pytest.approx(as_sampled, abs=1e-6)
    read_sampled_ids(terms, tokenizer, append_eos=True)
    assert terms[0].compute(inputs) == pytest.approx(cut, abs=1e-6)


def test_a_reward_model_with_another_tokenizer_reads_the_text(tiny_model, seeded_reward_model, tmp_path):
    from vietnamese_ai.models.tiny import build_tiny_model
    from vietnamese_ai.recipes.online import RewardTerm, read_sampled_ids
    from vietnamese_ai.scoring.reward_model import RewardModelScorer

    other = build_tiny_model(str(tmp_path / "other"), ["một hai ba", "one two three"] * 20, vocab_size=300,
                             hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2, max_position_embeddings=64)
    text_path = lambda inputs: "text"   # noqa: E731
    terms = [RewardTerm("rm", 1.0, text_path, RewardModelScorer(seeded_reward_model))]
    read_sampled_ids(terms, load_tokenizer(other))
    assert terms[0].compute is text_path
