"""The line a training run ends with: short, the method's own metrics, never a statistic twice."""

from vietnamese_ai.training.loop import SUMMARY_METRICS, TrainResult


def test_the_done_line_shows_the_headlines_once_and_leaves_bookkeeping_to_metrics_jsonl():
    last = {"step": 40, "loss": 0.5, "kl": 0.12, "objective/kl": 0.12, "reward": 0.8, "reward_std": 0.1,
            "ppo/loss/value": 0.3, "value_loss": 0.3, "time/generation": 1.5, "tokens_per_second": 900.0,
            "learning_rate": 1e-5, "completions/mean_length": 20.0, "rewards/margins": 0.7, "epoch": 1.0}
    line = TrainResult("out", "out/final", 40, [last]).summary()
    shown = line.split("; ")[1]
    assert shown == "loss=0.5, kl=0.12, reward=0.8, value_loss=0.3, rewards/margins=0.7"
    assert line.startswith("done: 40 steps; ") and line.endswith("every metric in metrics.jsonl")


def test_the_done_line_says_how_many_more_there_are():
    last = {"loss": 1.0, **{f"m{i}": float(i) for i in range(12)}}
    shown = TrainResult("out", "out/final", 1, [last]).summary().split("; ")[1]
    assert shown.count("=") == SUMMARY_METRICS and shown.endswith(f"(+{13 - SUMMARY_METRICS} more)")
