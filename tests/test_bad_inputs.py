"""A corpus of bad inputs across every command and the Vietnamese-named API: each gives exit code 2
and exactly one line naming the file, record and field (or the key), never a traceback, and never
a silent acceptance. Data errors come before any model is loaded: the data cases point at a model
that does not exist, so a model error would show instead."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.errors import ConfigError, DataError, UserError

NO_MODEL = "/nonexistent/model"
PC = [{"prompt": "Xin chào", "completion": "Chào bạn!"}, {"prompt": "Hello", "completion": "Hi there."}]
PAIRS = [{"prompt": "Giúp tôi?", "chosen": "Vâng, tôi giúp.", "rejected": "Đồ ngốc."},
         {"prompt": "Help me?", "chosen": "Sure, happy to.", "rejected": "Go away."}]
SMALL = ["max_steps=1", "save_steps=0", "disable_tqdm=true", "per_device_train_batch_size=2"]


def _cand(i, prompt, response, **extra):
    return {"prompt_index": i, "prompt": prompt, "response": response, "sampling": {"temperature": 0.7}, **extra}


# (command, records written to data.jsonl (None: none), extra argv, fragments the one-line error must contain)
DATA_CASES = {
    "sft missing completion": ("sft", [PC[0], {"prompt": "x"}], [], ["data.jsonl: line 2", "field 'completion'", "missing"]),
    "sft id not an integer": ("sft", [{"input_ids": [1, 2.5]}], [], ["line 1", "field 'input_ids[1]'", "got float 2.5"]),
    "sft bad role": ("sft", [{"messages": [{"role": "bot", "content": "x"}]}], [], ["field 'messages[0].role'", "'bot'"]),
    "sft no known fields": ("sft", [{"question": "x"}], [], ["line 1", "no known fields"]),
    "sft eval record": ("sft", PC, ["eval_dataset={dir}/data.jsonl"], []),  # a control: only the model is missing
    "dpo chosen equals rejected": ("dpo", [{**PAIRS[0], "rejected": PAIRS[0]["chosen"]}], [],
                                   ["line 1", "field 'rejected'", "identical"]),
    "dpo nan margin": ("dpo", [PAIRS[0], {**PAIRS[1], "margin": float("nan")}], [], ["line 2", "field 'margin'", "finite"]),
    "reward infinite margin": ("reward", [{**PAIRS[0], "margin": float("inf")}], [], ["line 1", "field 'margin'", "finite"]),
    "orpo empty chosen": ("orpo", [{**PAIRS[0], "chosen": " "}], [], ["field 'chosen'", "empty"]),
    "kto label not a bool": ("kto", [{"prompt": "x", "completion": "y", "label": "yes"}], [], ["field 'label'", "'yes'"]),
    "score-sft nan score": ("score-sft", [{**PC[0], "score": 0.5}, {**PC[1], "score": float("nan")}], [],
                            ["line 2", "field 'score'", "finite"]),
    "score-sft score missing": ("score-sft", [PC[0]], [], ["line 1", "field 'score'", "missing"]),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_record_errors_come_before_the_model_loads_in_one_line(tmp_path, capsys, case):
    command, rows, extra, fragments = DATA_CASES[case]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    argv = [*command.split(), f"model_name_or_path={NO_MODEL}", f"dataset={data}", f"output_dir={tmp_path / 'out'}",
            *SMALL, *[e.format(dir=tmp_path) for e in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vietnamese-ai: error:") and "Traceback" not in err
    if not fragments:  # the data is fine: the missing model is what is reported
        assert "/nonexistent/model" in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("broken")
    no_tokenizer = root / "no-tokenizer"
    os.makedirs(no_tokenizer)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tiny_model, name), no_tokenizer)
    truncated = root / "truncated"
    shutil.copytree(tiny_model, truncated)
    with open(truncated / "model.safetensors", "r+b") as f:
        f.truncate(os.path.getsize(truncated / "model.safetensors") // 2)
    return {"no-tokenizer": str(no_tokenizer), "truncated": str(truncated)}


# (argv after the command's name; {model} {notok} {trunc} {dir} are filled in) -> fragments
CLI_CASES = {
    "output_dir is a file": ("sft model_name_or_path={model} dataset={data} output_dir={dir}/afile",
                             ["output_dir", "is a file"]),
    "output_dir under a file": ("sft model_name_or_path={model} dataset={data} output_dir={dir}/afile/run",
                                ["output_dir", "is a file"]),
    "score output is a directory": ("score model_name_or_path={model} dataset={responses} output={dir}",
                                    ["output", "is a directory"]),
    "score with a plain causal LM": ("score model_name_or_path={model} dataset={responses} output={dir}/s.jsonl",
                                     ["no trained reward head"]),
    "score normalize without statistics": ("score model_name_or_path={model} dataset={responses} normalize=true "
                                           "output={dir}/s.jsonl", ["normalize", "reward_stats.json"]),
    "score-sft with a malformed target_scorer": ("score-sft model_name_or_path={model} dataset={data} "
                                                 "target_scorer=constitution@x output_dir={dir}/o",
                                                 ["key 'target_scorer': weight 'x' in 'constitution@x' is not a number"]),
    "score-sft target_scorer without a reward head": ("score-sft model_name_or_path={model} dataset={data} "
                                                      "target_scorer=reward_model:{model} output_dir={dir}/o",
                                                      ["target_scorer: '{model}' has no trained reward head"]),
    "model without tokenizer files": ("sft model_name_or_path={notok} dataset={data} output_dir={dir}/o",
                                      ["no tokenizer files", "tokenizer_name_or_path"]),
    "truncated safetensors": ("sft model_name_or_path={trunc} dataset={data} output_dir={dir}/o",
                              ["model.safetensors", "cut short"]),
    "attention kernel not installed": ("sft model_name_or_path={model} dataset={data} attn_implementation=flash_attention_2",
                                       ["key 'attn_implementation'", "flash_attn", "not installed"]),
    "unknown attention kernel": ("sft model_name_or_path={model} dataset={data} attn_implementation=fast",
                                 ["key 'attn_implementation'", "expected one of"]),
    "negative clipping": ("sft model_name_or_path={model} dataset={data} max_grad_norm=-1",
                          ["key 'max_grad_norm'", "greater than or equal to 0"]),
    "temperature zero": ("feedback generate model_name_or_path={model} prompts={data} temperatures=[0]",
                         ["key 'temperatures'", "> 0"]),
    "negative temperature": ("feedback generate model_name_or_path={model} prompts={data} temperatures=-1",
                             ["key 'temperatures'", "> 0"]),
    "top_p above one": ("feedback generate model_name_or_path={model} prompts={data} top_p=[1.5]",
                        ["key 'top_p'", "(0, 1]"]),
    "top_p zero": ("feedback generate model_name_or_path={model} prompts={data} top_p=0", ["key 'top_p'"]),
    "no temperatures": ("feedback generate model_name_or_path={model} prompts={data} temperatures=[]",
                        ["key 'temperatures'"]),
    "typo suggests the closest key": ("sft model_name_or_path={model} dataset={data} learning_rat=1e-4",
                                      ["unknown key 'learning_rat'", "did you mean 'learning_rate'"]),
    "typo in a YAML config": ("sft --config {dir}/typo.yaml", ["typo.yaml", "did you mean 'per_device_train_batch_size'"]),
    "YAML config is a directory": ("sft --config {dir}", ["is a directory"]),
    "cross-key check names the keys, not the dict": ("dpo model_name_or_path={model} dataset={data} loss_type=robust "
                                                     "label_smoothing=0.6", ["label_smoothing must be below 0.5"]),
    "unknown command": ("sfft", ["unknown command 'sfft'", "did you mean 'sft'"]),
    "label: one index for two prompts": ("feedback label candidates={two_prompts} output={dir}/p.jsonl",
                                         ["line 2", "prompt_index 0 already belongs", "line 1"]),
    "label: sampling not an object": ("feedback label candidates={bad_sampling} output={dir}/p.jsonl",
                                      ["line 1", "field 'sampling'", "expected an object"]),
    "label: sampling temperature not a number": ("feedback label candidates={bad_temperature} output={dir}/p.jsonl",
                                                 ["line 1", "field 'sampling.temperature'", "'abc'"]),
    "label: no pair reaches the margin": ("feedback label candidates={close} output={dir}/p.jsonl min_margin=0.9",
                                          ["0 pairs", "min_margin=0.9", "largest gap"]),
    "label: output is a directory": ("feedback label candidates={close} output={dir}", ["output", "is a directory"]),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_mistakes_are_one_line(tmp_path, capsys, tiny_model, broken_models, case):
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "typo.yaml").write_text(f"model_name_or_path: {tiny_model}\nper_device_train_batch_siz: 2\n")
    paths = {
        "model": tiny_model, "notok": broken_models["no-tokenizer"], "trunc": broken_models["truncated"], "dir": tmp_path,
        "data": write_jsonl(tmp_path / "data.jsonl", [{"prompt": "Xin chào", "completion": "Chào bạn!"}] * 2),
        "responses": write_jsonl(tmp_path / "r.jsonl", [{"prompt": "Xin chào", "response": "Chào bạn!"}]),
        "two_prompts": write_jsonl(tmp_path / "c1.jsonl", [_cand(0, "Giúp tôi?", "Vâng."), _cand(0, "Help me?", "Sure.")]),
        "bad_sampling": write_jsonl(tmp_path / "c2.jsonl", [_cand(0, "Giúp tôi?", "Vâng.", sampling="hot")]),
        "bad_temperature": write_jsonl(tmp_path / "c3.jsonl", [_cand(0, "Giúp tôi?", "Vâng.",
                                                                     sampling={"temperature": "abc"})]),
        "close": write_jsonl(tmp_path / "c4.jsonl", [_cand(0, "Giúp tôi?", "Vâng, tôi giúp bạn."),
                                                     _cand(0, "Giúp tôi?", "Vâng, tôi sẽ giúp bạn.")]),
    }
    argv, fragments = CLI_CASES[case]
    assert main([a.format(**paths) for a in argv.split()] + ["disable_tqdm=true"] * argv.startswith("sft ")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vietnamese-ai: error:"), err
    for fragment in fragments:
        assert fragment.format(**paths) in err, err


def test_numeric_text_is_a_path_not_a_number(tmp_path, tiny_model, sft_file, monkeypatch):
    """output_dir=2024 names a directory (regression: 'Input should be a valid string')."""
    monkeypatch.chdir(tmp_path)
    assert main(["sft", f"model_name_or_path={tiny_model}", f"dataset={sft_file}", "output_dir=2024", *SMALL]) == 0
    assert os.path.isdir(tmp_path / "2024" / "final")


def test_label_never_replaces_an_unrelated_file_next_to_its_output(tmp_path, capsys):
    unrelated = tmp_path / "unpaired.jsonl"
    unrelated.write_text("my own file\n")
    candidates = write_jsonl(tmp_path / "c.jsonl", [_cand(0, "Giúp tôi?", "Vâng, tôi rất vui được giúp bạn."),
                                                    _cand(0, "Giúp tôi?", "Đồ ngốc, tự đi mà tìm.")])
    assert main(["feedback", "label", f"candidates={candidates}", f"output={tmp_path / 'pairs.jsonl'}"]) == 0
    assert unrelated.read_text() == "my own file\n"
    assert (tmp_path / "pairs_unpaired.jsonl").is_file()


def test_help_for_every_command_lists_types_choices_and_required_keys(capsys):
    from vietnamese_ai.cli import METHODS

    for command in METHODS:
        assert main([*command.split(), "--help"]) == 0
        text = capsys.readouterr().out
        assert "Options:" in text and "; default:" in text, command
    assert main(["dpo", "--help"]) == 0
    text = capsys.readouterr().out
    assert "loss_type (one of: sigmoid, ipo, hinge, robust, rpo, simpo; default: 'sigmoid')" in text
    assert "model_name_or_path (str; REQUIRED)" in text and "learning_rate (float; default: 1e-06)" in text
    assert main(["feedback", "label", "--help"]) == 0 and "candidates (str; REQUIRED)" in capsys.readouterr().out
    assert main(["feedback", "--help"]) == 0 and "feedback label" in capsys.readouterr().out
    assert main(["feedback"]) == 2 and "feedback generate" in capsys.readouterr().err
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("vietnamese-ai 0.")


def test_help_piped_into_head_is_not_an_error():
    command = f"{sys.executable} -m vietnamese_ai.cli sft --help | head -1"
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.stdout.startswith("vietnamese-ai sft") and "Error" not in result.stderr, result.stderr


API_CASES = {
    "an int as data": (lambda m: __import__("vietnamese_ai").SFTTrainer().huan_luyen(m, 5), DataError,
                       "expected a list of records (dicts) or a file path, got int"),
    "one dict as data": (lambda m: __import__("vietnamese_ai").SFTTrainer().huan_luyen(m, PC[0]), DataError,
                         "got one dict; wrap it in a list"),
    "an int as the model": (lambda m: __import__("vietnamese_ai").SFTTrainer().huan_luyen(7, PC), ConfigError,
                            "model: expected a transformers model or a hub name / local path, got int"),
    "an int as the reference": (lambda m: __import__("vietnamese_ai").DPOTrainer().huan_luyen(m, 3, PAIRS), ConfigError,
                                "ref_model: expected a transformers model"),
    "a bare string of texts": (lambda m: __import__("vietnamese_ai").RewardModel().diem_danh_gia(m, "một văn bản"),
                               ConfigError, "texts must be a list of strings, got one string"),
    "a number among the texts": (lambda m: __import__("vietnamese_ai").RewardModel().diem_danh_gia(m, ["a", 1]),
                                 ConfigError, "texts[1] must be a string, got int"),
    "a plain causal LM as reward model": (lambda m: __import__("vietnamese_ai").RewardModel().diem_danh_gia(m, ["a"]),
                                          ConfigError, "no trained reward head"),
    "a word for a number": (lambda m: __import__("vietnamese_ai").SFTTrainer(so_vong="ba"), ConfigError,
                            "sft: 'so_vong': Input should be a valid number"),
    "a misspelt keyword": (lambda m: __import__("vietnamese_ai").SFTTrainer(toc_do_hocc=1e-4), ConfigError,
                           "unknown keyword 'toc_do_hocc'; did you mean 'toc_do_hoc'?"),
    "an out-of-domain value on a config": (lambda m: __import__("vietnamese_ai.recipes.sft", fromlist=["x"]).SFTConfig(
        learning_rate=-1), ConfigError, "key 'learning_rate': Input should be greater than or equal to 0"),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_python_api_mistakes_are_one_line_errors(tmp_path, monkeypatch, tiny_model, case):
    monkeypatch.chdir(tmp_path)
    call, error, fragment = API_CASES[case]
    with pytest.raises(error) as caught:
        call(tiny_model)
    assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)
    assert fragment in str(caught.value)


def test_score_refuses_a_language_model_adapter(tmp_path, capsys, tiny_model, sft_file):
    from vietnamese_ai.recipes.sft import SFTConfig, run_sft

    adapter = run_sft(SFTConfig(model_name_or_path=tiny_model, dataset=sft_file, output_dir=str(tmp_path / "sft"),
                                use_lora=True, max_steps=1, save_steps=0, disable_tqdm=True)).final_dir
    responses = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "Xin chào", "response": "Chào bạn!"}])
    capsys.readouterr()
    assert main(["score", f"model_name_or_path={adapter}", f"dataset={responses}", f"output={tmp_path / 's.jsonl'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a CAUSAL_LM LoRA adapter (a language model), not a reward model" in err


def test_critique_that_revises_nothing_fails_with_the_reason(tmp_path, capsys, tiny_model):
    """A model whose every answer decodes to nothing (its final norm zeroed: uniform logits, and the
    first token is a special one): 0 revisions is an error that says why, not an empty file."""
    import torch

    from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer

    silent = load_causal_lm(tiny_model)
    with torch.no_grad():
        silent.model.norm.weight.zero_()
    silent.save_pretrained(tmp_path / "silent")
    load_tokenizer(tiny_model).save_pretrained(tmp_path / "silent")
    answers = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Thủ đô?", "response": "Đồ ngốc."}])
    assert main(["feedback", "critique", f"model_name_or_path={tmp_path / 'silent'}", f"dataset={answers}",
                 f"output={tmp_path / 'rev.jsonl'}", "max_new_tokens=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "0 revisions" in err and "was empty" in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "rev.jsonl")


@pytest.mark.parametrize("argv, fragments", [
    ("sft max_steps=0", ["key 'max_steps'", "0 steps would train nothing"]),
    ("sft learning_rate=.inf", ["key 'learning_rate'", "finite number"]),
    ("sft fp16=true", ["fp16", "needs a GPU"]),
    ("dpo ref_model_name_or_path=/nonexistent/ref", ["ref_model_name_or_path: '/nonexistent/ref': no such directory"]),
    ("feedback label scorer=constitution@0", ["key 'scorer': every weight is 0 in 'constitution@0'"]),
    ("feedback label scorer=constitution@inf", ["key 'scorer': weight 'inf' in 'constitution@inf' is not a finite number"]),
])
def test_values_outside_their_domain_are_refused_before_any_work(tmp_path, capsys, tiny_model, argv, fragments):
    data = write_jsonl(tmp_path / "d.jsonl", [_cand(0, "Giúp tôi?", "Vâng."), _cand(0, "Giúp tôi?", "Đồ ngốc.")]
                       if argv.startswith("feedback") else PAIRS)
    command, *rest = argv.split()
    common = ([f"candidates={data}", f"output={tmp_path / 'p.jsonl'}"] if command == "feedback" else
              [f"model_name_or_path={tiny_model}", f"dataset={data}", f"output_dir={tmp_path / 'out'}"])
    assert main([command, *rest, *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(f in err for f in fragments), err


class LoadReached(Exception):
    """Raised by the patched loaders: the run got past every check to its first load."""


@pytest.fixture
def loaders_that_stop(monkeypatch):
    """Every tokenizer and model load raises LoadReached, so a refusal is seen to come before any load."""
    import transformers

    def stop(*args, **kwargs):
        raise LoadReached(args[:1])

    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModelForSequenceClassification,
                 transformers.AutoModel, transformers.AutoTokenizer):
        monkeypatch.setattr(auto, "from_pretrained", stop)


# command -> (argv with {policy} where the causal LM goes, the key the user typed for it). Each command
# that loads a causal LM from a path given by a key, with the data it reads.
CAUSAL_LM_CASES = {
    "sft": ("sft model_name_or_path={policy} dataset={pc} output_dir={dir}/o", "model_name_or_path"),
    "dpo": ("dpo model_name_or_path={policy} dataset={pairs} output_dir={dir}/o", "model_name_or_path"),
    "dpo reference": ("dpo model_name_or_path={model} ref_model_name_or_path={policy} dataset={pairs} "
                      "output_dir={dir}/o", "ref_model_name_or_path"),
    "orpo": ("orpo model_name_or_path={policy} dataset={pairs} output_dir={dir}/o", "model_name_or_path"),
    "kto": ("kto model_name_or_path={policy} dataset={unpaired} output_dir={dir}/o", "model_name_or_path"),
    "score-sft": ("score-sft model_name_or_path={policy} dataset={scored} output_dir={dir}/o", "model_name_or_path"),
    "grpo": ("grpo model_name_or_path={policy} dataset={prompts} reward=constitution output_dir={dir}/o",
             "model_name_or_path"),
    "grpo reference": ("grpo model_name_or_path={model} ref_model_name_or_path={policy} dataset={prompts} "
                       "reward=constitution beta=0.1 output_dir={dir}/o", "ref_model_name_or_path"),
    "rloo": ("rloo model_name_or_path={policy} dataset={prompts} reward=constitution output_dir={dir}/o",
             "model_name_or_path"),
    "ppo": ("ppo model_name_or_path={policy} dataset={prompts} reward=constitution output_dir={dir}/o",
            "model_name_or_path"),
    "feedback generate": ("feedback generate model_name_or_path={policy} prompts={prompts} output={dir}/c.jsonl",
                          "model_name_or_path"),
    "feedback critique": ("feedback critique model_name_or_path={policy} dataset={answers} output={dir}/r.jsonl",
                          "model_name_or_path"),
    "evaluate": ("evaluate models=[{model},{policy}] dataset={prompts} output_dir={dir}/o", "models"),
}


def _causal_lm_paths(tmp_path, model):
    return {
        "model": model, "dir": tmp_path,
        "pc": write_jsonl(tmp_path / "pc.jsonl", PC), "pairs": write_jsonl(tmp_path / "pairs.jsonl", PAIRS),
        "unpaired": write_jsonl(tmp_path / "u.jsonl", [{**PC[0], "label": True}, {**PC[1], "label": False}]),
        "scored": write_jsonl(tmp_path / "s.jsonl", [{**PC[0], "score": 0.5}, {**PC[1], "score": -0.5}]),
        "prompts": write_jsonl(tmp_path / "p.jsonl", [{"prompt": q} for q in ("Xin chào", "Hello", "Giúp tôi?", "Hi")] * 2),
        "answers": write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Thủ đô?", "response": "Đồ ngốc."}]),
    }


def _seq_cls_adapter(tmp_path, reward_model, base):
    path = tmp_path / "rm_lora"
    path.mkdir()
    (path / "adapter_config.json").write_text(f'{{"base_model_name_or_path": "{base}", "task_type": "SEQ_CLS"}}')
    return str(path)


@pytest.mark.parametrize("case", list(CAUSAL_LM_CASES))
@pytest.mark.parametrize("given,what", [
    (lambda tmp, rm, base: rm, "a sequence-classification checkpoint (Qwen2ForSequenceClassification)"),
    (_seq_cls_adapter, "a SEQ_CLS LoRA adapter"),
])
def test_a_reward_model_where_a_causal_lm_goes_is_one_line_naming_the_key_before_anything_loads(
        tmp_path, capsys, loaders_that_stop, tiny_model, seeded_reward_model, case, given, what):
    argv, key = CAUSAL_LM_CASES[case]
    policy = given(tmp_path, seeded_reward_model, tiny_model)
    paths = _causal_lm_paths(tmp_path, tiny_model)
    assert main([a.format(policy=policy, **paths) for a in argv.split()]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"vietnamese-ai: error: {key}: '{policy}' is {what}, not a causal language model; "), line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", list(CAUSAL_LM_CASES))
def test_a_causal_lm_where_a_causal_lm_goes_passes_the_check(tmp_path, loaders_that_stop, tiny_model, case):
    argv, _ = CAUSAL_LM_CASES[case]
    with pytest.raises(LoadReached):
        main([a.format(policy=tiny_model, **_causal_lm_paths(tmp_path, tiny_model)) for a in argv.split()])


@pytest.mark.parametrize("argv", [
    "reward model_name_or_path={rm} dataset={pairs} output_dir={dir}/o",   # a reward model trained further
    "ppo model_name_or_path={model} value_model_name_or_path={rm} dataset={prompts} reward=constitution "
    "output_dir={dir}/o",   # a reward model's head gives PPO's first values
    "grpo model_name_or_path={model} dataset={prompts} reward=reward_model:{rm} output_dir={dir}/o",
])
def test_a_reward_model_where_one_is_wanted_passes_the_check(tmp_path, loaders_that_stop, tiny_model,
                                                             seeded_reward_model, argv):
    paths = {**_causal_lm_paths(tmp_path, tiny_model), "rm": seeded_reward_model}
    with pytest.raises(LoadReached):
        main([a.format(**paths) for a in argv.split()])


@pytest.mark.parametrize("argv,key", [
    ("feedback label candidates={candidates} scorer=judge:{rm} output={dir}/p.jsonl", "scorer"),
    ("grpo model_name_or_path={model} dataset={prompts} reward=judge:{rm} output_dir={dir}/o", "reward"),
])
def test_a_reward_model_as_a_judge_is_one_line_naming_the_key(tmp_path, capsys, loaders_that_stop, tiny_model,
                                                              seeded_reward_model, argv, key):
    """A judge answers questions, so it is a causal LM; a reward model there would judge with a random LM head."""
    paths = {**_causal_lm_paths(tmp_path, tiny_model), "rm": seeded_reward_model,
             "candidates": write_jsonl(tmp_path / "c.jsonl", [_cand(0, "Giúp tôi?", "Vâng."),
                                                              _cand(0, "Giúp tôi?", "Đồ ngốc.")])}
    assert main([a.format(**paths) for a in argv.split()]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"vietnamese-ai: error: {key}: '{seeded_reward_model}' is a sequence-classification "
                           f"checkpoint (Qwen2ForSequenceClassification), not a causal language model; "), line


def test_load_causal_lm_itself_refuses_a_reward_model(seeded_reward_model):
    """The last line of defence, for a caller that did not check first."""
    from vietnamese_ai.models.loading import load_causal_lm

    with pytest.raises(ConfigError, match=rf"^model: '{seeded_reward_model}' is a sequence-classification checkpoint "
                                          rf"\(Qwen2ForSequenceClassification\), not a causal language model; "):
        load_causal_lm(seeded_reward_model)
