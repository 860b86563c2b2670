"""A trained reward model as a Scorer."""

from __future__ import annotations

from typing import Any

import torch

from vietnamese_ai.data.layout import attention_pair_cost, layout
from vietnamese_ai.data.preference import tokenize_responses, branched_sequences
from vietnamese_ai.data.types import Message, PromptOrMessages
from vietnamese_ai.models.exactness import choose_layout
from vietnamese_ai.models.forward import base_model
from vietnamese_ai.models.loading import load_tokenizer
from vietnamese_ai.models.reward import load_reward_for_scoring, read_reward_stats, sequence_rewards, set_pad_token
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.progress import tracked
from vietnamese_ai.scoring import Score, check_lengths


class RewardModelScorer:
    """Scores (prompt, response) with a reward model, in packed batches, tokenised as in training
    (prompt + response + EOS). `normalize=True` returns (reward - mean) / std with the statistics saved
    next to the model. `key` is the config key that named a model path, for its errors."""

    def __init__(self, model: Any, tokenizer: Any = None, batch_size: int = 32, normalize: bool = False,
                 max_length: int | None = None, device: str | None = None, progress: bool = False,
                 name: str | None = None, key: str = "model_name_or_path"):
        self.path = model if isinstance(model, str) else None
        self.model = load_reward_for_scoring(model, key=key) if isinstance(model, str) else model
        self.tokenizer = tokenizer or load_tokenizer(self.path or base_model(self.model).config._name_or_path)
        set_pad_token(self.model, self.tokenizer.pad_token_id)
        if device:
            self.model.to(device)
        self.batch_size, self.max_length, self.progress = batch_size, max_length, progress
        self.stats = read_reward_stats(self.path) if (normalize and self.path) else None
        if normalize and self.stats is None:
            raise ConfigError("normalize=True needs the reward_stats.json written next to a trained reward model")
        self.name = name or f"reward_model:{self.path or type(self.model).__name__}"

    def _ids(self, prompt: PromptOrMessages, response: str) -> tuple[list[int], list[int]]:
        reply = [Message("assistant", response)] if isinstance(prompt, list) else response
        prompt_ids, (response_ids,) = tokenize_responses(self.tokenizer, prompt, [reply])
        return self._fit(prompt_ids, response_ids)

    def _fit(self, prompt_ids: list[int], response_ids: list[int]) -> tuple[list[int], list[int]]:
        overflow = len(prompt_ids) + len(response_ids) - (self.max_length or 10**9)
        if overflow > 0:  # the reward is read at the end: cut from the left, the prompt first
            cut = min(overflow, len(prompt_ids))
            prompt_ids, response_ids = prompt_ids[cut:], response_ids[overflow - cut:]
        return prompt_ids, response_ids

    def rewards(self, prompts: list[PromptOrMessages], responses: list[str]) -> list[float]:
        check_lengths(prompts, responses)
        return self._rewards([self._ids(p, r) for p, r in zip(prompts, responses)])

    def rewards_of_ids(self, prompt_ids: list[list[int]], response_ids: list[list[int]],
                       append_eos: bool = True) -> list[float]:
        """Rewards of token ids already in this model's tokenizer (an online policy's samples, when it
        shares the tokenizer), read at the last token. A response cut before EOS gets EOS appended
        (as `rewards` appends it to text), unless `append_eos` is false: then it is read as it is, at
        its last token. Nothing is decoded and re-tokenised, so the reward is that of exactly the
        tokens sampled."""
        check_lengths(prompt_ids, response_ids)
        eos = self.tokenizer.eos_token_id
        return self._rewards([self._fit(list(p), list(r) if (r and r[-1] == eos) or not append_eos else [*r, eos])
                              for p, r in zip(prompt_ids, response_ids)])

    @torch.no_grad()
    def _rewards(self, encoded: list[tuple[list[int], list[int]]]) -> list[float]:
        order = sorted(range(len(encoded)), key=lambda i: sum(map(len, encoded[i])))  # similar lengths together
        device = next(self.model.parameters()).device
        cost = attention_pair_cost(base_model(self.model).config.hidden_size)
        out = [0.0] * len(encoded)
        pack = choose_layout([self.model], True, False, sequence_rewards, max(sum(map(len, e)) for e in encoded))[0]
        was_training = self.model.training
        self.model.eval()
        starts = range(0, len(order), self.batch_size)
        for start in tracked(starts, len(starts), "scoring", disable=not self.progress):
            index = order[start:start + self.batch_size]
            sequences = [branched_sequences(encoded[i][0], [encoded[i][1]], g, False)[0] for g, i in enumerate(index)]
            batch = layout(sequences, pack=pack, num_groups=len(index), pair_cost=cost).to(device)
            for i, value in zip(index, sequence_rewards(self.model, batch).tolist()):
                out[i] = value
        self.model.train(was_training)
        if self.stats:
            out = [(v - self.stats["mean"]) / max(self.stats["std"], 1e-8) for v in out]
        return out

    def score(self, prompts: list[PromptOrMessages], responses: list[str]) -> list[Score]:
        return [Score(value) for value in self.rewards(prompts, responses)]
