"""`--estimate`: the memory breakdown derived by hand for a tiny config, the command line (nothing loaded,
the last line JSON, refusals in one line), and the estimate against the measured peaks of real CPU runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vietnamese_ai.cli import main
from vietnamese_ai.estimate import FRAMEWORK_CPU_BYTES, ModelShape, estimate_memory
from vietnamese_ai.recipes.dpo import DPOConfig
from vietnamese_ai.recipes.grpo import GRPOConfig
from vietnamese_ai.recipes.sft import SFTConfig

# A Qwen2-style config small enough to count by hand: h=8, 2 heads and 1 KV head of 4, i=16, vocab 100.
TINY = {"model_type": "qwen2", "vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 2, "intermediate_size": 16,
        "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True, "hidden_act": "silu"}
# embedding 100*8 = 800; per layer: q 8*8, k 8*4, v 8*4, o 8*8 = 192, gate/up/down 3*8*16 = 384,
# q/k/v biases 8+4+4 = 16, two norms 16 -> 608; two layers 1216; final norm 8: 2024 in all.
TINY_PARAMS = 2024


def test_parameter_count_by_hand_and_from_transformers():
    from transformers import AutoModelForCausalLM, Qwen2Config
    from peft import LoraConfig, get_peft_model

    shape = ModelShape.from_config(TINY)
    assert shape.params == TINY_PARAMS
    model = AutoModelForCausalLM.from_config(Qwen2Config(**{k: v for k, v in TINY.items() if k != "model_type"}))
    assert sum(p.numel() for p in model.parameters()) == TINY_PARAMS
    # LoRA r=2 on all linears: r x (in + out) per linear: q 2*16, k 2*12, v 2*12, o 2*16, gate/up/down 3 * 2*24
    # = 256 per layer, 512 in all; PEFT's own count agrees.
    assert shape.lora_params(2, "all-linear") == 512
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == 512
    assert shape.lora_params(2, ["q_proj", "v_proj"]) == 2 * (2 * 16 + 2 * 12)
    gpt2_names = estimate_memory("sft", SFTConfig(use_lora=True, lora_target_modules=["c_attn"]), shape)
    assert gpt2_names.parts["gradients"] == 0 and "names none of q_proj" in gpt2_names.notes[0]


def test_breakdown_by_hand_full_fine_tuning():
    shape = ModelShape.from_config(TINY)
    config = SFTConfig(per_device_train_batch_size=2, max_length=10, bf16=False)   # fp32 activations
    parts = estimate_memory("sft", config, shape, device="cuda").parts
    assert parts["weights"] == TINY_PARAMS * 4 and parts["gradients"] == TINY_PARAMS * 4
    assert parts["optimizer"] == 2 * TINY_PARAMS * 4          # AdamW's two moments, fp32
    # activations: 20 tokens x (2 layers x (4h + 3q + 3kv + 4i = 32 + 24 + 12 + 64 = 132) x 4 bytes
    # + logits 3 x 100 x 4 bytes) = 20 x (1056 + 1200)
    assert parts["activations"] == 20 * (2 * 132 * 4 + 1200)
    assert "framework" not in parts and parts["reference"] == 0
    # gradient checkpointing: each layer's input (L x h = 16) and one layer's activations (132)
    checkpointed = estimate_memory("sft", config.model_copy(update={"gradient_checkpointing": True}), shape, device="cuda")
    assert checkpointed.parts["activations"] == 20 * ((16 + 132) * 4 + 1200)
    # eager attention also keeps each head's softmax over the row: 2 heads x 10 positions per token and layer
    eager = estimate_memory("sft", config.model_copy(update={"attn_implementation": "eager"}), shape, device="cuda")
    assert eager.parts["activations"] == 20 * (2 * (132 + 20) * 4 + 1200)
    # bf16 weights: weights, gradients and moments in 2 bytes, activations too (logits stay fp32)
    bf16 = estimate_memory("sft", SFTConfig(per_device_train_batch_size=2, max_length=10, dtype="bfloat16"),
                           shape, device="cuda").parts
    assert (bf16["weights"], bf16["optimizer"], bf16["activations"]) == (2 * TINY_PARAMS, 4 * TINY_PARAMS,
                                                                         20 * (2 * 132 * 2 + 1200))
    # bf16 autocast over fp32 weights: a 2-byte copy of every trained weight lives through the forward
    autocast = estimate_memory("sft", config.model_copy(update={"bf16": True}), shape, device="cuda").parts
    assert autocast["autocast_copies"] == 2 * TINY_PARAMS and autocast["weights"] == 4 * TINY_PARAMS
    assert "autocast_copies" not in parts
    on_cpu = estimate_memory("sft", config, shape, device="cpu")
    assert on_cpu.peak_bytes_per_device == sum(parts.values()) + FRAMEWORK_CPU_BYTES


def test_breakdown_by_hand_lora_qlora_and_engines():
    shape = ModelShape.from_config(TINY)
    lora = estimate_memory("sft", SFTConfig(use_lora=True, lora_r=2, max_length=10, per_device_train_batch_size=2,
                                            lora_dropout=0.0), shape, device="cuda").parts
    assert lora["weights"] == TINY_PARAMS * 4 + 512 * 4      # the frozen base and the fp32 adapters
    assert (lora["gradients"], lora["optimizer"]) == (512 * 4, 2 * 512 * 4)
    # QLoRA: the 2 x (192 + 384) = 1152 linear weights in NF4 (0.5625 bytes), the other 872 in bf16
    qlora = estimate_memory("sft", SFTConfig(use_lora=True, lora_r=2, load_in_4bit=True, dtype="bfloat16"), shape,
                            device="cuda").parts
    assert qlora["weights"] == int(1152 * 0.5625 + 872 * 2 + 512 * 4)
    full = SFTConfig(max_length=10, per_device_train_batch_size=2)
    ddp = estimate_memory("sft", full, shape, "ddp", 4, "cuda").parts
    zero2 = estimate_memory("sft", full, shape, "deepspeed-zero2", 4, "cuda").parts
    fsdp = estimate_memory("sft", full, shape, "fsdp2", 4, "cuda").parts
    assert (ddp["weights"], ddp["gradients"], ddp["optimizer"]) == (8096, 8096, 16192)     # replicated
    assert ddp["ddp_buckets"] == 8096 and "ddp_buckets" not in fsdp
    assert (zero2["weights"], zero2["gradients"], zero2["optimizer"]) == (8096, 2024, 4048)
    assert (fsdp["weights"], fsdp["gradients"], fsdp["optimizer"]) == (2024, 2024, 4048)
    assert fsdp["gathered_layer"] == 2 * 8096 // 2          # two of the two layers' share of the weights


def test_breakdown_by_hand_reference_and_online():
    shape = ModelShape.from_config(TINY)
    assert estimate_memory("dpo", DPOConfig(), shape).parts["reference"] == 0           # precomputed
    assert estimate_memory("dpo", DPOConfig(precompute_ref_log_probs=False), shape).parts["reference"] == 8096
    sharded = estimate_memory("dpo", DPOConfig(ref_model_name_or_path="ref"), shape, "fsdp2", 4)
    assert sharded.parts["reference"] == 8096 and sharded.parts["weights"] == 2024    # the reference is whole
    assert "the reference model is replicated on every process, not sharded" in sharded.notes
    assert estimate_memory("dpo", DPOConfig(use_lora=True, precompute_ref_log_probs=False),
                           shape).parts["reference"] == 0                                # adapters off
    grpo = GRPOConfig(reward="python:r.py:f", max_prompt_length=12, max_completion_length=4, num_generations=2,
                      sampling_batch_size=3, per_device_train_batch_size=2, bf16=False)
    parts = estimate_memory("grpo", grpo, shape, device="cuda").parts
    assert parts["reference"] == 0                                                       # beta = 0
    # KV cache: 3 prompts x 2 completions x (12 + 4) positions x 2 layers x (K and V) x 4 (kv dim) x 4 bytes
    assert parts["kv_cache"] == 6 * 16 * 2 * 2 * 4 * 4
    assert parts["activations"] == 2 * 16 * (2 * 132 * 4 + 1200)
    with_kl = estimate_memory("grpo", grpo.model_copy(update={"beta": 0.1}), shape, device="cuda").parts
    assert with_kl["reference"] == 8096


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(TINY))
    return str(path)


@pytest.fixture
def nothing_loads(monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("--estimate loaded a model or tokenizer")

    for name in ("AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoTokenizer"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", refuse)


def test_cli_prints_json_last_and_loads_nothing(model_dir, nothing_loads, capsys):
    code = main(["dpo", f"model_name_or_path={model_dir}", "max_length=10", "per_device_train_batch_size=2",
                 "--estimate", "--device", "cuda", "--engine", "fsdp2", "--world-size", "2", "--device-memory", "1MB"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    last = json.loads(out[-1])
    expected = estimate_memory("dpo", DPOConfig(max_length=10, per_device_train_batch_size=2),
                               ModelShape.from_config(TINY), "fsdp2", 2, "cuda", 2**20)
    assert last["peak_bytes_per_device"] == expected.peak_bytes_per_device
    assert (last["engine"], last["world_size"], last["fits"]) == ("fsdp2", 2, expected.fits)
    assert any("does NOT fit" in line or "fits in" in line for line in out)


def test_under_a_launcher_the_world_size_comes_from_the_environment_and_one_process_prints(model_dir, nothing_loads,
                                                                                              capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("RANK", "0")
    assert main(["sft", f"model_name_or_path={model_dir}", "--estimate", "--device", "cuda"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (last["engine"], last["world_size"], last["parts"]["weights"]) == ("fsdp2", 4, TINY_PARAMS * 4 // 4)
    monkeypatch.setenv("RANK", "3")
    assert main(["sft", f"model_name_or_path={model_dir}", "--estimate", "--device", "cuda"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--estimate"], "evaluate: --estimate applies to the commands that train"),
    (["feedback", "label", "--estimate"], "feedback label: --estimate applies to the commands that train"),
    (["report", "runs", "--estimate"], "report: --estimate applies to the commands that train"),
    (["sft", "--estimate"], "--estimate needs model_name_or_path"),
    (["sft", "model_name_or_path=nobody/no-such-model", "--estimate"], "'nobody/no-such-model' is neither a directory "
                                                                       "nor in the offline cache"),
    (["sft", "model_name_or_path=M", "--device-memory", "80GB"], "--device-memory is an option of --estimate"),
    (["sft", "model_name_or_path=M", "--estimate", "--engine", "zero9"], "--engine: expected one of none, ddp"),
    (["sft", "model_name_or_path=M", "--estimate", "--world-size", "0"], "--world-size: expected a whole number"),
])
def test_cli_refusals_are_one_line(argv, message, model_dir, nothing_loads, capsys):
    argv = [a.replace("=M", f"={model_dir}") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_cli_model_directory_without_config(tmp_path, capsys):
    assert main(["sft", f"model_name_or_path={tmp_path}", "--estimate"]) == 2
    assert f"{tmp_path} holds no config.json" in capsys.readouterr().err


# The estimate against measured peaks. A model of 16.4M parameters (hidden 384, 6 layers, vocabulary
# 8192) is large enough that its weights, gradients, moments and activations are a third of the process's
# peak or more, so that a missing term shows; data fill max_length so that the activation bound is reached.
#
# Two things in a CPU process's resident peak move with the machine's state rather than with the code, and the
# test takes both out instead of widening its tolerance to swallow them:
# - the framework's own memory (torch, transformers, accelerate, peft, tokenizers, the first kernels): a small
#   SFT run peaked at 475 MiB once, at 384 MiB later in one session, at 448 MiB in another. So the
#   framework is not taken from FRAMEWORK_CPU_BYTES here but measured beside each run, back to back with it:
#   the same command, flags and data with a minimal model (hidden 16, 1 layer, the tokenizer's 320 words:
#   some 7.5K parameters), i.e. everything the run does except the model-dependent work. The estimator's
#   model-dependent part is its estimate of the run minus its estimate of the minimal run (FRAMEWORK_CPU_BYTES
#   cancels, and so do the minimal model's own few MiB), compared with the difference of the two peaks;
# - glibc's sliding mmap threshold: once a large freed block raises it, tensors under it come from the heap,
#   and how much freed memory stays resident then depends on the order threads free things in; with the
#   default allocator the same SFT run peaked anywhere from 703 to 776 MiB in consecutive runs. A fixed
#   threshold (MALLOC_MMAP_THRESHOLD_=1 MiB, in all six processes) hands every block over 1 MiB back when it
#   is freed, so the peak follows the tensors alive at once; repeated runs then agree within 2%.
# The estimate counts the gradients, AdamW's moments and one micro-batch's activations as if all were alive at
# once, and in the measured runs they are not quite (the moments appear at the first step, after the
# activations are freed; the gradients are dropped before the next forward): full fine-tuning comes out above
# the measurement. LoRA's gradients and moments are small, and there the part is 3% under it (allocator
# rounding and the PEFT wrappers' own objects, not modelled). Measured (2 cores, torch 2.13 CPU, the process's
# own VmHWM): SFT full +21% to +22%, SFT LoRA -3%, DPO full +23% to +24%. The band allows 15% under and 40%
# over: a missing term fails, and so does a term counted twice (doubling the moments gives about +60% for
# full SFT, doubling the activations more).
PART_TOLERANCE = (-0.15, 0.40)     # (estimated part - measured part) / measured part
# The whole figure, FRAMEWORK_CPU_BYTES (475 MiB) included, against the whole peak: looser, as the framework's
# own memory is not the same in every environment: 397-400 MiB run alone here, about 480 MiB late in a fresh
# clone's suite (whole figure +11% to +22% alone, -1% to +10% there). 10% under to 40% over.
WHOLE_TOLERANCE = (-0.10, 0.40)
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}


# The command, followed by its own peak (VmHWM, in kB) on the last line of stdout. Not the child's
# ru_maxrss: Linux carries the high-water mark across exec, so a child of a large pytest process (900 MB
# late in the suite) reports at least its parent's size at fork.
_PEAK_OF_COMMAND = """
import re, sys
from vietnamese_ai.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as f:
    print(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1))
