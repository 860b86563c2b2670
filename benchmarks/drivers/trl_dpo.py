"""TRL's DPOTrainer on the benchmark workload (works with trl 1.16 and 0.28); prints one JSON line."""

import inspect
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import train_and_report, trl_training_args  # noqa: E402


def main() -> None:
    args = json.loads(sys.argv[1])
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import importlib

    import trl

    if trl.__version__.startswith("0."):
        # trl 0.x with transformers 5: transformers' package check returns a (found, version) tuple, which
        # trl 0.x reads as a bool, so it tries to import optional packages that are absent (weave).
        import importlib.util

        utils = importlib.import_module("trl.import_utils")
        utils._is_package_available = lambda name, *a, **k: importlib.util.find_spec(name) is not None
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(args.get("threads", torch.get_num_threads()))
    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    ref_model = AutoModelForCausalLM.from_pretrained(args["ref_model"], dtype=torch.float32)
    dataset = load_dataset("json", data_files=args["data"], split="train")
    options = dict(**trl_training_args(args), beta=args["beta"], loss_type=args["loss_type"],
                   label_smoothing=args.get("label_smoothing", 0.0),
                   precompute_ref_log_probs=args.get("precompute", False), max_length=None)
    accepted = inspect.signature(DPOConfig).parameters
    if "max_prompt_length" in accepted:  # trl 0.x: no truncation either
        options.update(max_prompt_length=None, max_completion_length=None)
    config = DPOConfig(**{k: v for k, v in options.items() if k in accepted})
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=dataset, processing_class=tokenizer)
    train_and_report(trainer, len(dataset), args)


if __name__ == "__main__":
    main()
