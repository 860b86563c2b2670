"""A tiny causal LM built on the spot: a byte-level BPE tokenizer trained on a given corpus with
`tokenizers`, and a small transformers model (Qwen2 or Llama architecture) initialised from a config.
Both are saved in Hugging Face format, so everything downstream loads them with `from_pretrained`
exactly as it would load a hub model. Tests and the demo use this; nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch

# ChatML, as used by Qwen models; <|im_end|> is the EOS so generation stops at the end of a turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, chat_template: str | None = CHATML_TEMPLATE) -> Any:
    """A byte-level BPE tokenizer trained on `texts` (NFC-normalised, so composed and decomposed
    Vietnamese diacritics encode the same)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|pad|>",
                                        additional_special_tokens=["<|endoftext|>", "<|im_start|>"])
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_config(vocab_size: int, architecture: str = "qwen2", hidden_size: int = 64, num_layers: int = 2,
                num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int | None = None,
                max_position_embeddings: int = 1024, attention_dropout: float = 0.0,
                eos_token_id: int | None = None, pad_token_id: int | None = None) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    kinds = {"qwen2": Qwen2Config, "llama": LlamaConfig}
    if architecture not in kinds:
        raise ValueError(f"architecture: expected one of {', '.join(kinds)}, got '{architecture}'")
    return kinds[architecture](
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size or 4 * hidden_size, max_position_embeddings=max_position_embeddings,
        attention_dropout=attention_dropout, tie_word_embeddings=True,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=None,
    )


def build_tiny_model(path: str, texts: Iterable[str], vocab_size: int = 1024, seed: int = 0,
                     **config_kwargs: Any) -> str:
    """Train a tokenizer on `texts`, initialise a tiny model, save both to `path`; returns `path`."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    config = tiny_config(len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **config_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
