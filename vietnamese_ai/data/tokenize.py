"""Turn canonical text examples into token ids and labels.

Rules (the same for every method that builds on this module):
- The prompt and the completion are tokenised separately and the ids concatenated, so that no token
  ever spans the boundary (a merged token would leak the completion's first characters into the
  prompt, and the prompt length would no longer say where the loss starts).
- Message lists go through the tokenizer's chat template. A tokenizer without one uses
  FALLBACK_CHAT_TEMPLATE below.
- EOS ends every completion (and every language-modelling text), so the model learns to stop.
- Above max_length the prompt is cut from the left first (keeping a leading BOS), because the end of
  a prompt is what the completion answers. Language-modelling data is cut at the end. What was cut
  or dropped is counted in a TruncationReport.
"""

from __future__ import annotations

from typing import Any

from vietnamese_ai.data.loading import Record
from vietnamese_ai.data.records import to_sft_example
from vietnamese_ai.data.types import (
    ChatExample,
    Conversation,
    Message,
    PromptCompletion,
    SFTExample,
    TextExample,
    TokenizedExample,
    TruncationReport,
)
from vietnamese_ai.errors import DataError

IGNORE = -100

# Used when the tokenizer has no chat template of its own. Plain-text headers that any tokenizer can
# encode; the assistant turn ends with the EOS token. Example, for [user: "Hi", assistant: "Hello"]:
#
#   ### User:
#   Hi
#
#   ### Assistant:
#   Hello<eos>
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '### Assistant:\n' + message['content'] + eos_token + '\n\n' }}"
    "{% else %}"
    "{{ '### ' + message['role'] | capitalize + ':\n' + message['content'] + '\n\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)


def chat_template(tokenizer: Any) -> str:
    return getattr(tokenizer, "chat_template", None) or FALLBACK_CHAT_TEMPLATE


