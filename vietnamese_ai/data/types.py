"""Canonical data types. Every supported record kind is converted into one of these first.

Text-level records (what users write):
    TextExample             language modelling on a plain string
    ChatExample             language modelling on a conversation
    PromptCompletion        supervised: a prompt and the completion to learn (strings or messages)
Token-level records (what the model sees):
    TokenizedExample        input_ids plus labels, -100 where no loss is taken (the Hugging Face
                            convention: labels[t] is the token predicted at position t, so
                            labels[t] is either -100 or input_ids[t])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


Conversation = list[Message]
PromptOrMessages = Union[str, Conversation]


@dataclass
class TextExample:
    text: str


@dataclass
class ChatExample:
    messages: Conversation


@dataclass
class PromptCompletion:
    prompt: PromptOrMessages
    completion: PromptOrMessages


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # same length as input_ids; -100 = no loss at this token

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_targets(self) -> int:
        # The first token is never predicted (nothing precedes it).
        return sum(1 for label in self.labels[1:] if label != -100)


SFTExample = Union[TextExample, ChatExample, PromptCompletion, TokenizedExample]


@dataclass
class TruncationReport:
    """What tokenisation did to fit max_length; printed once per dataset."""

    total: int = 0
    prompt_truncated: int = 0
    end_truncated: int = 0
    dropped: int = 0
    dropped_reasons: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.dropped_reasons[reason] = self.dropped_reasons.get(reason, 0) + 1

    def summary(self, name: str) -> str:
        kept = self.total - self.dropped
        text = (
            f"{name}: {kept} of {self.total} records kept; prompt cut from the left in "
            f"{self.prompt_truncated}, end cut in {self.end_truncated}, "
            f"{self.dropped} dropped"
        )
        if self.dropped_reasons:
            text += " (" + ", ".join(f"{n} {r}" for r, n in sorted(self.dropped_reasons.items())) + ")"
        return text


def as_conversation(messages: list) -> Conversation:
    """Messages given as dicts ({"role", "content"}) or Message objects, as a Conversation."""
    return [m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in messages]


def message_dicts(prompt: PromptOrMessages) -> list[dict[str, str]]:
    """A prompt as JSON-ready messages; a plain string becomes one user message."""
    messages = [Message("user", prompt)] if isinstance(prompt, str) else prompt
    return [{"role": m.role, "content": m.content} for m in messages]


def prompt_text(prompt: PromptOrMessages) -> str:
    """The text a response answers: the last user message, or the prompt string."""
    if isinstance(prompt, str):
        return prompt
    users = [m.content for m in prompt if m.role == "user"]
    return users[-1] if users else (prompt[-1].content if prompt else "")


@dataclass
class PreferencePair:
    """A prompt with a preferred (chosen) and a dispreferred (rejected) response."""

    prompt: PromptOrMessages
    chosen: PromptOrMessages
    rejected: PromptOrMessages
    margin: float | None = None  # optional strength of the preference (reward models)


@dataclass
class UnpairedExample:
    """A prompt with one response labelled desirable or not (KTO)."""

    prompt: PromptOrMessages
    completion: PromptOrMessages
    desirable: bool


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]      # EOS-terminated
    rejected_ids: list[int]    # EOS-terminated
    margin: float | None = None
    ref_logps: tuple[float, float] | None = None  # reference (chosen, rejected), once precomputed


@dataclass
class TokenizedUnpaired:
    prompt_ids: list[int]
    completion_ids: list[int]  # EOS-terminated
    desirable: bool
    kl_completion_ids: list[int] | None = None    # another example's completion, for KTO's KL estimate
    ref_logps: tuple[float, float] | None = None  # reference (completion, kl completion), once precomputed
