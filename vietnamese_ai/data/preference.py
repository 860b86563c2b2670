"""Preference data: records to canonical pairs and unpaired examples, tokenisation, and the
sequences that data.layout packs.

A pair becomes either one sequence [prompt | chosen | rejected] with the responses as branches 1
and 2 (prefix sharing: the prompt is computed once), or two sequences [prompt | chosen] and
[prompt | rejected]. Either way group 2i holds the chosen response of pair i and group 2i+1 the
rejected one.
"""

from __future__ import annotations

import random
from typing import Any

from vietnamese_ai.data.layout import IGNORE, Piece, Sequence, batch_cost
from vietnamese_ai.data.loading import Record
from vietnamese_ai.data.records import finite_number, prompt_or_messages
from vietnamese_ai.data.tokenize import _cut_prompt_left, encode, split_chat_completion, with_eos
from vietnamese_ai.data.types import (
    Conversation,
    PreferencePair,
    PromptOrMessages,
    TokenizedPair,
    TokenizedUnpaired,
    TruncationReport,
    UnpairedExample,
)
from vietnamese_ai.errors import DataError


def split_shared_prefix(chosen: PromptOrMessages, rejected: PromptOrMessages) -> tuple[PromptOrMessages, PromptOrMessages, PromptOrMessages]:
    """The implicit prompt of a pair given without one: their longest common prefix.

    Messages split at the last common message. Strings split at the last whitespace before the first
    difference, so no word is cut and each response starts with its separating space.

    >>> split_shared_prefix("Trả lời chính xác", "Trả lời sai")
    ('Trả lời', ' chính xác', ' sai')
    """
    if isinstance(chosen, list) and isinstance(rejected, list):
        k = 0
        while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
            k += 1
        return chosen[:k], chosen[k:], rejected[k:]
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    cut = max((i for i in range(k) if chosen[i].isspace()), default=0) if k < max(len(chosen), len(rejected)) else k
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _response(record: Record, field: str) -> PromptOrMessages:
    value = prompt_or_messages(record, field)
    if isinstance(value, list) and value[-1].role != "assistant":
        raise DataError.at(record.where, field, f"the last message must have role 'assistant', got '{value[-1].role}'")
    return value


def to_pair(record: Record) -> PreferencePair:
    """A `prompt`/`chosen`/`rejected` record (prompt optional) as a PreferencePair."""
    chosen, rejected = _response(record, "chosen"), _response(record, "rejected")
    if isinstance(chosen, list) != isinstance(rejected, list):
        raise DataError.at(record.where, "rejected", "chosen and rejected must both be strings or both be message lists")
    if chosen == rejected:
        raise DataError.at(record.where, "rejected", "is identical to 'chosen'")
    if "prompt" in record.data:
        prompt = prompt_or_messages(record, "prompt", allow_empty=True)
        if isinstance(prompt, str) and isinstance(chosen, list):
            prompt, chosen, rejected = prompt_in_conversations(record, prompt, chosen, rejected)  # type: ignore[arg-type]
        elif isinstance(prompt, list) != isinstance(chosen, list):
            raise DataError.at(record.where, "prompt", "prompt and responses must all be strings or all be message lists")
    else:
        prompt, chosen, rejected = split_shared_prefix(chosen, rejected)
    return PreferencePair(prompt, chosen, rejected, finite_number(record, "margin", required=False))


def _asks(conversation: Conversation, prompt: str) -> bool:
    """Whether a conversation's first user turn is the prompt (surrounding whitespace aside)."""
    first_user = next((m.content for m in conversation if m.role == "user"), None)
    return first_user is not None and first_user.strip() == prompt.strip()


