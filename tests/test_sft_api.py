"""SFT through its three interfaces (CLI, Python, seed-003 Vietnamese API), the output layout,
LoRA adapters, chat templates, R-Drop, and a tiny model that must learn."""

import os
import re

import pytest
import torch
import yaml

from tests.conftest import read_jsonl, write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.data.tokenize import FALLBACK_CHAT_TEMPLATE, render_chat, tokenize_sft
from vietnamese_ai.data.types import ChatExample, Message, PromptCompletion, TruncationReport
from vietnamese_ai.errors import ConfigError
from vietnamese_ai.models.loading import load_tokenizer
from vietnamese_ai.recipes.sft import SFTConfig, run_sft


def test_cli_run_writes_the_standard_output_layout(tmp_path, tiny_model, sft_file):
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": tiny_model, "dataset": sft_file, "learning_rate": 1e-3,
                                      "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 2}))
    out = tmp_path / "run"
    assert main(["sft", "--config", str(config), f"output_dir={out}", "num_train_epochs=1", "disable_tqdm=true"]) == 0
    assert sorted(os.listdir(out)) == ["checkpoints", "config.yaml", "final", "metrics.jsonl", "run.json"]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["num_train_epochs"] == 1 and resolved["learning_rate"] == 1e-3 and resolved["packing"] is True
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert {"step", "loss", "learning_rate", "tokens_per_second"} <= set(row)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "final")
    assert os.listdir(out / "checkpoints") == ["step-000002"]


def test_cli_help_documents_every_option(capsys):
    assert main(["sft", "--help"]) == 0
    text = capsys.readouterr().out
    for key in SFTConfig.model_fields:
        assert f"  {key} (" in text, key


