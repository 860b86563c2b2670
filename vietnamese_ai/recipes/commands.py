"""The commands of the toolkit: what `vietnamese-ai <command>` and a pipeline stage run.

Modules are imported only when their command runs, so that `--help` and a pipeline plan stay quick."""

from __future__ import annotations

# command -> (module, config class, run function, one-line description)
METHODS: dict[str, tuple[str, str, str, str]] = {
    "sft": ("vietnamese_ai.recipes.sft", "SFTConfig", "run_sft", "Supervised fine-tuning on text, chat or prompt-completion data."),
    "dpo": ("vietnamese_ai.recipes.dpo", "DPOConfig", "run_dpo",
            "Direct preference optimisation: loss_type=sigmoid|ipo|hinge|robust|rpo|simpo."),
    "orpo": ("vietnamese_ai.recipes.orpo", "ORPOConfig", "run_orpo", "ORPO: SFT and preference alignment in one stage, no reference."),
    "kto": ("vietnamese_ai.recipes.kto", "KTOConfig", "run_kto", "KTO: alignment from unpaired desirable/undesirable examples."),
    "reward": ("vietnamese_ai.recipes.reward", "RewardConfig", "run_reward", "Train a Bradley-Terry reward model on preference pairs."),
    "score": ("vietnamese_ai.recipes.score", "ScoreConfig", "run_score", "Score prompt/response records with a reward model."),
    "score-sft": ("vietnamese_ai.recipes.score_sft", "ScoreSFTConfig", "run_score_sft",
                  "SFT plus a score head regressed onto target scores (score-regularised fine-tuning)."),
    "grpo": ("vietnamese_ai.recipes.grpo", "GRPOConfig", "run_grpo",
             "Online RL: GRPO, group-relative advantages over num_generations samples per prompt."),
    "rloo": ("vietnamese_ai.recipes.rloo", "RLOOConfig", "run_rloo",
             "Online RL: RLOO, a leave-one-out baseline over num_generations samples per prompt."),
    "ppo": ("vietnamese_ai.recipes.ppo", "PPOConfig", "run_ppo",
            "Online RL: PPO with a value head, a per-token KL penalty (fixed or adaptive) and GAE."),
    "evaluate": ("vietnamese_ai.recipes.evaluate", "EvaluateConfig", "run_evaluate",
                 "Compare two or more models on held-out prompts: scores, principles, toxicity, win/tie/loss, KL."),
    "feedback prompts": ("vietnamese_ai.recipes.prompts", "PromptsConfig", "run_prompts",
                         "AI feedback: write prompts from templates x slot fillers, or Self-Instruct from a model."),
    "feedback generate": ("vietnamese_ai.recipes.feedback", "GenerateConfig", "run_generate",
                          "AI feedback: sample candidate answers (N per prompt, several temperatures)."),
    "feedback label": ("vietnamese_ai.recipes.feedback", "LabelConfig", "run_label",
                       "AI feedback: score candidates, keep (best, worst) pairs, write DPO and KTO data."),
    "feedback critique": ("vietnamese_ai.recipes.feedback", "CritiqueConfig", "run_critique",
                          "Constitutional AI: critique -> revision, written as SFT data and pairs."),
}
