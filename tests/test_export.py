"""`vietnamese-ai export`: a merged model that equals PEFT's base + adapter, a full model copied
exactly, a model card read from the run's files, an upload that takes its token from HF_TOKEN only,
and bad inputs refused in one line before anything loads or is written."""

import json
import os
import shutil

import pytest
import torch
import yaml

from tests.conftest import read_only_dir, write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.errors import UserError
from vietnamese_ai.recipes import export
from vietnamese_ai.recipes.sft import SFTConfig, run_sft

SECRET = "hf_NeverPrintThisSecret123"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIETNAMESE_AI_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model):
    """A finished LoRA SFT run (3 steps at lr 2e-2, so the adapter is far from the identity)."""
    root = tmp_path_factory.mktemp("export_run")
    rows = [{"prompt": f"Câu hỏi số {i}: thủ đô của Việt Nam là gì?", "completion": " Thủ đô của Việt Nam là Hà Nội."}
            for i in range(12)]
    data = write_jsonl(root / "train.jsonl", rows)
    result = run_sft(SFTConfig(model_name_or_path=tiny_model, dataset=data, output_dir=str(root / "run"), use_lora=True,
                               lora_r=8, lora_alpha=16, learning_rate=2e-2, max_steps=3, save_steps=0, logging_steps=1,
                               per_device_train_batch_size=4, disable_tqdm=True))
    return os.path.dirname(result.final_dir)


@pytest.fixture
def run_copy(tmp_path, lora_run):
    """A copy of the run in a directory of its own, so that its siblings are this test's."""
    path = tmp_path / "runs" / "sft"
    shutil.copytree(lora_run, path)
    return str(path)


def _card(directory) -> tuple[dict, str]:
    text = open(os.path.join(directory, "README.md"), encoding="utf-8").read()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def _logits(model, tokenizer):
    ids = tokenizer(["Thủ đô của Việt Nam là Hà Nội.", "Hello, how can I help you?"], return_tensors="pt",
                    padding=True)
    with torch.no_grad():
        return model(**ids).logits


def test_lora_export_equals_the_peft_model_in_the_base_dtype(tmp_path, run_copy, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    assert export.run_command([run_copy, "--output", str(out)]) == 0
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    assert (out / "chat_template.jinja").exists() and (out / "tokenizer.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft_model = PeftModel.from_pretrained(base, os.path.join(run_copy, "final")).eval()
    expected = _logits(peft_model, tokenizer)
    with peft_model.disable_adapter():   # the adapter moved the model: an unmerged export would not pass
        assert not torch.allclose(_logits(peft_model, tokenizer), expected, atol=1e-4)
    torch.testing.assert_close(_logits(merged, tokenizer), expected, atol=1e-5, rtol=0)
    assert merged.dtype == base.dtype == torch.float32


def test_lora_on_a_bfloat16_base_stays_bfloat16(tmp_path, run_copy, tiny_model):
    from transformers import AutoModelForCausalLM

    base16 = tmp_path / "base16"
    AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).save_pretrained(str(base16))
    for name in os.listdir(tiny_model):
        if name.startswith("tokenizer") or name.endswith(".jinja"):
            shutil.copy(os.path.join(tiny_model, name), base16 / name)
    adapter = tmp_path / "adapter"
    shutil.copytree(os.path.join(run_copy, "final"), adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(base16)}))
    assert export.run_command([str(adapter), "--output", str(tmp_path / "out")]) == 0
    assert AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), dtype="auto").dtype == torch.bfloat16
    assert "in bfloat16" in _card(tmp_path / "out")[1]


def test_full_model_export_equals_the_original_weights(tmp_path, tiny_model):
    from safetensors.torch import load_file

    out = tmp_path / "copy"
    assert export.run_command([tiny_model, "--output", str(out)]) == 0
    original = load_file(os.path.join(tiny_model, "model.safetensors"))
    copied = load_file(str(out / "model.safetensors"))
    assert original.keys() == copied.keys()
    for name, tensor in original.items():
        assert torch.equal(copied[name], tensor), name
    assert (out / "tokenizer.json").exists() and (out / "chat_template.jinja").exists()
    front, body = _card(out)
    assert front["library_name"] == "transformers" and "vietnamese-ai" in front["tags"]


