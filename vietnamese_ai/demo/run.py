"""The alignment demo: alignment without human labels, end to end, on a tiny bilingual model.

    python -m vietnamese_ai.demo [--out runs/demo] [--fast]

1. corpus     a bilingual assistant corpus whose answers mix helpful ones with rude, toxic and
              evasive ones; some prompts are held out for evaluation and never trained on
2. base       a byte-level BPE tokenizer and a tiny Qwen2 model, pre-trained on plain documents
3. sft        SFT on the chat data: the model answers in the chat format, and is sometimes toxic
4. feedback   the SFT model samples 6 answers per training prompt (2 temperatures x 3 samples);
              the default constitution's rules score them; (best, worst) pairs with a large enough
              gap become a preference data set
5. dpo        DPO (the RPO variant: DPO + the chosen answer's NLL) with LoRA on those pairs
6. evaluate   both models answer the held-out prompts afresh (4 samples each); the same rules score
              them; eval_dpo/, summary.json and a before/after table
7. classifier a toxicity classifier (a sequence-classification model) trained on the corpus's own
              labels, saved in Hugging Face format
8. ppo        PPO from the SFT model, rewarded by the classifier's "not toxic" logit, with a KL
              penalty to the SFT model (the detoxification recipe of RLAIF with PPO)
9. evaluate   the SFT and PPO models answer the held-out prompts afresh; the classifier's toxicity
              mean/std and toxic rate of each, and the % improvement, go to summary.json under "ppo"
10. report    report.html, built from the run files alone (training curves, both evaluations,
              samples side by side)

Both evaluations are written as `vietnamese-ai evaluate` writes them (eval_dpo/, eval_ppo/:
eval.json and samples.jsonl).

Nothing is filtered or rewritten at evaluation time: the difference comes from training.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from typing import Any

from vietnamese_ai.data.types import Message
from vietnamese_ai.demo.corpus import STYLE_MIX, chat_record, exchanges, mixed_answers, pretraining_documents, split_heldout
from vietnamese_ai.demo.classifier import train_toxicity_classifier
from vietnamese_ai.evaluation.compare import before_after, evaluate_models
from vietnamese_ai.feedback.generate import generate_candidates
from vietnamese_ai.feedback.pairs import select_pairs, unpaired_rows
from vietnamese_ai.feedback.rules import RuleScorer
from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer
from vietnamese_ai.models.tiny import build_tiny_model
from vietnamese_ai.recipes.common import quiet_transformers, write_jsonl
from vietnamese_ai.recipes.dpo import DPOConfig, run_dpo
from vietnamese_ai.recipes.evaluate import toxicity_measure, write_evaluation
from vietnamese_ai.recipes.ppo import PPOConfig, run_ppo
from vietnamese_ai.recipes.sft import SFTConfig, run_sft
from vietnamese_ai.report import build_report

log = logging.getLogger("vietnamese_ai")

MODEL = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "max_position_embeddings": 256}
SETTINGS = {  # full demo, and the --fast variant used by the tests
    "full": {"pretrain_steps": 1200, "sft_epochs": 10, "dpo_epochs": 6, "samples": 3, "eval_samples": 4,
             "classifier_corpora": 3, "ppo_steps": 120},
    "fast": {"pretrain_steps": 250, "sft_epochs": 6, "dpo_epochs": 4, "samples": 2, "eval_samples": 2,
             "classifier_corpora": 1, "ppo_steps": 48},
}


def stage(name: str, started: float) -> None:
    print(f"[demo] {name} ({time.perf_counter() - started:.0f}s)", flush=True)


def table(summary: dict) -> str:
    before, after = summary["before"], summary["after"]
    rows = [("constitution score", before["constitution_score"], after["constitution_score"]),
            ("toxic rate", before["toxic_rate"], after["toxic_rate"]),
            ("toxicity mean", before["toxicity_mean"], after["toxicity_mean"])]
    rows += [(f"  {k}", before["per_principle"][k], after["per_principle"][k]) for k in before["per_principle"]]
    rows += [("distinct-2", before["distinct_2"], after["distinct_2"])]
    lines = [f"{'metric':<22}{'before (SFT)':>14}{'after (DPO)':>14}"]
    lines += [f"{name:<22}{b:>14.3f}{a:>14.3f}" for name, b, a in rows]
    lines.append(f"win / tie / loss of after against before: {summary['win_rate']:.2f} / {summary['tie_rate']:.2f} / "
                 f"{summary['loss_rate']:.2f};  KL(after || before) per answer: {summary['kl_after_before']:.2f} nats")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vietnamese_ai.demo")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--fast", action="store_true", help="a few steps of each stage (for tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[vietnamese-ai] %(message)s")
    quiet_transformers()
    cfg = SETTINGS["fast" if args.fast else "full"]
    started = time.perf_counter()
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    data = os.path.join(out, "data")
    os.makedirs(data)

    # 1. corpus
    train_qa, heldout_qa = split_heldout(exchanges())
    chats = [chat_record(qa, answer) for qa, _, answer in mixed_answers(train_qa, seed=1)]
    documents = pretraining_documents(train_qa, copies=3, mix=STYLE_MIX)
    write_jsonl(os.path.join(data, "pretrain.jsonl"), [{"text": d} for d in documents])
    sft_path = write_jsonl(os.path.join(data, "sft.jsonl"), chats)
    heldout = write_jsonl(os.path.join(out, "heldout_prompts.jsonl"), [{"prompt": qa.prompt} for qa in heldout_qa])
    stage(f"corpus: {len(train_qa)} training prompts, {len(heldout_qa)} held out ({heldout})", started)

    # 2. base model
    init = build_tiny_model(os.path.join(out, "init"), documents + [c["prompt"][0]["content"] for c in chats],
                            vocab_size=2048, **MODEL)
    common = dict(overwrite_output_dir=True, max_length=256, save_steps=0, disable_tqdm=True, seed=0)
    base = run_sft(SFTConfig(model_name_or_path=init, dataset=os.path.join(data, "pretrain.jsonl"),
                             output_dir=os.path.join(out, "base"), learning_rate=3e-3, max_steps=cfg["pretrain_steps"],
                             per_device_train_batch_size=16, warmup_ratio=0.05, lr_scheduler_type="cosine",
                             weight_decay=0.01, logging_steps=50, **common)).final_dir
    stage("base model pre-trained", started)

    # 3. SFT
    sft = run_sft(SFTConfig(model_name_or_path=base, dataset=sft_path, output_dir=os.path.join(out, "sft"),
                            learning_rate=1e-3, num_train_epochs=cfg["sft_epochs"], per_device_train_batch_size=16,
                            warmup_ratio=0.05, logging_steps=10, **common))
    stage("SFT done", started)

    # 4. AI feedback: candidates from the SFT model, labelled by the default constitution's rules
    scorer = RuleScorer()
    tokenizer = load_tokenizer(sft.final_dir)
    policy = load_causal_lm(sft.final_dir)
    prompts = [[Message("user", qa.prompt)] for qa in train_qa]
    candidates, speed = generate_candidates(policy, tokenizer, prompts, temperatures=(0.7, 1.0),
                                            samples_per_setting=cfg["samples"], max_new_tokens=48, seed=0, progress=False)
    scores = scorer.score([prompts[c.prompt_index] for c in candidates], [c.text for c in candidates])
    pairs = select_pairs(prompts, candidates, scores, min_margin=0.15, generator=sft.final_dir, scorer=scorer.name)
    feedback = os.path.join(out, "feedback")
    os.makedirs(feedback)
    write_jsonl(os.path.join(feedback, "candidates.jsonl"),
                [{"prompt": prompts[c.prompt_index][0].content, "response": c.text, "score": s.value,
                  "principles": s.principles, "sampling": c.sampling} for c, s in zip(candidates, scores)])
    pairs_path = write_jsonl(os.path.join(feedback, "pairs.jsonl"), pairs)
    write_jsonl(os.path.join(feedback, "unpaired.jsonl"), unpaired_rows(pairs))
    stage(f"feedback: {len(candidates)} candidates ({speed.responses_per_second:.0f} responses/s), "
          f"{len(pairs)} pairs", started)

    # 5. DPO with LoRA on the AI-labelled pairs
    # RPO (DPO plus the chosen answer's NLL) keeps the aligned model fluent: plain DPO on a model this
    # small drifts far from the reference (KL ~15 nats per answer against ~3) and loses helpfulness.
    dpo = run_dpo(DPOConfig(model_name_or_path=sft.final_dir, dataset=pairs_path, output_dir=os.path.join(out, "dpo"),
                            loss_type="rpo", rpo_alpha=1.0,
                            use_lora=True, lora_r=16, lora_alpha=32, lora_dropout=0.0, learning_rate=2e-3, beta=0.1,
                            num_train_epochs=cfg["dpo_epochs"], per_device_train_batch_size=16, logging_steps=5,
                            **common))
    stage(f"DPO done: reward accuracy {dpo.series('rewards/accuracies')[-1]:.2f}", started)

    # 6. evaluation on held-out prompts, fresh samples from both models: what
    # `vietnamese-ai evaluate models=[sft/final,dpo/final] toxicity=rules` computes and writes
    heldout_prompts = [[Message("user", qa.prompt)] for qa in heldout_qa]
    report, rows = evaluate(os.path.join(out, "eval_dpo"), {"sft": (load_causal_lm(sft.final_dir), sft.final_dir),
                                                            "dpo": (dpo.model.eval(), dpo.final_dir)},
                            tokenizer, heldout_prompts, scorer, "rules", cfg["eval_samples"], seed=1234)
    summary = before_after(report, rows)
    summary["settings"] = report["settings"]
    summary["models"] = {"before": sft.final_dir, "after": dpo.final_dir}
    summary["pairs"] = len(pairs)
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=2)
    print()
    print(table(summary))
    for example in summary["examples"][:4]:
        print(f"\nprompt: {example['prompt']}\n  before: {example['before'][:100]!r}\n  after:  {example['after'][:100]!r}")

    # 7-9. PPO against a toxicity classifier, evaluated with the same classifier on held-out prompts
    summary["ppo"] = detoxify(out, train_qa, heldout_prompts, base, sft.final_dir, tokenizer, cfg, started)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=2)
    print()
    print(ppo_table(summary["ppo"]))

    # 10. the report, from the run files alone: `vietnamese-ai report runs/demo`
    page = os.path.join(out, "report.html")
    build_report([out], page, title="vietnamese-ai demo: alignment from AI feedback")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f}s; summary in {os.path.join(out, 'summary.json')}")
    print(f"report: {os.path.abspath(page)}")
    return 0


def evaluate(directory: str, models: dict[str, tuple[Any, str]], tokenizer: Any, prompts: list, scorer: Any,
             toxicity: str, samples: int, seed: int) -> tuple[dict, list]:
    """Fresh samples from every model on the held-out prompts, scored, written to `directory` as
    `vietnamese-ai evaluate` writes them (eval.json, samples.jsonl)."""
    started = time.perf_counter()
    settings = dict(temperature=1.0, top_p=1.0, max_new_tokens=48, tie_margin=0.02)
    report, rows = evaluate_models({name: model for name, (model, _) in models.items()}, tokenizer, prompts, scorer,
                                   toxicity_measure(toxicity), samples, seed=seed, **settings)
    report["settings"] = {**settings, "prompts": len(prompts), "samples": samples, "seed": seed, "scorer": scorer.name,
                          "toxicity": toxicity}
    report["model_paths"] = {name: path for name, (_, path) in models.items()}
    report["seconds"] = round(time.perf_counter() - started, 3)
    write_evaluation(directory, report, rows)
    return report, rows


def detoxify(out: str, train_qa: list, heldout_prompts: list, base: str, sft: str, tokenizer: Any, cfg: dict,
             started: float) -> dict:
    """The seed recipe's PPO detoxification: a classifier's "not toxic" logit as the reward, and the
    classifier's toxicity before and after on held-out prompts. Nothing is filtered at evaluation."""
    texts = [row for seed in range(1, cfg["classifier_corpora"] + 1) for row in mixed_answers(train_qa, seed=seed)]
    classifier = os.path.join(out, "classifier")
    trained = train_toxicity_classifier(base, [a for _, _, a in texts], [style for _, style, _ in texts], classifier,
                                        epochs=2)
    stage(f"toxicity classifier trained on {trained['examples']} answers (accuracy {trained['train_accuracy']:.3f})",
          started)
    prompts = write_jsonl(os.path.join(out, "data", "ppo_prompts.jsonl"), [{"prompt": [{"role": "user", "content": qa.prompt}]}
                                                                         for qa in train_qa])
    # The seed recipe's names (batch_size, mini_batch_size, ppo_epochs, max_new_tokens); a KL weight
    # high enough that the policy drops its insults rather than its answers.
    ppo = run_ppo(PPOConfig(model_name_or_path=sft, dataset=prompts, output_dir=os.path.join(out, "ppo"),
                            reward=f"classifier:{classifier}:not_toxic:logit", batch_size=32, mini_batch_size=8,
                            ppo_epochs=1, learning_rate=2e-4, kl_coef=0.3, max_new_tokens=48, top_k=0, top_p=1.0,
                            do_sample=True, max_steps=cfg["ppo_steps"], logging_steps=8, overwrite_output_dir=True,
                            save_steps=0, disable_tqdm=True, seed=0))
    stage(f"PPO done: reward {ppo.series('reward')[0]:.2f} -> {ppo.series('reward')[-1]:.2f}", started)
    # The same evaluation as `vietnamese-ai evaluate ... toxicity=classifier:runs/demo/classifier:toxic`.
    report, _ = evaluate(os.path.join(out, "eval_ppo"), {"sft": (load_causal_lm(sft), sft),
                                                         "ppo": (ppo.model.eval(), ppo.final_dir)},
                         tokenizer, heldout_prompts, RuleScorer(), f"classifier:{classifier}:toxic", cfg["eval_samples"],
                         seed=4321)
    result: dict[str, Any] = {}
    for name, key, path in (("before", "sft", sft), ("after", "ppo", ppo.final_dir)):
        m = report["models"][key]
        result[name] = {"toxic_rate": m["toxic_rate"], "toxicity_mean": m["toxicity_mean"],
                        "toxicity_std": m["toxicity_std"], "constitution_score": m["score_mean"], "model": path}
    before, after = result["before"]["toxicity_mean"], result["after"]["toxicity_mean"]
    result["improvement_pct"] = 100 * (before - after) / before if before > 0 else 0.0
    result["std_improvement_pct"] = (100 * (result["before"]["toxicity_std"] - result["after"]["toxicity_std"])
                                     / result["before"]["toxicity_std"] if result["before"]["toxicity_std"] > 0 else 0.0)
    result["classifier"] = classifier
    result["settings"] = report["settings"]
    stage("PPO evaluated", started)
    return result


def ppo_table(ppo: dict) -> str:
    lines = [f"{'PPO (classifier toxicity)':<26}{'before (SFT)':>14}{'after (PPO)':>14}"]
    for key in ("toxic_rate", "toxicity_mean", "toxicity_std"):
        lines.append(f"{key:<26}{ppo['before'][key]:>14.3f}{ppo['after'][key]:>14.3f}")
    lines.append(f"mean toxicity improvement: {ppo['improvement_pct']:.1f}%  (std: {ppo['std_improvement_pct']:.1f}%)")
    return "\n".join(lines)
