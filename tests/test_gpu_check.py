"""benchmarks/gpu_check.py: its shortened CPU mode runs end to end (so the GPU script cannot rot), and
the numbers behind its MFU are derived by hand."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from vietnamese_ai.estimate import ModelShape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_qwen25_shape_flops_and_peaks_by_hand(gpu_check):
    shape = ModelShape.from_config(gpu_check.QWEN25_05B)
    # Qwen2.5-0.5B's published count: embeddings 151936 x 896 = 136,134,656; per layer q and o 896^2,
    # k and v 896 x 128, gate/up/down 3 x 896 x 4864 = 14,909,440, q/k/v biases 1,152, norms 1,792; 24
    # layers; a final norm of 896
    assert shape.params == 136_134_656 + 24 * (14_909_440 + 1_152 + 1_792) + 896 == 494_032_768
    # forward: 2 x (357,826,560 linear + 136,134,656 lm_head) + 4 x 24 layers x 896 x 256 (mean context of
    # 512 tokens); with LoRA the backward adds one forward's worth (input gradients), without it two
    forward = 2 * (24 * 14_909_440 + 136_134_656) + 4 * 24 * 896 * 256
    assert gpu_check.model_flops_per_token(shape, 512, lora=True) == 2 * forward == 2_019_885_056
    assert gpu_check.model_flops_per_token(shape, 512, lora=False) == 3 * forward
    assert gpu_check.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_check.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_check.peak_flops("NVIDIA H200") == 989e12
    assert gpu_check.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_check.peak_flops("Some Future GPU") is None


def test_bf16_loss_check_fails_beyond_tolerance(gpu_check):
    rows = [{"method": "sft", "precision": "bf16", "losses": [2.0, 1.9]},
            {"method": "sft", "precision": "fp32", "losses": [2.0, 1.8]}]
    check = gpu_check.compare_losses(rows)["sft"]
    assert check["max_relative_difference"] == pytest.approx(0.1 / 1.8, abs=1e-5) and not check["ok"]
    rows[0]["losses"] = [2.001, 1.801]
    assert gpu_check.compare_losses(rows)["sft"]["ok"]


def test_cpu_smoke_mode_runs_every_method_and_prints_a_json_summary(tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, "--cpu-smoke", "--work", str(tmp_path)], capture_output=True,
                            text=True, timeout=240, env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "cpu-smoke" and summary["ok"]
    runs = {(r["method"], r["precision"]): r for r in summary["runs"]}
    assert set(runs) == {(m, p) for m in ("sft", "dpo", "grpo") for p in ("bf16", "fp32")}
    for run in runs.values():
        assert run["steps"] == 2 and len(run["losses"]) == 2 and run["tokens_per_second"] > 0
        assert run["estimate_bytes"] > 0
    # the same batches in both precisions: SFT's losses agree to bf16's precision, and they moved
    sft_bf16, sft_fp32 = runs["sft", "bf16"]["losses"], runs["sft", "fp32"]["losses"]
    assert sft_bf16 != sft_fp32 and all(abs(a - b) < 0.02 * abs(b) for a, b in zip(sft_bf16, sft_fp32))
    assert summary["loss_checks"]["sft"]["ok"] and summary["loss_checks"]["dpo"]["ok"]
