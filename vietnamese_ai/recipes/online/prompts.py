"""The prompts of an online run: read, tokenised, and the seed of each completion sampled from them."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from vietnamese_ai.data.loading import Record
from vietnamese_ai.data.records import prompt_or_messages
from vietnamese_ai.data.tokenize import _cut_prompt_left, prompt_ids
from vietnamese_ai.data.types import PromptOrMessages
from vietnamese_ai.errors import DataError

log = logging.getLogger("vietnamese_ai")


@dataclass
class PromptExample:
    prompt: PromptOrMessages          # as given: a string, or messages
    ids: list[int]                    # tokenised as the model sees it
    columns: dict[str, Any]           # the record's other fields, for Python reward functions


def read_prompt(record: Record) -> PromptOrMessages:
    if "prompt" not in record.data:
        raise DataError.at(record.where, "prompt", "missing")
    return prompt_or_messages(record, "prompt")


def tokenize_prompts(records: list[Record], tokenizer: Any, max_prompt_length: int | None) -> list[PromptExample]:
    examples, cut = [], 0
    for record in records:
        prompt = read_prompt(record)
        ids = prompt_ids(tokenizer, prompt)
        if not ids:
            raise DataError.at(record.where, "prompt", "gives no tokens")
        if max_prompt_length is not None and len(ids) > max_prompt_length:
            ids, cut = _cut_prompt_left(ids, max_prompt_length, getattr(tokenizer, "bos_token_id", None)), cut + 1
        examples.append(PromptExample(prompt, ids, {k: v for k, v in record.data.items() if k != "prompt"}))
    if cut:
        log.info("prompts: %d of %d cut from the left to max_prompt_length=%d", cut, len(records), max_prompt_length)
    return examples



def completion_seed(seed: int, epoch: int, position: int, sample: int) -> int:
    """The seed of one completion: the prompt's place in the run's prompt order, and which sample."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{position}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little")

