"""Models: loading (any Hugging Face causal LM, local path or hub name), LoRA/QLoRA, the forward pass
over packed batches, generation, saving, and the tiny built-in model used by tests and the demo."""
