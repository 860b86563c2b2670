"""TRL's RewardTrainer on the benchmark workload; prints one JSON line."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import trl_summary  # noqa: E402


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
    config = RewardConfig(
        output_dir=args["output_dir"], per_device_train_batch_size=args["batch_size"],
        gradient_accumulation_steps=args.get("accumulation", 1), learning_rate=args["lr"],
        max_steps=args.get("max_steps", -1), num_train_epochs=args.get("epochs", 1), logging_steps=args["logging_steps"],
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=0,
        gradient_checkpointing=False, bf16=False, fp16=False, save_strategy="no", report_to="none",
        dataloader_num_workers=0, disable_tqdm=True, use_cpu=not torch.cuda.is_available(), max_length=None,
    )
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    print(json.dumps(trl_summary(trainer, seconds, len(dataset), args)))


if __name__ == "__main__":
    main()
