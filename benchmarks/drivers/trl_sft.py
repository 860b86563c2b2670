"""TRL's SFTTrainer on the benchmark workload. Runs in the separate TRL venv; prints one JSON line."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import peak_memory_mib, step_clock, step_seconds, trl_training_args  # noqa: E402


def main() -> None:
    args = json.loads(sys.argv[1])
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(args.get("threads", torch.get_num_threads()))
    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    dataset = load_dataset("json", data_files=args["data"], split="train")
    losses = []

    class Record(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    config = SFTConfig(
        **trl_training_args(args), padding_free=args.get("padding_free", False),
        # TRL refuses max_length with padding_free and no packing; the data is far below it anyway.
        max_length=None if args.get("padding_free") else args["max_length"],
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[Record()])
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    ends = step_clock()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    steps = trainer.state.global_step
    epochs = args.get("epochs", 1) if args.get("max_steps", -1) <= 0 else 1
    print(json.dumps({"losses": losses, "train_seconds": seconds, "tokens": tokens * epochs, "steps": steps,
                      "step_seconds": step_seconds(ends), **peak_memory_mib()}))


if __name__ == "__main__":
    main()
