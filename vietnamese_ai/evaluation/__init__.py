"""Evaluation: before/after comparisons of models on held-out prompts, through the Scorer interface."""