def test_cli_unknown_key_lists_the_valid_ones(capsys, tiny_model):
    assert main(["sft", f"model_name_or_path={tiny_model}", "learnin_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'learnin_rate'" in err and "learning_rate" in err and len(err.strip().splitlines()) == 1


def test_bad_yaml_value_names_the_file_and_key(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("per_device_train_batch_size: many\n")
    assert main(["sft", "--config", str(config)]) == 2
    assert f"{config}: key 'per_device_train_batch_size'" in capsys.readouterr().err


def test_sft_lowers_the_loss_of_a_tiny_model(tmp_path, tiny_model, sft_file):
    result = run_sft(SFTConfig(model_name_or_path=tiny_model, dataset=sft_file, eval_dataset=sft_file,
                               output_dir=str(tmp_path / "r"), learning_rate=1e-2, num_train_epochs=6,
                               per_device_train_batch_size=4, logging_steps=1, eval_steps=4, disable_tqdm=True))
    losses, evals = result.series("loss"), result.series("eval/loss")
    assert losses[-1] < 0.7 * losses[0]
    assert evals[-1] < evals[0]


def test_lora_saves_an_adapter_and_merging_gives_a_plain_model(tmp_path, tiny_model, sft_file):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    common = dict(model_name_or_path=tiny_model, dataset=sft_file, learning_rate=1e-2, max_steps=3, use_lora=True,
                  lora_r=4, lora_alpha=8, lora_dropout=0.0, per_device_train_batch_size=4, disable_tqdm=True)
    adapter = run_sft(SFTConfig(output_dir=str(tmp_path / "lora"), **common))
    assert "adapter_model.safetensors" in os.listdir(adapter.final_dir)
    merged = run_sft(SFTConfig(output_dir=str(tmp_path / "merged"), merge_lora=True, **common))
    assert "model.safetensors" in os.listdir(merged.final_dir)

    ids = torch.tensor([[5, 6, 7, 8]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        from_adapter = PeftModel.from_pretrained(base, adapter.final_dir).eval()(ids).logits
        from_merged = AutoModelForCausalLM.from_pretrained(merged.final_dir).eval()(ids).logits
        untrained = AutoModelForCausalLM.from_pretrained(tiny_model).eval()(ids).logits
    torch.testing.assert_close(from_adapter, from_merged, atol=1e-4, rtol=0)  # same seed, same training
    assert not torch.allclose(from_adapter, untrained, atol=1e-4)  # the adapter learned something


def test_rdrop_adds_a_positive_kl_only_with_dropout(tmp_path, tiny_model, tiny_dropout_model, sft_file):
    common = dict(dataset=sft_file, learning_rate=1e-3, max_steps=2, rdrop_alpha=1.0, logging_steps=1,
                  per_device_train_batch_size=4, disable_tqdm=True)
    with_dropout = run_sft(SFTConfig(model_name_or_path=tiny_dropout_model, output_dir=str(tmp_path / "d"), **common))
    without = run_sft(SFTConfig(model_name_or_path=tiny_model, output_dir=str(tmp_path / "n"), **common))
    assert min(with_dropout.series("rdrop_kl")) > 1e-6  # an untrained model is near-uniform, so KL is small
    assert max(without.series("rdrop_kl")) < 1e-10
    row = with_dropout.history[0]
    assert row["loss"] == pytest.approx(2 * row["nll"] + 1.0 * row["rdrop_kl"], rel=1e-5)


def test_rdrop_sums_the_two_passes_nll_as_its_equation_does(tmp_path, tiny_model, sft_file):
    """Regression: the two NLL terms were averaged while R-Drop's Eq. 3 sums them (which doubles
    alpha's effective weight against the paper's). Without dropout both passes are equal."""
    common = dict(model_name_or_path=tiny_model, dataset=sft_file, max_steps=1, logging_steps=1,
                  per_device_train_batch_size=4, disable_tqdm=True)
    plain = run_sft(SFTConfig(output_dir=str(tmp_path / "plain"), **common)).history[0]
    rdrop = run_sft(SFTConfig(output_dir=str(tmp_path / "rdrop"), rdrop_alpha=0.5, **common)).history[0]
    assert rdrop["loss"] == pytest.approx(2 * plain["loss"], rel=1e-6)
    assert rdrop["nll"] == pytest.approx(plain["loss"], rel=1e-6)


def test_chat_template_and_fallback(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    chat = [Message("user", "Xin chào"), Message("assistant", "Chào bạn")]
    assert render_chat(tokenizer, chat) == "<|im_start|>user\nXin chào<|im_end|>\n<|im_start|>assistant\nChào bạn<|im_end|>\n"
    example = tokenize_sft(PromptCompletion(chat[:1], chat[1:]), tokenizer, None, TruncationReport())
    completion = [t for t, label in zip(example.input_ids, example.labels) if label != -100]
    assert tokenizer.decode(completion) == "Chào bạn<|im_end|>"  # one EOS, not a second after the newline
    tokenizer.chat_template = None  # a tokenizer without a template uses the documented fallback
    assert "### User:\nXin chào\n\n### Assistant:\nChào bạn<|im_end|>" in render_chat(tokenizer, chat)
    assert "### Assistant" in FALLBACK_CHAT_TEMPLATE
    whole = tokenize_sft(ChatExample(chat), tokenizer, None, TruncationReport())
    assert whole.input_ids[-1] == tokenizer.eos_token_id and whole.input_ids.count(tokenizer.eos_token_id) == 1


def test_assistant_only_loss_masks_user_turns(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    chat = [Message("user", "Xin chào"), Message("assistant", "Chào bạn"), Message("user", "Hello"),
            Message("assistant", "Hi")]
    example = tokenize_sft(ChatExample(chat), tokenizer, None, TruncationReport(), assistant_only_loss=True)
    assert tokenizer.decode(example.input_ids) == render_chat(tokenizer, chat).rstrip("\n")
    trained = tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != -100])
    assert trained == "Chào bạn<|im_end|>Hi<|im_end|>"


# ---- the seed-003 Vietnamese API, exactly as the page shows it ----

def test_seed003_sft_example_runs_as_written(tmp_path, tiny_model, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(tmp_path)  # the API writes runs/sft-<time>/ under the working directory
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    val_data = [{"input_ids": [9, 10, 11, 12], "labels": [-100, 10, 11, 12]}]

    from vietnamese_ai import SFTTrainer
    trainer = SFTTrainer(
        so_vong=3,
        kich_thuoc_batch=4,
        toc_do_hoc=2e-5,
        gradient_accumulation=4,
    )
    # Dữ liệu dạng list of dicts
    du_lieu = [
        {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, 4, 5]},
        {"input_ids": [6, 7, 8], "labels": [-100, 7, 8]},
    ]
    ket_qua = trainer.huan_luyen(model, du_lieu, du_lieu_val=val_data)
    print(f"Train loss: {ket_qua['train_loss_min']:.4f}")
    print(f"Eval loss: {ket_qua['eval_loss_min']:.4f}")

    assert ket_qua["steps"] == 3  # 2 examples fit one micro-batch: one step per epoch
    assert len(ket_qua["train_loss_history"]) == 3 and ket_qua["train_loss_min"] == min(ket_qua["train_loss_history"])
    assert ket_qua["eval_loss_min"] == min(ket_qua["eval_loss_history"])
    assert os.path.isdir(ket_qua["final_dir"])


def test_seed003_accepts_a_path_english_keywords_and_text(tmp_path, tiny_model):
    from vietnamese_ai import SFTTrainer

    trainer = SFTTrainer(num_epochs=1, batch_size=2, learning_rate=1e-3, output_dir=str(tmp_path / "en"))
    ket_qua = trainer.huan_luyen(tiny_model, [{"text": "Xin chào bạn"}, {"prompt": "Hello", "completion": " Hi"}])
    assert ket_qua["train_loss_min"] > 0 and ket_qua["eval_loss_min"] is None
    assert trainer.model is not None


def test_seed003_rejects_the_same_option_twice_and_unknown_keywords():
    from vietnamese_ai import SFTTrainer

    with pytest.raises(ConfigError, match="'so_vong' and 'num_epochs' set the same option"):
        SFTTrainer(so_vong=2, num_epochs=3)
    with pytest.raises(ConfigError, match="unknown keyword 'so_vongg'; did you mean 'so_vong'"):
        SFTTrainer(so_vongg=2)


def test_data_file_path_works_in_the_python_api(tmp_path, tiny_model):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Xin chào", "completion": " bạn"}] * 4)
    result = run_sft(SFTConfig(model_name_or_path=tiny_model, dataset=path, output_dir=str(tmp_path / "o"),
                               max_steps=1, disable_tqdm=True))
    assert result.global_step == 1


def test_qlora_without_bitsandbytes_or_cuda_is_a_clear_error(tmp_path, tiny_model, sft_file, capsys):
    code = main(["sft", f"model_name_or_path={tiny_model}", f"dataset={sft_file}", f"output_dir={tmp_path / 'q'}",
                 "use_lora=true", "load_in_4bit=true"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("vietnamese-ai: error: load_in_4bit: QLoRA needs")
    assert "bitsandbytes" in err or "CUDA" in err


# ---- the Vietnamese-named API: arguments of the wrong type, and every keyword taking effect ----

SFT_DATA = [{"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, 4, 5]}, {"input_ids": [6, 7, 8], "labels": [-100, 7, 8]}]
PAIRS = [{"prompt": "AI là gì?", "chosen": " Trí tuệ nhân tạo.", "rejected": " Robot."}]
API = "a transformers model or a hub name / local path"
RECORDS = "a list of records \\(dicts\\) or a file path"


def _wrong_types(tiny):
    """(call, the start of its one-line message): each names the keyword as the user typed it."""
    from vietnamese_ai import DPOTrainer, RewardModel, RLHFPipeline, SFTTrainer

    return [
        (lambda: RLHFPipeline(sft_config=[("so_vong", 3)]), "RLHFPipeline: sft_config: expected a dict of keywords, got list"),
        (lambda: RLHFPipeline(dpo_config="beta=0.2"), "RLHFPipeline: dpo_config: expected a dict of keywords, got str"),
        (lambda: RLHFPipeline(reward_config=1e-5), "RLHFPipeline: reward_config: expected a dict of keywords, got float"),
        (lambda: RLHFPipeline(output_dir=5), "RLHFPipeline: output_dir: expected a directory path, got int"),
        (lambda: RLHFPipeline(rlhf=["dpo"]), "RLHFPipeline: rlhf must be 'dpo' or 'ppo', got \\['dpo'\\]"),
        (lambda: RLHFPipeline(sft_config={"output_dir": "x"}), "sft_config: 'output_dir' is the whole pipeline's"),
        (lambda: RLHFPipeline(reward_config={"tokenizer_name_or_path": 7}),
         "reward_config: 'tokenizer_name_or_path': expected a string, got int"),
        (lambda: RLHFPipeline().sft(tiny, 5), f"RLHFPipeline.sft: sft_data: expected {RECORDS}, got int"),
        (lambda: RLHFPipeline().sft(tiny, SFT_DATA, tokenizer="gpt2"),
         "RLHFPipeline.sft: tokenizer: expected a loaded tokenizer \\(a name or path goes in the config key "
         "tokenizer_name_or_path\\), got str"),
        (lambda: RLHFPipeline().train_reward_model(5, PAIRS),
         f"RLHFPipeline.train_reward_model: reward_model: expected {API}, got int"),
        (lambda: RLHFPipeline().rlhf(None, None, PAIRS), f"RLHFPipeline.rlhf: model: required \\({API}\\)"),
        (lambda: RLHFPipeline().rlhf(tiny, 3.5, PAIRS), f"RLHFPipeline.rlhf: ref_model: expected {API}, got float"),
        (lambda: RLHFPipeline().chay_day_du(model=tiny, reward_model=5, preference_data=PAIRS),
         f"RLHFPipeline.chay_day_du: reward_model: expected {API}, got int"),
        (lambda: RLHFPipeline().chay_day_du(model=tiny, sft_data=SFT_DATA, preference_data=PAIRS[0]),
         f"RLHFPipeline.chay_day_du: preference_data: expected {RECORDS}, got one dict; wrap it in a list"),
        (lambda: RLHFPipeline().chay_day_du(model="", sft_data=SFT_DATA, preference_data=PAIRS),
         f"RLHFPipeline.chay_day_du: model: expected {API}, got an empty string"),
        (lambda: RLHFPipeline(rlhf="ppo").chay_day_du(model=tiny, sft_data=SFT_DATA, preference_data=PAIRS),
         "chay_day_du: rlhf='ppo' is rewarded by the trained reward model; give reward_model"),
        (lambda: RLHFPipeline(rlhf="ppo").chay_day_du(model=tiny, reward_model=tiny, sft_data=SFT_DATA,
                                                     preference_data=[{"chosen": "a", "rejected": "b"}]),
         "dpo_data: record 1: field 'prompt': missing"),
        (lambda: SFTTrainer(output_dir=5), "sft: 'output_dir': expected a string, got int"),
        (lambda: SFTTrainer().huan_luyen(5, SFT_DATA), f"SFTTrainer.huan_luyen: model: expected {API}, got int"),
        (lambda: SFTTrainer().huan_luyen(tiny, 5), f"SFTTrainer.huan_luyen: du_lieu: expected {RECORDS}, got int"),
        (lambda: SFTTrainer().huan_luyen(tiny, SFT_DATA, du_lieu_val=""),
         f"SFTTrainer.huan_luyen: du_lieu_val: expected {RECORDS}, got an empty string"),
        (lambda: SFTTrainer().huan_luyen(tiny, SFT_DATA, tokenizer=tiny),
         "SFTTrainer.huan_luyen: tokenizer: expected a loaded tokenizer"),
        (lambda: DPOTrainer(output_dir=["a"]), "dpo: 'output_dir': expected a string, got list"),
        (lambda: DPOTrainer().huan_luyen(tiny, 5, PAIRS), f"DPOTrainer.huan_luyen: ref_model: expected {API}, got int"),
        (lambda: DPOTrainer().huan_luyen(tiny, None, 5), f"DPOTrainer.huan_luyen: preference_data: expected {RECORDS}"),
        (lambda: RewardModel(output_dir=7), "reward: 'output_dir': expected a string, got int"),
        (lambda: RewardModel().huan_luyen(tiny, PAIRS, so_vong="ba"), "reward: 'so_vong': "),
        (lambda: RewardModel().huan_luyen(tiny, PAIRS, du_lieu_val=3),
         f"RewardModel.huan_luyen: du_lieu_val: expected {RECORDS}, got int"),
        (lambda: RewardModel().huan_luyen(tiny, PAIRS, tokenizer=b"gpt2"),
         "RewardModel.huan_luyen: tokenizer: expected a loaded tokenizer"),
        (lambda: RewardModel().diem_danh_gia(tiny, ["a"], prompts="hỏi"),
         "diem_danh_gia: prompts must be a list \\(one prompt per text\\), got str"),
    ]


def test_vietnamese_api_arguments_of_the_wrong_type_are_one_line_naming_the_keyword(tmp_path, tiny_model, monkeypatch):
    """Each mistake is refused in one line that names the keyword typed (reward_model, not model;
    du_lieu, not 'train data'), before any model loads or any directory is made."""
    from vietnamese_ai.errors import UserError

    monkeypatch.chdir(tmp_path)   # anything written would land here
    for call, message in _wrong_types(tiny_model):
        with pytest.raises(UserError) as caught:
            call()
        text = str(caught.value)
        assert re.match(message, text) and "\n" not in text, (message, text)
    assert os.listdir(tmp_path) == []


def _resolved_config(ket_qua):
    with open(os.path.join(ket_qua["output_dir"], "config.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


# Per config key of ALIASES, a value no default has, so that its arrival in config.yaml is the keyword's doing.
ALIAS_VALUES = {"num_train_epochs": 2, "per_device_train_batch_size": 1, "learning_rate": 3e-4,
                "gradient_accumulation_steps": 2, "max_grad_norm": 0.5}


def _spellings():
    """Two sets of keywords for the same settings: the first name of each config key in ALIASES
    (so_vong, kich_thuoc_batch, ...), then its next name or the key itself (num_epochs, batch_size,
    learning_rate, ...); between them, every keyword of ALIASES."""
    from vietnamese_ai.vietnamese_api import ALIASES

    names = {key: [alias for alias, target in ALIASES.items() if target == key] + [key] for key in set(ALIASES.values())}
    spellings = [{key: names[key][i] for key in names} for i in (0, 1)]
    assert set(ALIASES) <= {name for spelling in spellings for name in spelling.values()}
    return spellings


@pytest.mark.parametrize("spelling", [0, 1], ids=["first names", "second names"])
def test_each_vietnamese_and_english_keyword_takes_effect(spelling, tmp_path, tiny_model):
    """Every keyword of ALIASES (so_vong and num_epochs, toc_do_hoc and learning_rate, ...) reaches its
    config key in the run's resolved config.yaml: SFTTrainer, DPOTrainer, RewardModel and
    RLHFPipeline's stage configs alike."""
    from vietnamese_ai import DPOTrainer, RewardModel, RLHFPipeline, SFTTrainer

    from vietnamese_ai.recipes.dpo import DPOConfig
    from vietnamese_ai.recipes.reward import RewardConfig
    from vietnamese_ai.vietnamese_api import DPO_DEFAULTS, REWARD_DEFAULTS, SFT_DEFAULTS

    keywords = {name: ALIAS_VALUES[key] for key, name in _spellings()[spelling].items()}  # a new alias needs a value
    expected = {key: ALIAS_VALUES[key] for key in _spellings()[spelling]}
    for key, value in expected.items():   # no run could show the value without its keyword
        defaults = [SFT_DEFAULTS.get(key), DPO_DEFAULTS.get(key), REWARD_DEFAULTS.get(key),
                    SFTConfig.model_fields[key].default, DPOConfig.model_fields[key].default,
                    RewardConfig.model_fields[key].default]
        assert value not in defaults, key
    runs = {
        "sft": lambda out: SFTTrainer(**keywords, max_steps=1, output_dir=out).huan_luyen(tiny_model, SFT_DATA),
        "dpo": lambda out: DPOTrainer(**keywords, max_steps=1, output_dir=out).huan_luyen(tiny_model, None, PAIRS),
        "reward": lambda out: RewardModel(**keywords, max_steps=1, output_dir=out).huan_luyen(tiny_model, PAIRS),
        "rlhf": lambda out: RLHFPipeline(dpo_config={**keywords, "max_steps": 1}, output_dir=out).rlhf(tiny_model, None, PAIRS),
    }
    for name, run in runs.items():
        resolved = _resolved_config(run(str(tmp_path / name)))
        assert {key: resolved[key] for key in expected} == expected, (name, keywords)


def test_the_number_of_epochs_changes_the_step_count(tmp_path, tiny_model):
    """The two records fit one micro-batch and gradient_accumulation=1: one optimizer step per epoch."""
    from vietnamese_ai import SFTTrainer

    steps = {}
    for keywords in ({"so_vong": 1}, {"so_vong": 2}, {"num_epochs": 2}, {"num_epochs": 3}):
        (name, value), = keywords.items()
        trainer = SFTTrainer(**keywords, gradient_accumulation=1, output_dir=str(tmp_path / f"{name}{value}"))
        steps[name, value] = trainer.huan_luyen(tiny_model, SFT_DATA)["steps"]
    assert steps == {("so_vong", 1): 1, ("so_vong", 2): 2, ("num_epochs", 2): 2, ("num_epochs", 3): 3}