def prompt_in_conversations(record: Record, prompt: str, chosen: Conversation,
                            rejected: Conversation) -> tuple[Conversation, Conversation, Conversation]:
    """The UltraFeedback-binarized shape (HuggingFaceH4/ultrafeedback_binarized, the Zephyr DPO data): a
    prompt string, and chosen/rejected as whole conversations that repeat it as their first user turn.
    The prompt becomes the conversations' shared prefix and the responses what follows it: the
    canonical pair TRL's `maybe_extract_prompt` builds. A prompt that is instead the last shared user turn
    (multi-turn data that keeps only the latest question as `prompt`) is accepted too.

    >>> from vietnamese_ai.data.types import Message
    >>> u, a, b = Message("user", "Hỏi?"), Message("assistant", "Đúng."), Message("assistant", "Sai.")
    >>> prompt_in_conversations(Record("record 1", {}), "Hỏi?", [u, a], [u, b]) == ([u], [a], [b])
    True
    """
    shared, chosen_rest, rejected_rest = split_shared_prefix(chosen, rejected)
    last_shared_asks = bool(shared) and shared[-1].role == "user" and prompt.strip() in shared[-1].content
    for field, conversation in (("chosen", chosen), ("rejected", rejected)):
        if not (_asks(conversation, prompt) or last_shared_asks):
            raise DataError.at(record.where, field, "its first user turn is not the prompt")
    if not any(m.role == "user" for m in shared):
        raise DataError.at(record.where, "rejected", "the conversations in 'chosen' and 'rejected' do not share "
                                                     "the prompt's turn")
    return shared, chosen_rest, rejected_rest  # type: ignore[return-value]


def prompt_in_conversation(record: Record, prompt: str, completion: Conversation) -> tuple[Conversation, Conversation]:
    """One conversation that repeats the prompt string as its first user turn (the unpaired form of the
    UltraFeedback shape): the prompt becomes every message before the final assistant turns.

    >>> from vietnamese_ai.data.types import Message
    >>> u, a = Message("user", "Hỏi?"), Message("assistant", "Đáp.")
    >>> prompt_in_conversation(Record("record 1", {}), "Hỏi?", [u, a]) == ([u], [a])
    True
    """
    cut = len(completion)
    while cut > 0 and completion[cut - 1].role == "assistant":
        cut -= 1
    head = completion[:cut]
    last_asks = bool(head) and head[-1].role == "user" and prompt.strip() in head[-1].content
    if not (_asks(completion, prompt) or last_asks):
        raise DataError.at(record.where, "completion", "its first user turn is not the prompt")
    return head, completion[cut:]


def to_unpaired(record: Record) -> list[UnpairedExample]:
    """A `prompt`/`completion`/`label` record, or a pair (which gives one desirable and one undesirable example)."""
    if "chosen" in record.data or "rejected" in record.data:
        return pair_to_unpaired(to_pair(record))
    completion = _response(record, "completion")
    prompt = prompt_or_messages(record, "prompt", allow_empty=True)
    if isinstance(prompt, str) and isinstance(completion, list):
        prompt, completion = prompt_in_conversation(record, prompt, completion)
    elif isinstance(prompt, list) != isinstance(completion, list):
        raise DataError.at(record.where, "prompt", "prompt and completion must both be strings or both be message lists")
    label = record.data.get("label")
    if not isinstance(label, bool):
        raise DataError.at(record.where, "label", "missing" if label is None else f"expected true or false, got {label!r}")
    return [UnpairedExample(prompt, completion, label)]


def pair_to_unpaired(pair: PreferencePair) -> list[UnpairedExample]:
    return [UnpairedExample(pair.prompt, pair.chosen, True), UnpairedExample(pair.prompt, pair.rejected, False)]


def tokenize_responses(tokenizer: Any, prompt: PromptOrMessages, responses: list[PromptOrMessages]) -> tuple[list[int], list[list[int]]]:
    """Prompt ids and EOS-terminated response ids, each tokenised on its own."""
    if isinstance(prompt, list):
        texts = [split_chat_completion(tokenizer, prompt, r) for r in responses]  # type: ignore[arg-type]
        prompt_ids = encode(tokenizer, texts[0][0], first=False)
        return prompt_ids, [with_eos(tokenizer, encode(tokenizer, t, first=False)) for _, t in texts]
    prompt_ids = encode(tokenizer, prompt, first=True) if prompt else []
    return prompt_ids, [with_eos(tokenizer, encode(tokenizer, r, first=not prompt_ids)) for r in responses]  # type: ignore[arg-type]


