"""Many architectures, each a tiny random model: packing and prefix sharing are either exact or
switched off (never silently wrong), sliding windows are built into the masks, and LoRA's defaults
work on mixture-of-experts models."""

import logging

import pytest
import torch

from tests.conftest import write_jsonl
from tests.test_dpo_family import separable_pairs
from vietnamese_ai.data.layout import IGNORE, Piece, layout, sft_sequence
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.models.exactness import choose_layout, layout_support
from vietnamese_ai.models.forward import ordered_token_logps
from vietnamese_ai.models.loading import load_tokenizer
from vietnamese_ai.models.lora import apply_lora
from vietnamese_ai.models.reward import sequence_rewards
from vietnamese_ai.recipes.dpo import DPOConfig, run_dpo
from vietnamese_ai.recipes.sft import SFTConfig, run_sft

WINDOW = 5
BASE = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            head_dim=16, max_position_embeddings=256, tie_word_embeddings=False)
MOE = dict(num_experts=4, num_local_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
           shared_expert_intermediate_size=32, router_jitter_noise=0.0, decoder_sparse_step=1, mlp_only_layers=[])
# name -> (config overrides, attention kernel, which layouts must be exact: pack, share)
ARCHITECTURES = {
    "llama": ({}, "sdpa", (True, True)),
    "gpt2": (dict(n_embd=64, n_layer=2, n_head=4, n_positions=256), "sdpa", (True, True)),
    "mistral": (dict(sliding_window=WINDOW), "sdpa", (True, True)),
    "qwen2": (dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=2), "sdpa", (True, True)),
    "gemma3_text": (dict(sliding_window=WINDOW, query_pre_attn_scalar=16,
                         layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]),
                    "sdpa", (True, True)),
    "gemma2": (dict(sliding_window=WINDOW, query_pre_attn_scalar=16, layer_types=["sliding_attention", "full_attention"] * 2),
               "eager", (True, True)),
    "phi3": (dict(sliding_window=WINDOW), "eager", (True, True)),
    "mixtral": ({**MOE, "sliding_window": WINDOW}, "sdpa", (True, True)),
    # ALiBi by key column: packing is exact, a shared branch sits at the wrong distance from its prompt
    "mpt": (dict(d_model=64, n_layers=2, n_heads=4, max_seq_len=256, expansion_ratio=2), "eager", (True, False)),
    # local attention windows by column index, on top of any mask
    "gpt_neo": (dict(num_heads=4, attention_types=[[["global", "local"], 2]], window_size=WINDOW),
                "eager", (True, False)),
    # rejects 4-D masks (ALiBi built from a 2-D mask)
    "bloom": (dict(n_embed=64, n_layer=2, n_head=4), "eager", (False, False)),
}


