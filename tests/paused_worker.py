"""Run by tests/test_yaml_and_locks.py: an SFT training that pauses inside a step until told to go on.

Arguments: model, data, output_dir, the loss call to pause at (1-based), a file to create when paused,
and a file whose appearance lets the run go on (it gives up after two minutes)."""

import os
import sys
import time

from vietnamese_ai.data.loading import load_records
from vietnamese_ai.data.tokenize import prepare_sft
from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
from vietnamese_ai.recipes.sft import SFTConfig, sft_collate, sft_loss
from vietnamese_ai.training.loop import train


def main() -> None:
    model_path, data, out, pause_at, ready, go = sys.argv[1:7]
    config = SFTConfig(model_name_or_path=model_path, dataset=data, output_dir=out, max_steps=4, save_steps=1,
                       per_device_train_batch_size=4, learning_rate=1e-3, disable_tqdm=True)
    calls = {"n": 0}

    def paused_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == int(pause_at):
            open(ready, "w").close()
            deadline = time.time() + 120
            while not os.path.exists(go) and time.time() < deadline:
                time.sleep(0.05)
        return sft_loss(model, batch)

    tokenizer = load_tokenizer(model_path)
    examples, _ = prepare_sft(load_records(data), tokenizer, 64, vocab_size=None)
    train(load_causal_lm(model_path), tokenizer, config, examples, sft_collate(True, tokenizer.pad_token_id), paused_loss)


if __name__ == "__main__":
    main()
