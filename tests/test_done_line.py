"""The line a training run ends with: short, the method's own two or three metrics, never a statistic twice."""

from vietnamese_ai.training.loop import SUMMARY_METRICS, TrainResult

PPO_LAST = {"step": 40, "loss": 0.5, "kl": 0.12, "objective/kl": 0.12, "reward": 0.8, "reward_std": 0.1,
            "ppo/loss/value": 0.3, "value_loss": 0.3, "time/generation": 1.5, "tokens_per_second": 900.0,
            "learning_rate": 1e-5, "completions/mean_length": 20.0, "entropy": 2.5, "epoch": 1.0}


def shown(result):
    line = result.summary()
    assert line.startswith(f"done: {result.global_step} steps; ") and line.endswith("every metric in metrics.jsonl")
    return line.split("; ")[1]


def test_the_done_line_shows_the_loss_and_the_methods_headlines():
    assert shown(TrainResult("out", "out/final", 40, [PPO_LAST], method="ppo")) == "loss=0.5, reward=0.8, kl=0.12, value_loss=0.3"
    dpo = {"loss": 0.6, "rewards/accuracies": 0.75, "rewards/margins": 0.2, "rewards/chosen": 0.1, "logps/chosen": -50.0}
    evaluated = {**dpo, "eval/loss": 0.65, "eval/rewards/margins": 0.1}
    assert shown(TrainResult("out", "out/final", 9, [evaluated, dpo], method="dpo")) == \
        "loss=0.6, rewards/accuracies=0.75, rewards/margins=0.2, eval/loss=0.65"


def test_a_method_without_a_list_shows_its_first_few_metrics_and_no_bookkeeping():
    last = {"loss": 1.0, "learning_rate": 1e-5, "time/training": 0.1, **{f"m{i}": float(i) for i in range(12)}}
    assert shown(TrainResult("out", "out/final", 1, [last], method="new")) == "loss=1, m0=0, m1=1, m2=2"
    assert SUMMARY_METRICS == 3
    assert shown(TrainResult("out", "out/final", 1, [{"loss": 1.0, "grad_norm": 2.0}], method="sft")) == "loss=1"
