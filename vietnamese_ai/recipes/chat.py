"""`vietnamese-ai chat MODEL`: talk to a model, one answer at a time, streamed as it is generated.

MODEL is a full model directory, a LoRA adapter directory (its base loads under it), a run directory
(its final/ is used) or a hub name. Every answer is generated from the whole conversation so far (the
system prompt, each user turn and each earlier answer as an assistant turn), rendered by the model's
chat template or our fallback (data/tokenize.py), tokenised exactly as in training.

Answer k of a conversation (counted from 0, and from 0 again after /reset) is sampled from seed + k in
its own random stream, so the same seed and the same turns give the same answers: `--prompt` answers
as models.generation.generate does with the same settings and seed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from vietnamese_ai.data.tokenize import prompt_ids
from vietnamese_ai.data.types import Conversation, Message
from vietnamese_ai.errors import OneLineParser, UserError
from vietnamese_ai.models.generation import generate_ids
from vietnamese_ai.models.loading import (
    ADAPTER_CONFIG,
    DTYPES,
    check_model_path,
    load_causal_lm,
    load_tokenizer,
)
from vietnamese_ai.models.reference import evaluation_mode

NOT_A_CHAT_MODEL = "chat talks to a causal language model (a full model, a LoRA adapter or a run directory)"
COMMANDS = "/reset clears the conversation, /exit or /quit (or Ctrl-D) leaves, Ctrl-C stops an answer"


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7   # 0: greedy
    top_p: float = 1.0
    top_k: int = 0             # 0: no top-k cut
    max_new_tokens: int = 256
    seed: int = 0              # answer k of a conversation is drawn from seed + k


class SuffixPrinter:
    """A streamer for transformers' generate (it calls `put` with the prompt ids, then with each new
    token, and `end` once): decodes the whole answer so far and writes only what is new. A character
    split across byte-level tokens (Vietnamese diacritics are 2-3 UTF-8 bytes) decodes as U+FFFD until
    its last byte arrives, so nothing is written while the text ends with one."""

    def __init__(self, tokenizer: Any, write: Callable[[str], Any]):
        self.tokenizer, self.write = tokenizer, write
        self.ids: list[int] = []
        self.text = ""           # the answer so far, decoded without special tokens
        self._prompt_seen = False
        self._written = 0        # characters of `text` already written

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:   # the first call carries the prompt
            self._prompt_seen = True
            return
        self.ids += value.reshape(-1).tolist()
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)

    def _emit(self, final: bool) -> None:
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not final and self.text.endswith("\ufffd"):
            return
        if len(self.text) > self._written:
            self.write(self.text[self._written:])
            self._written = len(self.text)


@torch.no_grad()
def answer(model: Any, tokenizer: Any, messages: Conversation, sampling: Sampling, seed: int,
           write: Callable[[str], Any]) -> str:
    """The model's next assistant turn after `messages`, written piece by piece as it is generated.
    Interrupted (Ctrl-C), it raises KeyboardInterrupt after writing what was generated."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids(tokenizer, messages)], device=device)
    eos = tokenizer.eos_token_id
    streamer = SuffixPrinter(tokenizer, write)
    # The call models.generation.sample makes for each batch, so that answers agree with it.
    with evaluation_mode(model):
        generate_ids(model, ids, torch.ones_like(ids), sampling.max_new_tokens,
                     tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos, eos, sampling.temperature,
                     sampling.top_p, sampling.top_k, seed, streamer=streamer)
    return streamer.text


Respond = Callable[[Conversation, int], str]   # (messages, seed) -> the answer, already written


def converse(lines: Iterable[str], respond: Respond, system: str | None, seed: int, write: Callable[[str], Any],
             tell: Callable[[str], Any], interactive: bool) -> None:
    """The conversation loop: each line is a user turn or a command. An answer cut by Ctrl-C (when
    `interactive`) is dropped from the conversation together with its question."""
    opening = [Message("system", system)] if system else []
    messages = list(opening)
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            messages = list(opening)
            tell("(conversation cleared)")
            continue
        if text in ("/help", "/?") or (text.startswith("/") and " " not in text):
            tell(COMMANDS if text in ("/help", "/?") else f"unknown command '{text}': {COMMANDS}")
            continue
        turn = messages + [Message("user", text)]
        answers_so_far = sum(m.role == "assistant" for m in messages)
        try:
            reply = respond(turn, seed + answers_so_far)
        except KeyboardInterrupt:
            if not interactive:
                raise
            write("\n")
            tell("(answer stopped; it is not kept in the conversation)")
            continue
        write("\n\n" if interactive else "\n")
        messages = turn + [Message("assistant", reply)]


