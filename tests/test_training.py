"""Equivalences of the training loop on a real tiny transformers model:
packed = unpacked, batch 8 x accumulation 1 = batch 1 x accumulation 8, resumed = uninterrupted,
and what happens when the loss becomes NaN."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import read_jsonl
from vietnamese_ai.data.layout import layout, sft_sequence
from vietnamese_ai.data.loading import load_records
from vietnamese_ai.data.tokenize import prepare_sft
from vietnamese_ai.errors import ConfigError, TrainingError
from vietnamese_ai.models.exactness import layout_support
from vietnamese_ai.models.forward import batch_target_logps, canonical_order
from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
from vietnamese_ai.recipes.sft import SFTConfig, run_sft, sft_collate, sft_loss
from vietnamese_ai.files import atomic_directory
from vietnamese_ai.training.checkpoint import checkpoint_dirs
from vietnamese_ai.training.loop import train


def _examples(tiny_model, path, max_length=64):
    tokenizer = load_tokenizer(tiny_model)
    examples, _ = prepare_sft(load_records(path), tokenizer, max_length, vocab_size=None)
    return tokenizer, examples


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_unpacked_loss(tiny_model, sft_file, attn):
    model = load_causal_lm(tiny_model, attn_implementation=attn).eval()
    _, examples = _examples(tiny_model, sft_file)
    sequences = [sft_sequence(e.input_ids, e.labels, group=i) for i, e in enumerate(examples)]
    packed, padded = layout(sequences, pack=True), layout(sequences, pack=False)
    assert packed.packed and packed.input_ids.shape[0] < len(examples)  # really several per row
    with torch.no_grad():
        logps_packed, _ = batch_target_logps(model, packed)
        logps_padded, _ = batch_target_logps(model, padded)
        loss_packed = sft_loss(model, packed).loss / packed.num_items
        loss_padded = sft_loss(model, padded).loss / padded.num_items
    torch.testing.assert_close(logps_packed[canonical_order(packed)], logps_padded[canonical_order(padded)],
                               atol=1e-5, rtol=0)
    assert abs(loss_packed.item() - loss_padded.item()) < 1e-5
    assert layout_support(model) == layout_support(model).__class__(True, True, True)


def _config(tmp_path, name, tiny_model, sft_file, **overrides):
    values = dict(model_name_or_path=tiny_model, dataset=sft_file, output_dir=str(tmp_path / name), learning_rate=1e-3,
                  logging_steps=1, save_steps=0, seed=3, disable_tqdm=True)
    values.update(overrides)
    return SFTConfig(**values)


def _weights(final_dir):
    return load_file(os.path.join(final_dir, "model.safetensors"))


def test_accumulation_8x1_equals_1x8(tmp_path, tiny_model, sft_file):
    # Sequences differ in length, so averaging per micro-batch (instead of per token) would differ.
    # adam_epsilon=1 makes Adam's first update ~ lr * g (not lr * sign(g)), so the weights check the
    # gradient itself, scale included.
    common = dict(max_steps=1, max_grad_norm=1e9, adam_epsilon=1.0)
    a = run_sft(_config(tmp_path, "a", tiny_model, sft_file, per_device_train_batch_size=8, gradient_accumulation_steps=1, **common))
    b = run_sft(_config(tmp_path, "b", tiny_model, sft_file, per_device_train_batch_size=1, gradient_accumulation_steps=8, **common))
    ra, rb = a.history[0], b.history[0]
    assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-6)
    assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-5)  # the gradient itself, scale included
    wa, wb = _weights(a.final_dir), _weights(b.final_dir)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-8, rtol=0)


class CrashAfter:
    """A loss function that fails on its (n+1)-th call, like a machine that dies mid-run."""

    def __init__(self, calls: int):
        self.calls, self.left = calls, calls

    def __call__(self, model, batch):
        if self.left == 0:
            raise RuntimeError("simulated crash")
        self.left -= 1
        return sft_loss(model, batch)


def _train_direct(config, tiny_model, sft_file, loss_fn=sft_loss):
    tokenizer, examples = _examples(tiny_model, sft_file)
    model = load_causal_lm(tiny_model)
    return train(model, tokenizer, config, examples, sft_collate(True, tokenizer.pad_token_id), loss_fn)


def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny_dropout_model, sft_file):
    # 12 examples, batch 2, accumulation 2: 3 steps per epoch; 7 steps cross two epoch boundaries.
    # Dropout is on, so the RNG state must be restored too; warmup makes the schedule matter.
    overrides = dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=7, save_steps=2,
                     warmup_ratio=0.3, weight_decay=0.1)
    full = _train_direct(_config(tmp_path, "full", tiny_dropout_model, sft_file, **overrides), tiny_dropout_model, sft_file)

    crashed_config = _config(tmp_path, "crashed", tiny_dropout_model, sft_file, **overrides)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train_direct(crashed_config, tiny_dropout_model, sft_file, CrashAfter(calls=2 * 5 + 1))  # dies inside step 6
    assert [os.path.basename(p) for p in checkpoint_dirs(crashed_config.output_dir)] == ["step-000002", "step-000004"]
    assert not os.path.exists(os.path.join(crashed_config.output_dir, "run.json"))   # only a finished run has one

    resumed_config = _config(tmp_path, "crashed", tiny_dropout_model, sft_file, resume_from_checkpoint="latest", **overrides)
    resumed = _train_direct(resumed_config, tiny_dropout_model, sft_file)

    full_losses = [r["loss"] for r in read_jsonl(os.path.join(full.output_dir, "metrics.jsonl"))]
    resumed_rows = read_jsonl(os.path.join(resumed.output_dir, "metrics.jsonl"))
    assert [r["step"] for r in resumed_rows] == list(range(1, 8))  # step 5's lost line is not duplicated
    assert [r["loss"] for r in resumed_rows] == full_losses  # exactly, not approximately
    wf, wr = _weights(full.final_dir), _weights(resumed.final_dir)
    for key in wf:
        assert torch.equal(wf[key], wr[key]), key
    info = json.loads(open(os.path.join(resumed.output_dir, "run.json"), encoding="utf-8").read())
    assert info["method"] == "sft" and info["steps"] == 7 and info["resumed_from"].endswith("step-000004")
    assert info["seconds"] > 0 and {"torch", "transformers", "python"} <= set(info["versions"])


def test_epoch_strategies_evaluate_and_save_at_epoch_ends(tmp_path, tiny_model, sft_file):
    # 12 examples, batch 4: 3 steps per epoch; 3 epochs = 9 steps. Checkpoints after epochs 1 and 2
    # (final/ holds epoch 3); evaluations after each of the three.
    config = _config(tmp_path, "epochs", tiny_model, sft_file, per_device_train_batch_size=4, num_train_epochs=3,
                     eval_dataset=sft_file, logging_steps=100, eval_strategy="epoch", save_strategy="epoch")
    result = run_sft(config)
    assert [os.path.basename(p) for p in checkpoint_dirs(result.output_dir)] == ["step-000003", "step-000006"]
    rows = read_jsonl(os.path.join(result.output_dir, "metrics.jsonl"))
    assert [r["step"] for r in rows if "eval/loss" in r] == [3, 6, 9]
    assert [r["epoch"] for r in rows if "eval/loss" in r] == [1.0, 2.0, 3.0]
    # 'no' never evaluates, even with eval data, and saves nothing before final/
    off = run_sft(_config(tmp_path, "off", tiny_model, sft_file, per_device_train_batch_size=4, max_steps=4,
                          eval_dataset=sft_file, eval_strategy="no", save_strategy="no"))
    assert not any("eval/loss" in r for r in read_jsonl(os.path.join(off.output_dir, "metrics.jsonl")))
    assert checkpoint_dirs(off.output_dir) == [] and os.path.isdir(off.final_dir)


def test_a_steps_key_under_another_strategy_is_refused():
    with pytest.raises(ConfigError, match="eval_steps: applies only to eval_strategy=steps"):
        SFTConfig(eval_strategy="epoch", eval_steps=5)
    with pytest.raises(ConfigError, match="save_steps: applies only to save_strategy=steps"):
        SFTConfig(save_strategy="no", save_steps=5)
    assert SFTConfig(evaluation_strategy="epoch").eval_strategy == "epoch"   # transformers' earlier name


def test_existing_checkpoints_are_not_silently_reused_or_overwritten(tmp_path, tiny_model, sft_file):
    config = _config(tmp_path, "run", tiny_model, sft_file, max_steps=2, save_steps=1, per_device_train_batch_size=4)
    run_sft(config)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        run_sft(config)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_model, sft_file):
    calls = {"n": 0}

    def nan_at_step_3(model, batch):
        calls["n"] += 1
        out = sft_loss(model, batch)
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    config = _config(tmp_path, "nan", tiny_model, sft_file, max_steps=5, save_steps=2, per_device_train_batch_size=4)
    with pytest.raises(TrainingError) as err:
        _train_direct(config, tiny_model, sft_file, nan_at_step_3)
    message = str(err.value)
    assert "loss became nan at step 3" in message and "step-000002" in message and "\n" not in message
    assert [os.path.basename(p) for p in checkpoint_dirs(config.output_dir)] == ["step-000002"]
    assert not os.path.exists(os.path.join(config.output_dir, "final"))
    # the kept checkpoint is complete and loadable
    load_causal_lm(checkpoint_dirs(config.output_dir)[0])


def test_atomic_directory_never_leaves_half_written_or_replaces_good(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(str(target)) as tmp:
        (open(os.path.join(tmp, "good"), "w")).write("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(str(target)) as tmp:
            open(os.path.join(tmp, "half"), "w").write("x")
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert os.listdir(target) == ["good"]


def test_negative_max_grad_norm_is_refused(tmp_path, tiny_model, sft_file):
    """Regression: max_grad_norm=-1 was accepted, and clipping to a negative norm flips the gradient,
    so training ran uphill."""
    with pytest.raises(ConfigError, match="max_grad_norm"):
        from vietnamese_ai.training.config import load_config

        load_config(SFTConfig, overrides=["max_grad_norm=-1"])
