"""`make demo` in its fast form: the corpus, the bootstrapped base model and the SFT model all appear
and load; SFT lowers the held-out loss."""

import os

from tests.conftest import read_jsonl
from vietnamese_ai.demo.run import main


def test_demo_fast_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--fast"]) == 0
    printed = capsys.readouterr().out
    assert "before SFT" in printed and "after SFT" in printed
    assert read_jsonl(out / "heldout_prompts.jsonl")[0]["prompt"]
    from transformers import AutoModelForCausalLM

    for stage in ("base", "sft"):
        AutoModelForCausalLM.from_pretrained(out / stage / "final")
        rows = read_jsonl(out / stage / "metrics.jsonl")
        assert rows[-1]["loss"] < rows[0]["loss"], stage
    assert os.path.isfile(out / "sft" / "config.yaml")