def terminal_lines(prompt: str = "you> ") -> Iterable[str]:
    """Lines typed at a terminal, until EOF (Ctrl-D); Ctrl-C at the prompt gives a fresh prompt."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    while True:
        try:
            yield input(prompt)
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            print("\n(/exit or Ctrl-D leaves)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="vietnamese-ai chat",
                            description="Talk to a model: a REPL on a terminal, one user turn per line when stdin is "
                                        "piped, or one answer with --prompt. Answers stream as they are generated. "
                                        f"In the REPL: {COMMANDS}.")
    parser.add_argument("model", metavar="MODEL", help="a model directory, a LoRA adapter directory, a run directory "
                                                      "(its final/ is used) or a hub name")
    parser.add_argument("--system", metavar="TEXT", help="the system prompt, first in every conversation")
    parser.add_argument("--prompt", metavar="TEXT", help="answer this one user turn, print it and exit")
    parser.add_argument("--temperature", type=float, metavar="T", default=Sampling.temperature, help="sampling temperature; 0 is "
                        f"greedy (default: {Sampling.temperature})")
    parser.add_argument("--top-p", type=float, metavar="P", default=Sampling.top_p, help="nucleus sampling, in (0, 1] (default: 1.0)")
    parser.add_argument("--top-k", type=int, metavar="K", default=Sampling.top_k, help="sample from the k likeliest tokens; 0 is "
                        "no limit (default: 0)")
    parser.add_argument("--max-new-tokens", type=int, metavar="N", default=Sampling.max_new_tokens,
                        help=f"longest answer in tokens (default: {Sampling.max_new_tokens})")
    parser.add_argument("--seed", type=int, metavar="N", default=Sampling.seed, help="sampling seed; answer k of a conversation "
                        "uses seed + k (default: 0)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code")
    parser.add_argument("--dtype", choices=list(DTYPES), default="auto", help="weights' dtype (default: auto, the "
                                                                              "checkpoint's own)")
    args = parser.parse_args(argv)
    if args.temperature < 0:
        raise UserError(f"chat: --temperature must be >= 0 (0 is greedy), got {args.temperature:g}")
    if not 0 < args.top_p <= 1:
        raise UserError(f"chat: --top-p must be in (0, 1], got {args.top_p:g}")
    if args.top_k < 0:
        raise UserError(f"chat: --top-k must be >= 0 (0 is no limit), got {args.top_k}")
    if args.max_new_tokens < 1:
        raise UserError(f"chat: --max-new-tokens must be >= 1, got {args.max_new_tokens}")
    return args


def resolve_model(path: str) -> str:
    """The model to load for MODEL: a run directory's final/, else MODEL itself; checked before loading."""
    if os.path.isdir(path) and not any(os.path.isfile(os.path.join(path, f)) for f in ("config.json", ADAPTER_CONFIG)):
        if not os.path.isdir(os.path.join(path, "final")):
            raise UserError(f"chat: '{path}' is not a model directory (no config.json or {ADAPTER_CONFIG}) nor a run "
                            f"directory (no final/)")
        path = os.path.join(path, "final")
    check_model_path(path, "chat", hint=NOT_A_CHAT_MODEL)
    return path


def run_command(argv: list[str]) -> int:
    args = parse_args(argv)
    path = resolve_model(args.model)
    sampling = Sampling(args.temperature, args.top_p, args.top_k, args.max_new_tokens, args.seed)
    from vietnamese_ai.recipes.common import quiet_transformers

    quiet_transformers()
    tokenizer = load_tokenizer(path, args.trust_remote_code)
    model = load_causal_lm(path, dtype=args.dtype, device="cuda" if torch.cuda.is_available() else "cpu",
                           trust_remote_code=args.trust_remote_code).eval()

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def respond(messages: Conversation, seed: int) -> str:
        return answer(model, tokenizer, messages, sampling, seed, write)

    def tell(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if args.prompt is not None:   # the text as given, never read as a /command
        respond(([Message("system", args.system)] if args.system else []) + [Message("user", args.prompt)], args.seed)
        write("\n")
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        tell(f"chatting with {path}: {COMMANDS}")
    converse(terminal_lines() if interactive else sys.stdin, respond, args.system, args.seed, write, tell, interactive)
    return 0