sys.exit(code)
"""


def _measure(argv: list[str], log_path, env: dict[str, str] | None = None) -> int:
    """Peak resident bytes of one `vietnamese-ai` process (the process's own VmHWM), run with the
    default threads as a user's would be (one at a time: several at once on few cores would spin)."""
    with open(log_path, "w+") as log:
        process = subprocess.run([sys.executable, "-c", _PEAK_OF_COMMAND, *argv], stdout=subprocess.PIPE, stderr=log,
                                 text=True, env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})
        log.seek(0)
        assert process.returncode == 0, log.read()[-2000:]
    return int(process.stdout.strip().splitlines()[-1]) * 1024


def test_estimate_within_tolerance_of_measured_cpu_peaks(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from conftest import CORPUS, write_jsonl
    from vietnamese_ai.models.tiny import train_tokenizer

    tokenizer = train_tokenizer(CORPUS, vocab_size=320)
    special = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    configs = {"model": Qwen2Config(vocab_size=8192, hidden_size=384, num_hidden_layers=6, num_attention_heads=8,
                                    num_key_value_heads=4, intermediate_size=1536, tie_word_embeddings=True, **special),
               "minimal": Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, intermediate_size=32,
                                      tie_word_embeddings=True, **special)}
    shapes = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
        shapes[name] = ModelShape.from_config(config.to_dict())

    def text(tokens: int, start: int) -> str:   # whole sentences of the corpus, about `tokens` long
        out, i = "", start
        while len(tokenizer(out + " " + CORPUS[i % 10])["input_ids"]) < tokens:
            out, i = out + " " + CORPUS[i % 10], i + 1
        return out

    sft = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": text(32, i), "completion": text(88, i + 3)} for i in range(8)])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": text(32, i), "chosen": text(88, i + 3),
                                                   "rejected": text(88, i + 5)} for i in range(8)])
    common = ["max_steps=2", "per_device_train_batch_size=4", "max_length=128", "save_steps=0", "disable_tqdm=true"]
    runs = {"sft full": (["sft", f"dataset={sft}"], SFTConfig, {}),
            "sft lora": (["sft", f"dataset={sft}", "use_lora=true"], SFTConfig, {"use_lora": True}),
            "dpo full": (["dpo", f"dataset={pairs}"], DPOConfig, {})}
    errors, whole_errors, table = {}, {}, {}
    for name, (argv, config_class, keys) in runs.items():
        run_config = config_class(max_length=128, per_device_train_batch_size=4, **keys)
        measured, estimated = {}, {}
        for model in ("minimal", "model"):       # the framework's baseline first, then the run, back to back
            slug = f"{name.replace(' ', '_')}_{model}"
            measured[model] = _measure([*argv, *common, f"model_name_or_path={tmp_path / model}",
                                        f"output_dir={tmp_path / slug}"], tmp_path / f"{slug}.log",
                                       FIXED_MMAP_THRESHOLD)
            estimated[model] = estimate_memory(argv[0], run_config, shapes[model], device="cpu").peak_bytes_per_device
        measured_part = measured["model"] - measured["minimal"]
        estimated_part = estimated["model"] - estimated["minimal"]
        assert measured_part > 0.3 * measured["model"]     # the model's share is large enough to test
        errors[name] = (estimated_part - measured_part) / measured_part
        whole_errors[name] = (estimated["model"] - measured["model"]) / measured["model"]
        table[name] = (f"framework {measured['minimal'] / 2**20:.0f} MiB; model part {measured_part / 2**20:.0f} MiB "
                       f"measured, {estimated_part / 2**20:.0f} estimated ({errors[name]:+.1%}); whole "
                       f"{measured['model'] / 2**20:.0f} MiB measured, {estimated['model'] / 2**20:.0f} estimated "
                       f"({whole_errors[name]:+.1%})")
    print("estimate against measured:", json.dumps(table, indent=1))     # shown in full when it fails
    summary = "; ".join(f"{name}: part {errors[name]:+.1%}, whole {whole_errors[name]:+.1%}" for name in runs)
    low, high = PART_TOLERANCE
    assert all(low <= e <= high for e in errors.values()), f"model part outside [{low:+.0%}, {high:+.0%}]: {summary}"
    low, high = WHOLE_TOLERANCE
    assert all(low <= e <= high for e in whole_errors.values()), f"whole outside [{low:+.0%}, {high:+.0%}]: {summary}"


def test_help_lists_estimate_for_training_commands_only(capsys):
    assert main(["grpo", "--help"]) == 0
    assert "--device-memory SIZE" in capsys.readouterr().out
    assert main(["evaluate", "--help"]) == 0
    assert "--estimate" not in capsys.readouterr().out


def test_hub_name_read_from_the_offline_cache(tmp_path):
    """A hub name is read from transformers' cache, offline (the layout huggingface_hub writes)."""
    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(TINY))
    (tmp_path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny" / "refs" / "main").write_text("0123abc")
    result = subprocess.run([sys.executable, "-m", "vietnamese_ai.cli", "sft", "model_name_or_path=acme/tiny",
                             "max_length=10", "per_device_train_batch_size=2", "bf16=false", "--estimate",
                             "--device", "cuda"], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    parts = json.loads(result.stdout.strip().splitlines()[-1])["parts"]
    assert parts["weights"] == TINY_PARAMS * 4 and parts["activations"] == 20 * (2 * 132 * 4 + 1200)
