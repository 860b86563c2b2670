"""Sampling: its own random stream, and the token ids as sampled."""

import torch

from vietnamese_ai.data.types import Message
from vietnamese_ai.models.generation import generate, sample
from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer

PROMPTS = [[Message("user", "Thủ đô của Việt Nam là gì?")], "Hello, how", [Message("user", "What is AI?")]]


def test_generate_leaves_the_callers_random_state_alone(tiny_model):
    """Regression: generate reseeded the global generator, clobbering the caller's dropout stream."""
    model, tokenizer = load_causal_lm(tiny_model), load_tokenizer(tiny_model)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    generate(model, tokenizer, PROMPTS, max_new_tokens=8, seed=7)
    assert torch.equal(torch.rand(4), expected)


def test_sample_returns_the_sampled_token_ids_and_their_unstripped_text(tiny_model):
    model, tokenizer = load_causal_lm(tiny_model), load_tokenizer(tiny_model)
    first = sample(model, tokenizer, PROMPTS, max_new_tokens=12, seed=5, batch_size=2)
    again = sample(model, tokenizer, PROMPTS, max_new_tokens=12, seed=5, batch_size=2)
    assert [s.token_ids for s in first] == [s.token_ids for s in again]          # reproducible
    for s in first:
        assert s.text == tokenizer.decode(s.token_ids, skip_special_tokens=True)  # exactly, not stripped
        assert s.finished == (tokenizer.eos_token_id in s.token_ids)
        assert s.token_ids.count(tokenizer.eos_token_id) <= 1 and (not s.finished or s.token_ids[-1] == tokenizer.eos_token_id)
        assert len(s.token_ids) <= 12
    assert generate(model, tokenizer, PROMPTS, max_new_tokens=12, seed=5, batch_size=2) == [s.text for s in first]
