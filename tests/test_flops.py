"""Model FLOPs utilisation: the FLOPs of eq. (1) in training/flops.py derived by hand from a tiny Qwen2
config (full and LoRA), the visible-key count against the layout's own attention mask, the cached CPU
peak, a real SFT run's logged mfu and its mean in run.json, and bad peak_flops values."""

import json
import os

import pytest
import torch

from tests.conftest import read_jsonl
from vietnamese_ai.data.layout import Piece, attention_allowed, layout, sft_sequence
from vietnamese_ai.data.loading import load_records
from vietnamese_ai.data.tokenize import prepare_sft
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.models.loading import load_tokenizer
from vietnamese_ai.models.lora import apply_lora
from vietnamese_ai.recipes.grpo import GRPOConfig, run_grpo
from vietnamese_ai.recipes.sft import SFTConfig, run_sft
from vietnamese_ai.training import flops

V, D, LAYERS, HEADS, KV_HEADS, FF = 320, 32, 2, 4, 2, 128
HEAD_DIM = D // HEADS                   # 8


def _tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=V, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         num_key_value_heads=KV_HEADS, intermediate_size=FF, tie_word_embeddings=True)
    return Qwen2ForCausalLM(config)


def _batch():
    """Two documents packed in one row (lengths 3 and 2, every token a target but the first of each)."""
    sequences = [sft_sequence([5, 6, 7], [-100, 6, 7], group=0), sft_sequence([8, 9], [-100, 9], group=1)]
    return layout(sequences, pack=True)


# Per layer: q (D x HEADS*HEAD_DIM) + k, v (D x KV_HEADS*HEAD_DIM each) + o + gate, up, down (D x FF each).
BODY = LAYERS * (D * HEADS * HEAD_DIM + 2 * D * KV_HEADS * HEAD_DIM + HEADS * HEAD_DIM * D + 3 * D * FF)
HEAD = V * D                            # the lm_head matmul, counted although tied to the embeddings


def test_full_fine_tuning_flops_by_hand():
    """32*32 + 2*32*16 + 32*32 + 3*32*128 = 15360 per layer, N = 30720; head 320*32 = 10240.
    The batch: T = 5 tokens, K = 3 kept logits (the positions that predict 6, 7 and 9), visible keys
    (1 + 2 + 3) + (1 + 2) = 9. FLOPs = 6*30720*5 + 6*10240*3 + 12*2*32*9 = 921600 + 184320 + 6912."""
    shape = flops.model_shape(_tiny_qwen2())
    assert BODY == 30720 and HEAD == 10240
    assert shape == flops.ModelShape(trainable=BODY, frozen=0, head=HEAD, head_trainable=True, layers=LAYERS,
                                     attention_width=HEADS * HEAD_DIM)
    batch = _batch()
    assert (batch.num_tokens, int(batch.logits_mask.sum()), flops.visible_keys(batch)) == (5, 3, 9)
    assert flops.batch_flops(shape, batch) == 6 * 30720 * 5 + 6 * 10240 * 3 + 12 * 2 * 32 * 9 == 1112832


def test_lora_flops_by_hand():
    """LoRA r=4 on every Linear but the head adds r (in + out) weights per Linear, all trained:
    q, o 4*64, k, v 4*48, gate, up, down 4*160 -> 2816 per layer, 5632 in all. The base (30720) and the
    head get activation gradients only: 4 N_frozen + 6 N_adapters, not 6 N."""
    model = apply_lora(_tiny_qwen2(), r=4, alpha=8, dropout=0.0)
    adapters = LAYERS * (2 * 4 * (D + HEADS * HEAD_DIM) + 2 * 4 * (D + KV_HEADS * HEAD_DIM) + 3 * 4 * (D + FF))
    assert adapters == 5632
    shape = flops.model_shape(model)
    assert (shape.trainable, shape.frozen, shape.head, shape.head_trainable) == (adapters, BODY, HEAD, False)
    assert flops.batch_flops(shape, _batch()) == 5 * (6 * 5632 + 4 * 30720) + 4 * 10240 * 3 + 12 * 2 * 32 * 9


def test_conv1d_and_mixture_of_experts_weights_by_hand():
    """GPT-2 keeps its matmuls in Conv1D modules (c_attn 32x96, c_proj 32x32, c_fc 32x128, mlp c_proj
    128x32); Mixtral stacks its 4 experts' weights ((4, 128, 32) gate-up, (4, 32, 64) down), of which a
    token uses 2, and routes with a 4x32 gate. Embeddings (GPT-2's positions too) are lookups."""
    from transformers import GPT2Config, GPT2LMHeadModel, MixtralConfig, MixtralForCausalLM

    gpt2 = flops.model_shape(GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=64)))
    assert (gpt2.trainable, gpt2.head, gpt2.attention_width) == (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32, 64 * 32, 32)
    mixtral = flops.model_shape(MixtralForCausalLM(MixtralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)))
    attention = 2 * 32 * 32 + 2 * 32 * 16
    assert mixtral.trainable == attention + 4 * 32 + (4 * 128 * 32 + 4 * 32 * 64) * 2 // 4 == 15488


@pytest.mark.parametrize("pack", [True, False])
def test_visible_keys_are_what_the_attention_mask_allows(pack):
    """Packed documents, padding, and a preference pair whose two branches share a prompt: position + 1
    counts exactly the keys the layout's mask lets each real token see."""
    pair = [Piece([1, 2, 3], [-100] * 3), Piece([4, 5], [4, 5], branch=1, group=2),
            Piece([6, 7, 8, 9], [6, 7, 8, 9], branch=2, group=3)]
    sequences = [sft_sequence([5, 6, 7, 8], [-100, 6, 7, 8], group=0), sft_sequence([8, 9], [-100, 9], group=1), pair]
    batch = layout(sequences, pack=pack)
    allowed = attention_allowed(batch.segment_ids, batch.branch_ids, batch.position_ids)[:, 0]
    real = batch.segment_ids >= 0
    assert flops.visible_keys(batch) == int(allowed[real].sum()) == 10 + 3 + (6 + 4 + 5 + 4 + 5 + 6 + 7)


