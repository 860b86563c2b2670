"""The reference log-prob cache: keyed by everything the values depend on, so that another model
on the same data misses (regression: the file used to be named by the data alone)."""

import logging
import os

import pytest
import torch

from tests.conftest import write_jsonl
from tests.test_dpo_family import separable_pairs
from vietnamese_ai.models.fingerprint import tensor_checksum, tokenizer_fingerprint, weights_fingerprint
from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
from vietnamese_ai.recipes.dpo import DPOConfig, run_dpo
from vietnamese_ai.recipes.kto import KTOConfig, run_kto


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIETNAMESE_AI_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def other_model(tmp_path, tiny_model):
    """The tiny model with every weight perturbed: same architecture, same tokenizer, other weights."""
    model = load_causal_lm(tiny_model)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = str(tmp_path / "other")
    model.save_pretrained(path)
    load_tokenizer(tiny_model).save_pretrained(path)
    return path


def _first_step(tmp_path, name, model, data, config_class=DPOConfig, run=run_dpo, **kw):
    config = config_class(model_name_or_path=model, dataset=data, output_dir=str(tmp_path / name), learning_rate=1e-3,
                          max_steps=1, per_device_train_batch_size=8, logging_steps=1, save_steps=0, disable_tqdm=True,
                          **kw)
    return run(config).history[0]


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_reference_cache_misses_for_another_model_on_the_same_data(tmp_path, tiny_model, other_model, caplog, method):
    data = write_jsonl(tmp_path / "pairs.jsonl", separable_pairs(16))
    kind = dict(config_class=KTOConfig, run=run_kto) if method == "kto" else {}
    caplog.set_level(logging.INFO, logger="vietnamese_ai")
    first = _first_step(tmp_path, "a", tiny_model, data, **kind)
    second = _first_step(tmp_path, "b", other_model, data, **kind)
    assert sum("computed for" in r.message for r in caplog.records) == 2      # the second run missed
    assert not any("loaded from cache" in r.message for r in caplog.records)
    # The reference is the starting policy, so the first step's rewards are 0 for both models.
    for row in (first, second):
        assert abs(row["rewards/chosen"]) < 1e-5 and abs(row["rewards/rejected"]) < 1e-5
    caplog.clear()
    _first_step(tmp_path, "c", other_model, data, **kind)                   # same model again: a hit
    assert any("loaded from cache" in r.message for r in caplog.records)


def test_reference_cache_misses_when_max_length_changes_nothing_but_the_key(tmp_path, tiny_model, caplog):
    data = write_jsonl(tmp_path / "pairs.jsonl", separable_pairs(8))
    caplog.set_level(logging.INFO, logger="vietnamese_ai")
    _first_step(tmp_path, "a", tiny_model, data, max_length=512)
    _first_step(tmp_path, "b", tiny_model, data, max_length=256)   # the same ids, but another setting
    assert sum("computed for" in r.message for r in caplog.records) == 2


def test_weights_fingerprint_sees_every_element_and_its_position(tiny_model):
    model = load_causal_lm(tiny_model)
    base = weights_fingerprint(model)
    weight = model.model.layers[0].mlp.down_proj.weight
    with torch.no_grad():
        weight[3, 5] = torch.nextafter(weight[3, 5], torch.tensor(1.0))   # one ulp in one element
    assert weights_fingerprint(model) != base
    # Two tensors with the same multiset of values (same sum and sum of squares) differ.
    a = torch.tensor([1.0, 2.0, 3.0])
    assert tensor_checksum(a) != tensor_checksum(a.flip(0))
    assert tensor_checksum(a) == tensor_checksum(a.clone())


def test_tokenizer_fingerprint_changes_with_the_chat_template(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    before = tokenizer_fingerprint(tokenizer)
    tokenizer.chat_template = "{{ messages }}"
    assert tokenizer_fingerprint(tokenizer) != before


def test_a_damaged_cache_file_is_a_miss(tmp_path, tiny_model, caplog):
    data = write_jsonl(tmp_path / "pairs.jsonl", separable_pairs(8))
    _first_step(tmp_path, "a", tiny_model, data)
    cache = os.path.join(os.environ["VIETNAMESE_AI_CACHE"], "ref_logps")
    for name in os.listdir(cache):
        with open(os.path.join(cache, name), "r+b") as f:
            f.truncate(10)
    caplog.set_level(logging.INFO, logger="vietnamese_ai")
    row = _first_step(tmp_path, "b", tiny_model, data)
    assert "unreadable cache file" in caplog.text and abs(row["rewards/chosen"]) < 1e-5
