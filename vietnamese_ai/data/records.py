"""Validate raw records and convert them into the canonical types of `data.types`.

The first bad record stops the run with one line: where it is, which field, what is wrong.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from vietnamese_ai.data.loading import Record
from vietnamese_ai.data.types import (
    ROLES,
    ChatExample,
    Conversation,
    Message,
    PromptCompletion,
    PromptOrMessages,
    SFTExample,
    TextExample,
    TokenizedExample,
)
from vietnamese_ai.errors import DataError

# Every record field a method reads; `columns` (config) may rename a dataset's own names to these.
FIELDS = ("text", "messages", "conversations", "system", "prompt", "completion", "response", "instruction", "input", "output", "input_ids",
          "labels", "chosen", "rejected", "label", "margin", "score", "reference")

SFT_KINDS = ("'text'", "'messages'", "'conversations' (ShareGPT)", "'prompt' + 'completion'", "'prompt' + 'response'", "'instruction' + 'output'", "'input_ids' + 'labels'")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def finite_number(record: Record, field: str, required: bool = True) -> float | None:
    """A number field (a score, a margin): a real, finite number; NaN and infinity are named here,
    before they can reach a loss and look like a learning-rate problem."""
    value = record.data.get(field)
    if value is None:
        if required:
            raise DataError.at(record.where, field, "missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError.at(record.where, field, f"expected a number, got {_type_name(value)}")
    if not math.isfinite(value):
        raise DataError.at(record.where, field, f"is {value}; expected a finite number")
    return float(value)


def require_string(record: Record, field: str, allow_empty: bool = False) -> str:
    if field not in record.data or record.data[field] is None:
        raise DataError.at(record.where, field, "missing")
    value = record.data[field]
    if not isinstance(value, str):
        raise DataError.at(record.where, field, f"expected a string, got {_type_name(value)}")
    if not allow_empty and not value.strip():
        raise DataError.at(record.where, field, "is empty")
    return value


def parse_messages(record: Record, field: str, value: Any, role_key: str = "role", content_key: str = "content",
                   roles: dict[str, str] | None = None) -> Conversation:
    """A list of turns as messages; `roles` maps the data's speaker names to ours (ShareGPT's
    {"from": "human", "value": ...} through role_key="from", content_key="value")."""
    roles = roles or {role: role for role in ROLES}
    if not isinstance(value, list):
        raise DataError.at(record.where, field, f"expected a list of messages, got {_type_name(value)}")
    if not value:
        raise DataError.at(record.where, field, "is an empty list of messages")
    messages = []
    for i, item in enumerate(value):
        name = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise DataError.at(record.where, name, f"expected an object with '{role_key}' and '{content_key}', "
                                                   f"got {_type_name(item)}")
        role, content = item.get(role_key), item.get(content_key)
        if role not in roles:
            raise DataError.at(record.where, f"{name}.{role_key}", f"expected one of {', '.join(roles)}, got {role!r}")
        if not isinstance(content, str):
            raise DataError.at(record.where, f"{name}.{content_key}", f"expected a string, got {_type_name(content)}")
        messages.append(Message(roles[role], content))
    return messages


# ShareGPT's speaker names (the shape of many SFT sets: OpenHermes, SlimOrca, LLaMA-Factory's sharegpt
# format) for the roles they stand for.
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def sharegpt_messages(record: Record) -> Conversation:
    """A ShareGPT record, `{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}],
    "system"?: ...}`, as messages; an optional top-level system prompt comes first.

    >>> from vietnamese_ai.data.loading import Record
    >>> sharegpt_messages(Record("r", {"system": "Be brief.", "conversations": [{"from": "human", "value": "Hi"},
    ...                                 {"from": "gpt", "value": "Hello"}]}))[0]
    Message(role='system', content='Be brief.')
    """
    system = record.data.get("system")
    first = [Message("system", require_string(record, "system"))] if system is not None else []
    return first + parse_messages(record, "conversations", record.data["conversations"], "from", "value", SHAREGPT_ROLES)


def prompt_or_messages(record: Record, field: str, allow_empty: bool = False) -> PromptOrMessages:
    """A field that holds either a plain string or a list of messages."""
    value = record.data.get(field)
    if isinstance(value, list):
        return parse_messages(record, field, value)
    return require_string(record, field, allow_empty=allow_empty)


def _completion(record: Record, field: str) -> PromptOrMessages:
    value = prompt_or_messages(record, field)
    if isinstance(value, list):
        if not any(m.content.strip() for m in value):
            raise DataError.at(record.where, field, "is empty")
        if value[-1].role != "assistant":
            raise DataError.at(record.where, field, f"the last message must have role 'assistant', got '{value[-1].role}'")
    return value


def _int_list(record: Record, field: str) -> list[int]:
    value = record.data.get(field)
    if value is None:
        raise DataError.at(record.where, field, "missing")
    if not isinstance(value, list):
        raise DataError.at(record.where, field, f"expected a list of integers, got {_type_name(value)}")
    for i, v in enumerate(value):
        if not isinstance(v, int) or isinstance(v, bool):
            raise DataError.at(record.where, f"{field}[{i}]", f"expected an integer, got {_type_name(v)} {v!r}")
    if not value:
        raise DataError.at(record.where, field, "is empty")
    return list(value)


def to_tokenized(record: Record) -> TokenizedExample:
    input_ids = _int_list(record, "input_ids")
    if any(v < 0 for v in input_ids):
        raise DataError.at(record.where, "input_ids", "token ids must be >= 0")
    if "labels" in record.data:
        labels = _int_list(record, "labels")
        if len(labels) != len(input_ids):
            raise DataError.at(record.where, "labels", f"has {len(labels)} entries but input_ids has {len(input_ids)}")
        if any(v < 0 and v != -100 for v in labels):
            raise DataError.at(record.where, "labels", "entries must be token ids or -100")
    else:
        labels = list(input_ids)  # language modelling on every token
    example = TokenizedExample(input_ids, labels)
    if example.num_targets == 0:
        raise DataError.at(record.where, "labels", "no token after the first has a label other than -100: nothing to learn")
    return example


def alpaca_prompt(instruction: str, context: str | None) -> str:
    """Instruction-input-output records (Alpaca) become one user message."""
    return instruction if not context else f"{instruction}\n\n{context}"


def to_sft_example(record: Record) -> SFTExample:
    """Convert one raw record into a canonical SFT example, or raise a one-line DataError."""
    data = record.data
    if "input_ids" in data:
        return to_tokenized(record)
    if "messages" in data:
        return ChatExample(parse_messages(record, "messages", data["messages"]))
    if "conversations" in data:
        return ChatExample(sharegpt_messages(record))
    if "prompt" in data and "response" in data and "completion" not in data:
        # The scored-answer shape of `feedback generate` and `score`: a response string is the
        # assistant's turn when the prompt is a conversation.
        prompt = prompt_or_messages(record, "prompt", allow_empty=True)
        response = require_string(record, "response")
        return PromptCompletion(prompt, [Message("assistant", response)] if isinstance(prompt, list) else response)
    if "prompt" in data or "completion" in data:
        prompt = prompt_or_messages(record, "prompt", allow_empty=True)
        completion = _completion(record, "completion")
        if isinstance(prompt, list) != isinstance(completion, list):
            raise DataError.at(record.where, "completion", "prompt and completion must both be strings or both be message lists")
        return PromptCompletion(prompt, completion)
    if "instruction" in data:
        instruction = require_string(record, "instruction")
        context = data.get("input")
        if context is not None and not isinstance(context, str):
            raise DataError.at(record.where, "input", f"expected a string, got {_type_name(context)}")
        output = require_string(record, "output")
        return PromptCompletion([Message("user", alpaca_prompt(instruction, context))], [Message("assistant", output)])
    if "text" in data:
        return TextExample(require_string(record, "text"))
    found = ", ".join(repr(k) for k in data) or "none"
    raise DataError(f"{record.where}: no known fields; expected {', '.join(SFT_KINDS)} (found: {found})")


def to_sft_examples(records: list[Record]) -> list[SFTExample]:
    return [to_sft_example(r) for r in records]


def check_columns(columns: dict[str, str]) -> dict[str, str]:
    """A `columns` mapping (dataset name -> canonical name), or ValueError naming the first bad entry.

    >>> check_columns({"question": "prompt", "good": "chosen"})
    {'question': 'prompt', 'good': 'chosen'}
    >>> check_columns({"question": "promt"})
    Traceback (most recent call last):
    ValueError: 'question' -> 'promt': 'promt' is not a field any method reads; did you mean 'prompt'?
    """
    targets: dict[str, str] = {}
    for source, target in columns.items():
        if target not in FIELDS:
            near = difflib.get_close_matches(target, FIELDS, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"expected one of {', '.join(FIELDS)}"
            raise ValueError(f"'{source}' -> '{target}': '{target}' is not a field any method reads; {hint}")
        if target in targets:
            raise ValueError(f"'{targets[target]}' and '{source}' both map to '{target}'")
        targets[target] = source
    return columns


def rename_columns(records: list[Record], columns: dict[str, str] | None) -> list[Record]:
    """Records with their fields renamed by `columns` (dataset name -> canonical name), before any
    validation. A record without a mapped column, or one that has the target name as well, is a
    one-line DataError; other fields pass through unchanged.

    >>> rename_columns([Record("record 1", {"question": "Hỏi?", "id": 7})], {"question": "prompt"})[0].data
    {'prompt': 'Hỏi?', 'id': 7}
    """
    if not columns:
        return records
    renamed = []
    for record in records:
        for source, target in columns.items():
            if source not in record.data:
                raise DataError.at(record.where, source, f"missing (the columns setting maps it to '{target}')")
            if target in record.data and target not in columns:
                raise DataError.at(record.where, target, f"given as well as '{source}', which the columns setting "
                                                         f"maps to it; drop one")
        renamed.append(Record(record.where, {columns.get(k, k): v for k, v in record.data.items()}))
    return renamed
