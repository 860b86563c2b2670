"""TRL's RewardTrainer on the benchmark workload; prints one JSON line."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import train_and_report, trl_training_args  # noqa: E402


def main() -> None:
    args = json.loads(sys.argv[1])
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    torch.set_num_threads(args.get("threads", torch.get_num_threads()))
    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    model = AutoModelForSequenceClassification.from_pretrained(args["model"], num_labels=1, dtype=torch.float32)
    dataset = load_dataset("json", data_files=args["data"], split="train")
    config = RewardConfig(**trl_training_args(args), max_length=None)
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    train_and_report(trainer, len(dataset), args)

if __name__ == "__main__":
    main()