def test_card_is_read_from_the_run_files(tmp_path, run_copy, tiny_model):
    out = tmp_path / "out"
    assert export.run_command([run_copy, "--output", str(out)]) == 0
    front, body = _card(out)
    assert front["base_model"] == tiny_model
    assert front["tags"] == ["vietnamese-ai", "sft"]
    assert front["language"] == ["vi"]   # the data is Vietnamese only
    info = json.load(open(os.path.join(run_copy, "run.json")))
    metrics = [json.loads(line) for line in open(os.path.join(run_copy, "metrics.jsonl"))]
    assert len({m["loss"] for m in metrics}) == 3   # distinct losses: the card must show the last one
    assert f"- steps: {info['steps']}" in body
    assert f"| loss | {metrics[-1]['loss']:.6g} |" in body and f"{metrics[0]['loss']:.6g}" not in body
    assert "| learning_rate | 0.02 |" in body and "r=8, alpha=16" in body and "**sft**" in body
    assert "train.jsonl" in body
    assert "## Evaluation" not in body


def _eval_json(directory, model_paths, name="sft"):
    os.makedirs(directory, exist_ok=True)
    report = {"baseline": "base", "models": {
        "base": {"score_mean": 0.1111, "toxic_rate": 0.5},
        name: {"score_mean": 0.4321, "toxic_rate": 0.125,
               "suites": {"jailbreak": {"vi": {"attack_success_rate": 0.0625, "ci95": [0.0, 0.2]}}}}},
              "pairs": {f"{name}_vs_base": {"win_rate": 0.6875, "tie_rate": 0.125, "loss_rate": 0.1875, "kl": 0.03}},
              "model_paths": model_paths}
    with open(os.path.join(directory, "eval.json"), "w", encoding="utf-8") as f:
        json.dump(report, f)
    return str(directory)


def test_evaluation_numbers_appear_when_given(tmp_path, run_copy, tiny_model):
    evaluation = _eval_json(tmp_path / "elsewhere" / "eval", {"base": tiny_model, "sft": os.path.join(run_copy, "final")})
    assert export.run_command([run_copy, "--output", str(tmp_path / "out"), "--evaluation", evaluation]) == 0
    body = _card(tmp_path / "out")[1]
    for row in ("| score (mean) | 0.4321 |", "| toxic rate | 0.125 |", "| win rate vs baseline | 0.6875 |",
                "| jailbreak (vi): attack success rate | 0.0625 |"):
        assert row in body
    assert "0.1111" not in body   # the baseline's numbers are not this model's


def test_evaluation_beside_the_run_is_found_and_others_are_not(tmp_path, run_copy, tiny_model):
    runs = os.path.dirname(run_copy)
    _eval_json(os.path.join(runs, "eval"), {"base": tiny_model, "sft": os.path.join(run_copy, "final")})
    _eval_json(os.path.join(runs, "eval_other"), {"base": tiny_model, "other": "/somewhere/else"}, name="other")
    assert export.run_command([run_copy, "--output", str(tmp_path / "out")]) == 0
    body = _card(tmp_path / "out")[1]
    assert "From `eval/eval.json`" in body and "eval_other" not in body
    with pytest.raises(UserError, match="did not evaluate"):
        export.run_command([run_copy, "--output", str(tmp_path / "out2"), "--evaluation", os.path.join(runs, "eval_other")])


def test_secrets_in_the_config_never_reach_the_output(tmp_path, run_copy):
    with open(os.path.join(run_copy, "config.yaml"), "a", encoding="utf-8") as f:
        f.write(f"hub_token: {SECRET}\njudge:\n  api_key: {SECRET}\nwandb_password: {SECRET}\n")
    out = tmp_path / "out"
    assert export.run_command([run_copy, "--output", str(out)]) == 0
    body = _card(out)[1]
    assert "tokenizer_name_or_path" in body   # a key with 'token' inside a word is not a secret
    for name in os.listdir(out):
        assert SECRET not in (out / name).read_bytes().decode("utf-8", "replace"), name


class FakeHfApi:
    calls: list = []

    def __init__(self, token=None, **kwargs):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        assert os.path.isfile(os.path.join(folder_path, "README.md"))   # the export is complete before the upload
        self.calls.append(("upload_folder", {"folder_path": folder_path, "repo_id": repo_id, **kwargs}))


def test_push_to_hub_uploads_with_the_token_from_the_environment(tmp_path, run_copy, monkeypatch, caplog):
    import huggingface_hub

    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    out = tmp_path / "out"
    assert export.run_command([run_copy, "--output", str(out), "--push-to-hub", "me/tiny-sft", "--private"]) == 0
    calls = dict(FakeHfApi.calls)
    assert calls["init"]["token"] == SECRET
    assert calls["create_repo"] == {"repo_id": "me/tiny-sft", "private": True, "exist_ok": True, "token": SECRET}
    assert calls["upload_folder"]["folder_path"] == str(out) and calls["upload_folder"]["repo_id"] == "me/tiny-sft"
    assert calls["upload_folder"]["token"] == SECRET
    assert SECRET not in caplog.text
    assert all(SECRET not in (out / name).read_bytes().decode("utf-8", "replace") for name in os.listdir(out))
    assert 'from_pretrained("me/tiny-sft")' in _card(out)[1]