def tiny(name, vocab=128, **overrides):
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    extra, attn, _ = ARCHITECTURES.get(name, ({}, "sdpa", None))
    config = CONFIG_MAPPING[name](**{**BASE, "vocab_size": vocab, "pad_token_id": 0, **extra, **overrides})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32)
    with torch.no_grad():  # random init is close to uniform; larger weights make any error show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _tokens(n, seed):
    return torch.randint(3, 128, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _exact(model, candidate, plain, measure=ordered_token_logps):
    with torch.no_grad():
        try:
            got = measure(model, candidate)
        except Exception:
            return False
        return float((got - measure(model, plain)).abs().max()) < 1e-4


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_the_probe_finds_exactly_the_layouts_a_model_computes_exactly(name):
    """On sequences longer than the window (other than the probe's own), a layout the probe accepts
    gives the plain sequences' log-probs; a layout it refuses really is inexact."""
    model = tiny(name)
    support = layout_support(model, longest=40)
    want_pack, want_share = ARCHITECTURES[name][2]
    assert (support.pack, support.share) == (want_pack, want_share), support.problems
    plain = [sft_sequence(t, t, group=g) for g, t in enumerate([_tokens(23, 1), _tokens(17, 2), _tokens(9, 3)])]
    assert _exact(model, layout(plain, pack=True), layout(plain, pack=False)) == support.pack
    shared, unshared = [], []
    for g, (p, a, b) in enumerate([(9, 14, 8), (6, 11, 15)]):
        prompt, first, second = _tokens(p, 10 + g), _tokens(a, 20 + g), _tokens(b, 30 + g)
        shared.append([Piece(prompt, [IGNORE] * p), Piece(first, first, 1, 2 * g), Piece(second, second, 2, 2 * g + 1)])
        unshared += [[Piece(prompt, [IGNORE] * p), Piece(first, first, 0, 2 * g)],
                     [Piece(prompt, [IGNORE] * p), Piece(second, second, 0, 2 * g + 1)]]
    plain_pairs = layout(unshared, pack=False, num_groups=4)
    assert _exact(model, layout(shared, pack=False, num_groups=4), plain_pairs) == support.share
    assert _exact(model, layout(shared, pack=True, num_groups=4), plain_pairs) == support.both


def test_a_window_shorter_than_the_sequences_is_built_into_the_mask():
    """Regression: a ready 4-D mask bypassed Mistral's sliding window, so packed rows attended further
    back than the model does in use (max error ~1 nat per token before the fix)."""
    model = tiny("mistral")
    sequences = [sft_sequence(t, t, group=g) for g, t in enumerate([_tokens(30, 4), _tokens(21, 5)])]
    packed, plain = layout(sequences, pack=True), layout(sequences, pack=False)
    with torch.no_grad():
        error = (ordered_token_logps(model, packed) - ordered_token_logps(model, plain)).abs().max()
    assert float(error) < 1e-5


def test_choose_layout_switches_off_only_what_is_inexact_and_says_why(caplog):
    caplog.set_level(logging.WARNING, logger="vietnamese_ai")
    assert choose_layout([tiny("mpt")], True, True, longest=40) == (True, False)
    assert "prefix sharing switched off" in caplog.text and "packing" not in caplog.text.split("switched off")[0]
    assert choose_layout([tiny("llama"), tiny("bloom")], True, True, longest=40) == (False, False)  # the reference too


def test_the_probe_covers_the_reward_head():
    """A sequence-classification head whose forward drops position_ids: positions then count columns.
    Rotary embeddings depend on distances only, so packing stays exact, but a shared rejected branch
    sits further from its prompt than it would alone: the probe must see this through the head."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    class DropsPositions(Qwen2ForSequenceClassification):
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    config = Qwen2Config(**{**BASE, "vocab_size": 128, "pad_token_id": 0, "num_labels": 1})
    torch.manual_seed(0)
    good, bad = Qwen2ForSequenceClassification(config).eval(), DropsPositions(config).eval()
    assert layout_support(good, sequence_rewards, longest=40).pack
    support = layout_support(bad, sequence_rewards, longest=40)
    assert support.pack and not support.share and not support.both


def _saved(tmp_path, name, tiny_model, **overrides):
    tokenizer = load_tokenizer(tiny_model)
    model = tiny(name, vocab=len(tokenizer), **overrides)
    model.config.eos_token_id, model.config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    path = str(tmp_path / name)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_dpo_on_a_sliding_window_model_keeps_both_layouts_and_is_exact(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("VIETNAMESE_AI_CACHE", str(tmp_path / "cache"))
    path = _saved(tmp_path, "mistral", tiny_model, sliding_window=4)
    data = write_jsonl(tmp_path / "pairs.jsonl", separable_pairs(8))
    rows = {}
    for name, options in (("shared", {}), ("plain", dict(packing=False, prefix_sharing=False))):
        rows[name] = run_dpo(DPOConfig(model_name_or_path=path, dataset=data, output_dir=str(tmp_path / name),
                                       max_steps=1, per_device_train_batch_size=8, save_steps=0, disable_tqdm=True,
                                       **options)).history[0]
    for key in ("loss", "logps/chosen", "logps/rejected"):
        assert rows["shared"][key] == pytest.approx(rows["plain"][key], abs=1e-4), key


@pytest.mark.parametrize("name", ["mixtral", "qwen3_moe"])
def test_lora_defaults_work_on_mixture_of_experts_models(tmp_path, tiny_model, sft_file, name):
    """Regression: the default targets failed with an error blaming lora_target_modules, while PEFT
    refused lora_dropout on the fused expert weights."""
    path = _saved(tmp_path, name, tiny_model, **MOE)
    result = run_sft(SFTConfig(model_name_or_path=path, dataset=sft_file, output_dir=str(tmp_path / "run"),
                               use_lora=True, max_steps=2, save_steps=0, disable_tqdm=True))
    trained = {n for n, p in result.model.named_parameters() if p.requires_grad}
    assert any("experts" in n for n in trained)                      # the experts are adapted...
    assert not any("gate." in n and "gate_up" not in n and "lora" in n for n in trained)   # ...the router is not
    with pytest.raises(ConfigError, match="^lora_dropout: must be 0"):
        apply_lora(tiny(name, **MOE), dropout=0.1)


def test_lora_defaults_are_unchanged_on_dense_models():
    model = apply_lora(tiny("llama"))
    config = model.peft_config["default"]
    assert config.lora_dropout == 0.05 and not config.target_parameters
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} == \
        {n.rpartition(".")[2] for n in config.target_modules}


def test_dropout_kept_as_plain_floats_is_switched_off_too(tmp_path, tiny_model, monkeypatch):
    """Regression: OPT keeps its dropout rates as floats on its modules (dropout, activation_dropout)
    rather than nn.Dropout modules; left on, DPO's first-step rewards were about 0.07 instead of 0
    (the policy ran with dropout, the precomputed reference without)."""
    monkeypatch.setenv("VIETNAMESE_AI_CACHE", str(tmp_path / "cache"))
    path = _saved(tmp_path, "opt", tiny_model, ffn_dim=128, word_embed_proj_dim=64, dropout=0.1, activation_dropout=0.1)
    data = write_jsonl(tmp_path / "pairs.jsonl", separable_pairs(8))
    first = run_dpo(DPOConfig(model_name_or_path=path, dataset=data, output_dir=str(tmp_path / "dpo"), max_steps=1,
                              per_device_train_batch_size=8, save_steps=0, disable_tqdm=True)).history[0]
    assert abs(first["rewards/chosen"]) < 1e-5 and abs(first["rewards/rejected"]) < 1e-5


@pytest.mark.parametrize("name", ["llama", "mistral", "gemma2", "mpt", "bloom", "gpt2"])
def test_completions_on_a_cached_prompt_equal_plain_sequences(name):
    """Online RL's prompt cache: exact on models whose prefix sharing is not (ALiBi, column windows),
    since cached decoding is every model's own path."""
    from vietnamese_ai.data.rollout import Rollout, cached_prompt_batch, completion_sequences
    from vietnamese_ai.models.exactness import prompt_cache_support
    from vietnamese_ai.models.prompt_cache import rollout_logps

    model = tiny(name)
    assert prompt_cache_support(model, longest=40)
    rollout = Rollout(2, [_tokens(17, 1), _tokens(9, 2)], [_tokens(21, 3), _tokens(5, 4), _tokens(13, 5), _tokens(24, 6)],
                      [True] * 4, [0.0] * 4, [0.0] * 4, [[0, 1, 2, 3]])
    with torch.no_grad():
        got = rollout_logps(model, cached_prompt_batch(rollout, [0, 1, 2, 3], 0))[0]
        want = ordered_token_logps(model, layout(completion_sequences(rollout, [0, 1, 2, 3], False), pack=False,
                                                 num_groups=4))
    assert float((got - want).abs().max()) < 1e-5