def _fit(prompt_ids: list[int], longest: int, max_length: int | None, report: TruncationReport, bos: int | None) -> list[int] | None:
    """Cut the prompt from the left so that prompt + the longest response fits; None = drop."""
    if max_length is None or len(prompt_ids) + longest <= max_length:
        return prompt_ids
    keep = max_length - longest
    if keep <= 0 or (keep == 1 and prompt_ids and prompt_ids[0] == bos):
        report.drop("response longer than max_length")
        return None
    report.prompt_truncated += 1
    return _cut_prompt_left(prompt_ids, keep, bos)


def tokenize_pair(pair: PreferencePair, tokenizer: Any, max_length: int | None, report: TruncationReport) -> TokenizedPair | None:
    report.total += 1
    prompt_ids, (chosen_ids, rejected_ids) = tokenize_responses(tokenizer, pair.prompt, [pair.chosen, pair.rejected])
    prompt_ids = _fit(prompt_ids, max(len(chosen_ids), len(rejected_ids)), max_length, report,
                      getattr(tokenizer, "bos_token_id", None))
    return None if prompt_ids is None else TokenizedPair(prompt_ids, chosen_ids, rejected_ids, pair.margin)


def tokenize_unpaired(example: UnpairedExample, tokenizer: Any, max_length: int | None,
                      report: TruncationReport) -> TokenizedUnpaired | None:
    report.total += 1
    prompt_ids, (completion_ids,) = tokenize_responses(tokenizer, example.prompt, [example.completion])
    prompt_ids = _fit(prompt_ids, len(completion_ids), max_length, report, getattr(tokenizer, "bos_token_id", None))
    return None if prompt_ids is None else TokenizedUnpaired(prompt_ids, completion_ids, example.desirable)


def assign_kl_completions(examples: list[TokenizedUnpaired], seed: int, max_length: int | None) -> None:
    """Give each example another example's completion (a seeded cyclic shift), for KTO's KL estimate."""
    if len(examples) < 2:
        raise DataError("KTO needs at least 2 examples to estimate the KL term from mismatched pairs")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    for a, b in zip(order, order[1:] + order[:1]):
        completion = examples[b].completion_ids
        room = None if max_length is None else max(1, max_length - len(examples[a].prompt_ids))
        examples[a].kl_completion_ids = completion if room is None else completion[:room]


def _response_piece(ids: list[int], branch: int, group: int) -> Piece:
    return Piece(ids, list(ids), branch=branch, group=group)


def branched_sequences(prompt_ids: list[int], responses: list[list[int]], first_group: int, share: bool) -> list[Sequence]:
    """One prompt with several responses: one sequence with a branch per response (share=True), or one
    sequence per response. Response k sums into group first_group + k."""
    prompt = Piece(prompt_ids, [IGNORE] * len(prompt_ids))
    if share:
        return [[prompt] + [_response_piece(r, k + 1, first_group + k) for k, r in enumerate(responses)]]
    return [[prompt, _response_piece(r, 0, first_group + k)] for k, r in enumerate(responses)]


def sharing_pays(pairs: list[TokenizedPair], pack: bool, pair_cost: float) -> bool:
    """Whether sharing each prompt between its two responses is estimated to cost less than two plain
    sequences. Sharing saves the prompt's second pass through the linear layers, but its branches need
    an attention mask over the whole [prompt | chosen | rejected] row, where two plain rows take the
    kernel's causal path: with a small hidden size and long sequences attention dominates and sharing
    loses (a 2048-token pair at hidden 256 ran 1.45x slower shared). Either layout gives the same
    numbers (tests/test_preference_data.py); the choice only moves the cost."""
    shared = [len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs]
    plain = [len(p.prompt_ids) + len(r) for p in pairs for r in (p.chosen_ids, p.rejected_ids)]
    return batch_cost(shared, pack, pair_cost, branched=True) <= batch_cost(plain, pack, pair_cost, branched=False)


def pair_sequences(pairs: list[TokenizedPair], share: bool) -> list[Sequence]:
    sequences: list[Sequence] = []
    for i, pair in enumerate(pairs):
        sequences += branched_sequences(pair.prompt_ids, [pair.chosen_ids, pair.rejected_ids], 2 * i, share)
    return sequences