def test_a_failed_push_is_one_line_without_the_token_and_keeps_the_export(tmp_path, tiny_model, monkeypatch):
    import huggingface_hub

    class Refusing(FakeHfApi):
        def create_repo(self, repo_id, **kwargs):
            raise OSError(f"401 Client Error: bad credentials {SECRET}")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with pytest.raises(UserError) as caught:
        export.run_command([tiny_model, "--output", str(tmp_path / "out"), "--push-to-hub", "me/x"])
    message = str(caught.value)
    assert "pushing to 'me/x' failed" in message and "401" in message and SECRET not in message
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_push_without_hf_token_is_one_line_before_any_work(tmp_path, capsys):
    # The source does not exist: the token's absence is reported first, so nothing was looked at.
    assert main(["export", str(tmp_path / "missing"), "--output", str(tmp_path / "out"), "--push-to-hub", "me/x"]) == 2
    assert capsys.readouterr().err.strip() == "vietnamese-ai: error: export: --push-to-hub needs HF_TOKEN in the environment"
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_unless_overwrite(tmp_path, tiny_model, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", tiny_model, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "exists and is not empty" in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["export", tiny_model, "--output", str(out), "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_a_failed_export_leaves_no_output(tmp_path, tiny_model, monkeypatch):
    def half_written(source, directory, trust_remote_code=False):
        open(os.path.join(directory, "model.safetensors"), "wb").write(b"partial")
        raise RuntimeError("disk went away")

    monkeypatch.setattr(export, "write_model", half_written)
    with pytest.raises(RuntimeError):
        export.run_command([tiny_model, "--output", str(tmp_path / "out")])
    assert [e for e in os.listdir(tmp_path) if e != "cache"] == []   # neither the output nor a temporary sibling


def _reward_model(path):
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"architectures": ["Qwen2ForSequenceClassification"], "model_type": "qwen2"}, f)


def _seq_cls_adapter(path):
    os.makedirs(path)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump({"base_model_name_or_path": "/x", "task_type": "SEQ_CLS"}, f)


def _unfinished_run(path):
    os.makedirs(path)
    open(os.path.join(path, "metrics.jsonl"), "w").write('{"step": 1, "loss": 1.0}\n')


BAD = {
    "missing path": (None, "{tmp}/nothere", ["no such directory"]),
    "neither run nor model": (lambda p: os.makedirs(p) or open(os.path.join(p, "notes.txt"), "w").close(), "{src}",
                              ["neither a run directory", "nor a model directory"]),
    "a file": (lambda p: open(p, "w").close(), "{src}", ["is a file"]),
    "reward model": (_reward_model, "{src}", ["sequence-classification checkpoint", "not a causal language model"]),
    "classifier adapter": (_seq_cls_adapter, "{src}", ["SEQ_CLS LoRA adapter", "not a causal language model"]),
    "unfinished run": (_unfinished_run, "{src}", ["has no final model", "finished"]),
    "private without push": ("tiny", "{tiny} --private", ["--private applies to --push-to-hub"]),
    "unknown flag": ("tiny", "{tiny} --bogus", ["unrecognized arguments: --bogus"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs_are_one_line_before_loading(tmp_path, tiny_model, capsys, monkeypatch, case):
    make, source, fragments = BAD[case]
    src = str(tmp_path / "src")
    if callable(make):
        make(src)
    monkeypatch.setattr(export, "write_model", lambda *a, **k: pytest.fail("loaded a model for bad input"))
    argv = source.format(tmp=tmp_path, src=src, tiny=tiny_model).split() + ["--output", str(tmp_path / "out")]
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("vietnamese-ai: error:"), err
    for fragment in fragments:
        assert fragment in err, err
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_one_line(tmp_path, tiny_model, capsys, monkeypatch):
    locked = read_only_dir(tmp_path / "locked", monkeypatch)
    monkeypatch.setattr(export, "write_model", lambda *a, **k: pytest.fail("loaded a model for bad input"))
    assert main(["export", tiny_model, "--output", str(locked / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--output" in err and "not writable" in err


def test_output_inside_the_source_is_refused(tmp_path, run_copy):
    with pytest.raises(UserError, match="holds the model being exported"):
        export.run_command([run_copy, "--output", os.path.dirname(run_copy), "--overwrite"])