def test_cpu_peak_is_measured_once_and_keyed_by_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("VIETNAMESE_AI_CACHE", str(tmp_path))
    calls = []
    real = flops.measure_matmul_flops
    monkeypatch.setattr(flops, "measure_matmul_flops", lambda *a, **k: calls.append(a) or real(*a, **k))
    threads = torch.get_num_threads()
    first = flops.peak_flops(torch.device("cpu"))
    again = flops.peak_flops(torch.device("cpu"))
    assert first.source == "measured" and first.flops > 1e8 and len(calls) == 1
    assert again == first                                     # read back from the file, not measured again
    stored = json.loads((tmp_path / "peak_flops.json").read_text())
    assert stored == {flops.peak_cache_key(first.device, torch.float32, threads): first.flops}
    try:
        torch.set_num_threads(threads + 1)
        flops.peak_flops(torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2 and len(json.loads((tmp_path / "peak_flops.json").read_text())) == 2
    assert flops.peak_flops(torch.device("cpu"), override=5e11) == flops.Peak(5e11, "config", first.device)
    assert len(calls) == 2


def test_sft_run_logs_mfu_and_run_json_keeps_its_mean(tmp_path, tiny_model, sft_file, monkeypatch):
    monkeypatch.setenv("VIETNAMESE_AI_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    run_sft(SFTConfig(model_name_or_path=tiny_model, dataset=sft_file, output_dir=str(out), learning_rate=1e-3,
                      logging_steps=1, save_steps=0, seed=3, disable_tqdm=True, max_steps=4,
                      per_device_train_batch_size=4))
    rows = read_jsonl(out / "metrics.jsonl")
    info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert len(rows) == 4 and all(0 < r["mfu"] < 1 and r["tokens_per_second"] > 0 for r in rows)
    assert flops.WINDOW_FLOPS not in rows[0]
    assert info["mfu"] == pytest.approx(sum(r["mfu"] for r in rows) / len(rows), rel=1e-12)
    assert info["peak_flops"]["source"] == "measured" and info["peak_flops"]["value"] > 0
    assert os.path.isfile(tmp_path / "cache" / "peak_flops.json")


def test_a_line_s_mfu_is_its_flops_over_its_seconds_and_the_peak(tmp_path, tiny_model, sft_file):
    """One step of all 12 examples: the line's mfu x peak x seconds (tokens / tokens_per_second) gives
    back eq. (1) over those examples, whatever order and rows the step laid them out in."""
    out = tmp_path / "run"
    config = SFTConfig(model_name_or_path=tiny_model, dataset=sft_file, output_dir=str(out), logging_steps=1,
                       save_steps=0, seed=3, disable_tqdm=True, max_steps=1, per_device_train_batch_size=12,
                       peak_flops=1e9)
    result = run_sft(config)
    info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert info["peak_flops"]["source"] == "config" and info["peak_flops"]["value"] == 1e9
    (row,) = read_jsonl(out / "metrics.jsonl")
    examples, _ = prepare_sft(load_records(sft_file), load_tokenizer(tiny_model), config.max_length, vocab_size=None)
    assert len(examples) == 12
    batch = layout([sft_sequence(e.input_ids, e.labels) for e in examples], pack=False)
    shape = flops.model_shape(result.model)
    assert (shape.trainable, shape.frozen, shape.head) == (BODY, 0, HEAD)   # the fixture's model is this config
    seconds = batch.num_tokens / row["tokens_per_second"]
    assert row["mfu"] * 1e9 * seconds == pytest.approx(flops.batch_flops(shape, batch), rel=1e-9)


def test_grpo_run_logs_mfu_of_its_cached_prompt_batches(tmp_path, tiny_model, prompts_file, rewards_file):
    """Online RL trains on CachedPromptBatch micro-batches (prompts once, completions on their cache):
    their FLOPs are counted too, and every line has an mfu (sampling's time included, its FLOPs not)."""
    run_grpo(GRPOConfig(model_name_or_path=tiny_model, dataset=prompts_file, reward=f"python:{rewards_file}:constant",
                        output_dir=str(tmp_path / "run"), num_generations=4, per_device_train_batch_size=8,
                        max_completion_length=6, max_steps=2, logging_steps=1, save_steps=0, disable_tqdm=True,
                        seed=1, peak_flops=1e10))
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len(rows) == 2 and all(0 < r["mfu"] < 1 for r in rows)


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA L40S", 362e12), ("NVIDIA L40", 181e12), ("NVIDIA L4", 121e12), ("NVIDIA A10G", 70e12),
    ("NVIDIA A10", 125e12), ("NVIDIA GeForce RTX 4090", 165e12), ("Tesla T4", None)])
def test_gpu_peaks_by_card_name(name, peak):
    """A more specific name is matched before a general one (H100 PCIe before H100, L40S before L40
    and L4, A10G before A10, and A10 does not take A100); a card not in the table is measured."""
    assert flops.table_peak(name) == peak


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_bad_peak_flops_is_a_one_line_config_error(value):
    with pytest.raises(ConfigError) as error:
        SFTConfig(model_name_or_path="m", dataset="d", peak_flops=value)
    assert "peak_flops" in str(error.value) and "\n" not in str(error.value)
