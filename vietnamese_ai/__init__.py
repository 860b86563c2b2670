"""vietnamese-ai: post-training for causal language models, in Vietnamese and English.

English API:    from vietnamese_ai.recipes.sft import SFTConfig, run_sft
Vietnamese-named API:   from vietnamese_ai import SFTTrainer   (so_vong=..., .huan_luyen(...))

Exports are resolved lazily so that importing a low layer (vietnamese_ai.losses) does not pull in
transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SFTTrainer": "vietnamese_ai.vietnamese_api",
    "DPOTrainer": "vietnamese_ai.vietnamese_api",
    "RewardModel": "vietnamese_ai.vietnamese_api",
    "RLHFPipeline": "vietnamese_ai.vietnamese_api",
    "EvaluateConfig": "vietnamese_ai.recipes.evaluate",
    "run_evaluate": "vietnamese_ai.recipes.evaluate",
    "build_report": "vietnamese_ai.report",
    "load_pipeline": "vietnamese_ai.pipeline",
    "run_pipeline": "vietnamese_ai.pipeline",
    "RewardConfig": "vietnamese_ai.recipes.reward",
    "run_reward": "vietnamese_ai.recipes.reward",
    "ScoreSFTConfig": "vietnamese_ai.recipes.score_sft",
    "run_score_sft": "vietnamese_ai.recipes.score_sft",
    "Score": "vietnamese_ai.scoring",
    "Scorer": "vietnamese_ai.scoring",
    "RewardModelScorer": "vietnamese_ai.scoring.reward_model",
    "DPOConfig": "vietnamese_ai.recipes.dpo",
    "run_dpo": "vietnamese_ai.recipes.dpo",
    "ORPOConfig": "vietnamese_ai.recipes.orpo",
    "run_orpo": "vietnamese_ai.recipes.orpo",
    "KTOConfig": "vietnamese_ai.recipes.kto",
    "run_kto": "vietnamese_ai.recipes.kto",
    "GRPOConfig": "vietnamese_ai.recipes.grpo",
    "run_grpo": "vietnamese_ai.recipes.grpo",
    "RLOOConfig": "vietnamese_ai.recipes.rloo",
    "run_rloo": "vietnamese_ai.recipes.rloo",
    "PPOConfig": "vietnamese_ai.recipes.ppo",
    "run_ppo": "vietnamese_ai.recipes.ppo",
    "SFTConfig": "vietnamese_ai.recipes.sft",
    "run_sft": "vietnamese_ai.recipes.sft",
    "UserError": "vietnamese_ai.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vietnamese_ai' has no attribute '{name}'")
