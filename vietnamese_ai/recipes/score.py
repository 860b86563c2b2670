"""`vietnamese-ai score`: score prompt/response records with a reward model, in batches.

Each input record has `response` (or `completion`) and an optional `prompt`, or a whole `text`; the
output JSONL repeats the record with a `score` field added.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from vietnamese_ai.data.loading import Record, load_records
from vietnamese_ai.data.records import prompt_or_messages, rename_columns, require_string
from vietnamese_ai.data.types import PromptOrMessages
from vietnamese_ai.errors import ConfigError, DataError
from vietnamese_ai.files import check_writable_file
from vietnamese_ai.recipes.common import quiet_transformers, write_jsonl
from vietnamese_ai.training.config import Columns, Config


class ScoreConfig(Config):
    model_name_or_path: str = Field(description="A trained reward model (a final/ directory, full or LoRA adapter).")
    dataset: str = Field(description="Records to score: prompt + response (or completion), or text.")
    dataset_split: str = Field("train", description="Split to read from a hub dataset.")
    dataset_subset: str | None = Field(None, description="Config (subset) name of a hub dataset.")
    columns: Columns = Field(None, description="Rename the records' fields to the ones read here, e.g. {question: prompt, answer: response}.")
    output: str = Field("scores.jsonl", description="Where to write the records with their scores (JSONL).")
    batch_size: int = Field(32, ge=1, description="Records per forward pass.")
    max_length: int | None = Field(None, ge=2, description="Cut longer inputs from the left (the reward is read at the end).")
    normalize: bool = Field(False, description="Write (reward - mean) / std, with the statistics saved by training.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("float32", description="Dtype the weights are loaded in.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub to run.")
    disable_tqdm: bool = Field(False, description="Hide the progress bar.")


@dataclass
class ScoreResult:
    output: str
    count: int
    mean: float
    std: float

    def summary(self) -> str:
        return f"scored {self.count} records (mean {self.mean:.4f}, std {self.std:.4f}); written to {self.output}"


def prompt_and_response(record: Record) -> tuple[PromptOrMessages, str]:
    data = record.data
    if "text" in data and "response" not in data and "completion" not in data:
        return "", require_string(record, "text")
    field = "response" if "response" in data else "completion"
    if field not in data:
        raise DataError(f"{record.where}: no 'response', 'completion' or 'text' field to score")
    prompt = prompt_or_messages(record, "prompt", allow_empty=True) if "prompt" in data else ""
    return prompt, require_string(record, field)


def run_score(config: ScoreConfig) -> ScoreResult:
    from vietnamese_ai.scoring.reward_model import RewardModelScorer

    from vietnamese_ai.models.reward import STATS_FILE

    check_writable_file(config.output, "output")
    if config.normalize and not os.path.isfile(os.path.join(config.model_name_or_path, STATS_FILE)):
        raise ConfigError(f"normalize: '{config.model_name_or_path}' has no {STATS_FILE} (written by `vietnamese-ai "
                          f"reward` next to the model it trains); score without normalize=true")
    quiet_transformers()
    records = rename_columns(load_records(config.dataset, config.dataset_split, subset=config.dataset_subset),
                             config.columns)
    pairs = [prompt_and_response(r) for r in records]
    scorer = RewardModelScorer(config.model_name_or_path, batch_size=config.batch_size, normalize=config.normalize,
                               max_length=config.max_length, progress=not config.disable_tqdm)
    values = scorer.rewards([p for p, _ in pairs], [r for _, r in pairs])
    write_jsonl(config.output, [{**record.data, "score": value} for record, value in zip(records, values)])
    return ScoreResult(config.output, len(values), statistics.fmean(values), statistics.pstdev(values))