def render_chat(tokenizer: Any, messages: Conversation, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        chat_template=chat_template(tokenizer),
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


def render_prompt(tokenizer: Any, prompt: str | Conversation) -> str:
    """The text a model is given to generate a completion for `prompt`."""
    if isinstance(prompt, str):
        return prompt
    return render_chat(tokenizer, prompt, add_generation_prompt=True)


def _trim_after_eos(tokenizer: Any, text: str) -> str:
    # Chat templates often put a newline after the end-of-turn token; the completion should end at
    # the EOS itself so that the appended-EOS rule does not add a second one.
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos in text and not text[text.rindex(eos) + len(eos):].strip():
        return text[: text.rindex(eos) + len(eos)]
    return text


def split_chat_completion(tokenizer: Any, prompt: Conversation, completion: Conversation) -> tuple[str, str]:
    """Render a conversational prompt and completion as two strings whose concatenation is the chat."""
    prompt_text = render_chat(tokenizer, prompt, add_generation_prompt=True)
    full_text = render_chat(tokenizer, prompt + completion)
    if not full_text.startswith(prompt_text):
        raise DataError("the chat template renders the prompt differently on its own and inside the full "
                        "conversation, so the completion cannot be located; use a template whose "
                        "generation prompt is a prefix of the rendered conversation")
    return prompt_text, _trim_after_eos(tokenizer, full_text[len(prompt_text):])


def encode(tokenizer: Any, text: str, first: bool) -> list[int]:
    """Token ids of one segment. Only the first segment of a plain-text sequence gets the tokenizer's
    special tokens (a BOS for Llama-style tokenizers); chat templates write their own."""
    return list(tokenizer.encode(text, add_special_tokens=first))


def with_eos(tokenizer: Any, ids: list[int]) -> list[int]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token; set one (tokenizer.eos_token) before training")
    return ids if ids and ids[-1] == eos else ids + [eos]


def _chat_segments(tokenizer: Any, messages: Conversation, assistant_only: bool) -> list[tuple[list[int], bool]]:
    """A conversation as (ids, trainable) segments, with a boundary before and after each assistant turn."""
    if not assistant_only:
        text = _trim_after_eos(tokenizer, render_chat(tokenizer, messages))
        return [(with_eos(tokenizer, encode(tokenizer, text, first=False)), True)]
    segments: list[tuple[list[int], bool]] = []
    consumed = ""  # the rendered text already turned into segments
    for k, message in enumerate(messages):
        if message.role != "assistant":
            continue
        prompt_text = render_chat(tokenizer, messages[:k], add_generation_prompt=True)
        full_text = render_chat(tokenizer, messages[: k + 1])
        if not (prompt_text.startswith(consumed) and full_text.startswith(prompt_text)):
            raise DataError("the chat template does not render conversations prefix by prefix; "
                            "assistant_only_loss needs one that does")
        if prompt_text[len(consumed):]:
            segments.append((encode(tokenizer, prompt_text[len(consumed):], first=False), False))
        turn = _trim_after_eos(tokenizer, full_text[len(prompt_text):])
        segments.append((with_eos(tokenizer, encode(tokenizer, turn, first=False)), True))
        consumed = prompt_text + turn
    tail = render_chat(tokenizer, messages)[len(consumed):]
    if tail.strip():
        segments.append((encode(tokenizer, tail, first=False), False))
    return segments


def _cut_prompt_left(prompt: list[int], keep: int, bos: int | None) -> list[int]:
    if keep <= 0:
        return []
    if prompt and prompt[0] == bos and bos is not None:
        return [bos] + (prompt[1:][-(keep - 1):] if keep > 1 else [])
    return prompt[-keep:]


def tokenize_prompt_completion(tokenizer: Any, prompt: str | Conversation, completion: str | Conversation,
                               max_length: int | None, report: TruncationReport) -> tuple[list[int], list[int]] | None:
    """Prompt ids and completion ids (EOS-terminated), the prompt cut from the left to fit max_length.

    Returns None (and counts a drop) when the completion alone leaves no room for the prompt.
    Shared by SFT and the preference methods.
    """
    if isinstance(prompt, list):
        prompt_text, completion_text = split_chat_completion(tokenizer, prompt, completion)  # type: ignore[arg-type]
        prompt_ids = encode(tokenizer, prompt_text, first=False)
    else:
        completion_text = completion  # type: ignore[assignment]
        prompt_ids = encode(tokenizer, prompt, first=True) if prompt else []
    completion_ids = with_eos(tokenizer, encode(tokenizer, completion_text, first=not prompt_ids))
    if max_length is not None and len(prompt_ids) + len(completion_ids) > max_length:
        keep = max_length - len(completion_ids)
        if keep <= 0 or (prompt_ids and keep == 1 and prompt_ids[0] == getattr(tokenizer, "bos_token_id", None)):
            report.drop("completion longer than max_length")
            return None
        prompt_ids = _cut_prompt_left(prompt_ids, keep, getattr(tokenizer, "bos_token_id", None))
        report.prompt_truncated += 1
    return prompt_ids, completion_ids


def _cut_end(example: TokenizedExample, max_length: int | None, report: TruncationReport) -> TokenizedExample:
    if max_length is None or len(example) <= max_length:
        return example
    report.end_truncated += 1
    return TokenizedExample(example.input_ids[:max_length], example.labels[:max_length])


def tokenize_sft(example: SFTExample, tokenizer: Any, max_length: int | None, report: TruncationReport,
                 completion_only_loss: bool = True, assistant_only_loss: bool = False) -> TokenizedExample | None:
    """One canonical example as input_ids + labels, or None if it had to be dropped."""
    report.total += 1
    if isinstance(example, TokenizedExample):
        result = _cut_end(example, max_length, report)
    elif isinstance(example, TextExample):
        ids = with_eos(tokenizer, encode(tokenizer, example.text, first=True))
        result = _cut_end(TokenizedExample(ids, list(ids)), max_length, report)
    elif isinstance(example, ChatExample):
        ids, labels = [], []
        for segment, trainable in _chat_segments(tokenizer, example.messages, assistant_only_loss):
            ids += segment
            labels += segment if trainable else [IGNORE] * len(segment)
        result = _cut_end(TokenizedExample(ids, labels), max_length, report)
    elif isinstance(example, PromptCompletion):
        pair = tokenize_prompt_completion(tokenizer, example.prompt, example.completion, max_length, report)
        if pair is None:
            return None
        prompt_ids, completion_ids = pair
        prompt_labels = [IGNORE] * len(prompt_ids) if completion_only_loss else list(prompt_ids)
        result = TokenizedExample(prompt_ids + completion_ids, prompt_labels + completion_ids)
    else:
        raise TypeError(f"not an SFT example: {type(example).__name__}")
    if result.num_targets == 0:
        report.drop("no target tokens left after truncation")
        return None
    return result


def prepare_sft(records: list[Record], tokenizer: Any, max_length: int | None, vocab_size: int | None,
                completion_only_loss: bool = True, assistant_only_loss: bool = False,
                name: str = "train") -> tuple[list[TokenizedExample], TruncationReport]:
    """Validate, convert and tokenise SFT records. Pre-tokenised ids are checked against the vocabulary."""
    report = TruncationReport()
    examples = []
    for record in records:
        example = to_sft_example(record)
        if isinstance(example, TokenizedExample) and vocab_size is not None and max(example.input_ids) >= vocab_size:
            raise DataError.at(record.where, "input_ids", f"token id {max(example.input_ids)} is out of range "
                                                          f"for the model's vocabulary of {vocab_size}")
        tokenized = tokenize_sft(example, tokenizer, max_length, report, completion_only_loss, assistant_only_loss)
        if tokenized is not None:
            examples.append(tokenized)
    if not examples:
        raise DataError(f"{name} data: every record was dropped ({report.summary(name)}); raise max_length")
    return examples, report


def prompt_ids(tokenizer: Any, prompt: str | Conversation) -> list[int]:
    """The token ids a model is given to answer `prompt`, tokenised exactly as in training."""
    if isinstance(prompt, list):
        return encode(tokenizer, render_chat(tokenizer, prompt, add_generation_prompt=True), first=False)
    return encode(tokenizer, prompt, first=True)


def question_context(tokenizer: Any, question: str) -> list[int]:
    """The ids after which a model answers `question`: its chat template's user turn and generation
    prompt, or the plain question and a newline for a model without a template (an LLM judge's
    question, a multiple-choice probe's)."""
    if getattr(tokenizer, "chat_template", None):
        return encode(tokenizer, render_chat(tokenizer, [Message("user", question)], True), first=False)
    return encode(tokenizer, question + "\n", first=True)
