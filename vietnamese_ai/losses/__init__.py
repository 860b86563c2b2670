"""Pure loss functions: tensors in, per-item losses and detached statistics out.

This package imports torch and nothing else (tests/test_layering.py checks it), so the math can be
read, tested and reused without a model in sight.
"""

from vietnamese_ai.losses.sft import rdrop_kl, sequence_logps, target_logps

__all__ = ["rdrop_kl", "sequence_logps", "target_logps"]
