"""`vietnamese-ai export RUN_OR_MODEL --output DIR`: one self-contained model directory with a model card.

A LoRA adapter is merged into its base (PEFT's merge_and_unload) in the base's own dtype; a full
model is loaded and saved again. Either way the output holds safetensors weights, the tokenizer and
its chat template, and loads with `AutoModelForCausalLM.from_pretrained` without PEFT.

The model card (README.md, in the Hugging Face hub's format: YAML front matter, then markdown) is
written from the run's files only (config.yaml, run.json, metrics.jsonl) and from the eval.json of
an evaluation of this model: one passed with --evaluation, or a sibling directory of the run whose
eval.json's model_paths name this model. Config keys that name a secret are left out of it.

The output is written into a temporary sibling and renamed into place at the end, so a failed export
leaves nothing under its name. `--push-to-hub REPO` then uploads it with huggingface_hub; the token
comes from HF_TOKEN only, and is never logged or written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from vietnamese_ai.errors import OneLineParser, UserError
from vietnamese_ai.data.mixture import Source as DataSource, parse_sources
from vietnamese_ai.data.text import VIETNAMESE_LETTERS
from vietnamese_ai.files import atomic_directory, check_writable_directory, load_yaml, names_a_secret, yaml_problem
from vietnamese_ai.models.loading import LOAD_ERRORS, TOKENIZER_FILES, adapter_base, check_safetensors, not_a_causal_lm
from vietnamese_ai.recipes.evaluate import HEADLINES

log = logging.getLogger("vietnamese_ai")

RUN_FILES = ("config.yaml", "run.json", "metrics.jsonl")
MODEL_FILES = ("config.json", "adapter_config.json")
# The settings the card shows first, when the run has them (the full config follows, secrets left out).
KEY_SETTINGS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "lr_scheduler_type", "warmup_ratio", "weight_decay", "max_length",
                "beta", "loss_type", "label_smoothing", "rpo_alpha", "gamma", "delta", "desirable_weight",
                "undesirable_weight", "kl_coef", "num_generations", "temperature", "reward", "seed")
DATA_KEYS = ("dataset", "eval_dataset", "prompts")
# Logged by every method: the card lists the method's own metrics beside the loss, not these.
GENERIC_METRICS = {"step", "epoch", "learning_rate", "tokens_per_second", "mfu", "grad_norm"}
VIETNAMESE = re.compile(f"[{''.join(sorted(VIETNAMESE_LETTERS))}]", re.IGNORECASE)
ENGLISH = re.compile(r"\b(the|is|are|and|you|what|how|of|to|in|it|this|that)\b", re.IGNORECASE)
NO_TOKEN = "export: --push-to-hub needs HF_TOKEN in the environment"


@dataclass
class Source:
    """What is exported: the model (or adapter) directory and, for a run, its files."""

    model_dir: str
    run_dir: str | None = None
    base: str | None = None                                  # the adapter's base model; None for a full model
    config: dict[str, Any] = field(default_factory=dict)     # config.yaml, as written by the run
    info: dict[str, Any] = field(default_factory=dict)       # run.json
    last_metrics: dict[str, Any] = field(default_factory=dict)   # metrics.jsonl's last line with a loss


def _has(path: str, names: tuple[str, ...]) -> bool:
    return any(os.path.isfile(os.path.join(path, n)) for n in names)


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"export: {path}: unreadable ({type(e).__name__}: {e})") from None


def _last_metrics(path: str) -> dict[str, Any]:
    """The last record of metrics.jsonl that has a loss (a torn last line is skipped)."""
    last: dict[str, Any] = {}
    if not os.path.isfile(path):
        return last
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "loss" in record:
                last = record
    return last


def _read_run(run_dir: str, source: Source) -> None:
    config_path = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(config_path):
        try:
            with open(config_path, encoding="utf-8") as f:
                config = load_yaml(f) or {}
        except yaml.YAMLError as e:
            raise UserError(f"export: {yaml_problem(e, config_path)}") from None
        if not isinstance(config, dict):
            raise UserError(f"export: {config_path}: expected a mapping of keys to values")
        source.config = config
    if os.path.isfile(os.path.join(run_dir, "run.json")):
        source.info = _read_json(os.path.join(run_dir, "run.json"))
    source.last_metrics = _last_metrics(os.path.join(run_dir, "metrics.jsonl"))
    source.run_dir = run_dir


def find_source(path: str) -> Source:
    """The model directory and run files of RUN_OR_MODEL, from file names only; one-line errors for a
    missing path, a directory that is neither a run nor a model, and a reward model or classifier."""
    if not os.path.exists(path):
        raise UserError(f"export: '{path}': no such directory")
    if not os.path.isdir(path):
        raise UserError(f"export: '{path}' is a file; give a run directory or a model directory")
    if _has(path, MODEL_FILES):
        source = Source(model_dir=path)
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.basename(os.path.abspath(path)) == "final" and _has(parent, RUN_FILES):
            _read_run(parent, source)   # RUN/final: the card can still tell the run's story
    elif _has(path, RUN_FILES):
        final = os.path.join(path, "final")
        if not _has(final, MODEL_FILES):
            raise UserError(f"export: run '{path}' has no final model (final/ with config.json or adapter_config.json); "
                            f"is the run finished?")
        source = Source(model_dir=final)
        _read_run(path, source)
    else:
        raise UserError(f"export: '{path}' is neither a run directory (config.yaml, run.json, final/) nor a model "
                        f"directory (config.json or adapter_config.json)")
    what = not_a_causal_lm(source.model_dir)
    if what:
        raise UserError(f"export: '{source.model_dir}' is {what}, not a causal language model; export writes "
                        f"causal LMs (a reward model or classifier is used as it is, by reward= or scorer=)")
    source.base = adapter_base(source.model_dir)
    return source


def check_output(output: str, source: Source, overwrite: bool) -> None:
    if os.path.isdir(output) and os.listdir(output) and not overwrite:
        raise UserError(f"export: --output '{output}' exists and is not empty; choose another directory or add "
                        f"--overwrite")
    out = os.path.realpath(output)
    for inside in filter(None, (source.model_dir, source.run_dir)):
        if out == os.path.realpath(inside) or os.path.realpath(inside).startswith(out + os.sep):
            raise UserError(f"export: --output '{output}' holds the model being exported; choose another directory")
    check_writable_directory(output, "--output")


# ----------------------------------------------------------------------------------------------------
# The model


def write_model(source: Source, directory: str, trust_remote_code: bool = False) -> str:
    """Save the merged (or copied) model and its tokenizer into `directory`; returns its dtype's name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vietnamese_ai.recipes.common import quiet_transformers

    quiet_transformers()   # no load/save bars or advisory warnings between our own lines
    weights_dir = source.base or source.model_dir
    if os.path.isdir(weights_dir):
        check_safetensors(weights_dir)
    try:
        # dtype="auto": the dtype the (base) checkpoint was saved in, so that the merge keeps it.
        model = AutoModelForCausalLM.from_pretrained(weights_dir, dtype="auto", trust_remote_code=trust_remote_code)
        if source.base:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, source.model_dir).merge_and_unload()
        tokenizer_dir = source.model_dir if _has(source.model_dir, TOKENIZER_FILES) else weights_dir
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=trust_remote_code)
    except LOAD_ERRORS as e:
        detail = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise UserError(f"export: '{source.model_dir}' could not be loaded ({detail})") from None
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    template = os.path.join(source.model_dir, "chat_template.jinja")
    if os.path.isfile(template) and not os.path.isfile(os.path.join(directory, "chat_template.jinja")):
        with open(template, encoding="utf-8") as f, open(os.path.join(directory, "chat_template.jinja"), "w",
                                                          encoding="utf-8") as g:
            g.write(f.read())
    return str(model.dtype).replace("torch.", "")


# ----------------------------------------------------------------------------------------------------
# Evaluations


def _same_path(a: str, b: str, base_dirs: tuple[str, ...]) -> bool:
    candidates = [b] if os.path.isabs(b) else [os.path.join(d, b) for d in base_dirs]
    return any(os.path.exists(c) and os.path.realpath(c) == os.path.realpath(a) for c in candidates)


def _evaluated_name(report: dict[str, Any], model_dir: str, eval_dir: str) -> str | None:
    """The name under which `report` (an eval.json) evaluated `model_dir`, None if it did not."""
    paths = report.get("model_paths") or (report.get("settings") or {}).get("model_paths") or {}
    if not isinstance(paths, dict):
        return None
    for name, path in paths.items():
        if isinstance(path, str) and name in report.get("models", {}) and \
                _same_path(model_dir, path, (os.getcwd(), os.path.dirname(os.path.abspath(eval_dir)))):
            return name
    return None


def _eval_file(path: str) -> str:
    return path if os.path.isfile(path) else os.path.join(path, "eval.json")


def find_evaluations(source: Source, given: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(eval.json path, this model's name in it, the report) for each evaluation of this model: those
    given (each must have evaluated it), then eval.json files in the run's sibling directories."""
    found, seen = [], set()
    for path in given:
        file = _eval_file(path)
        if not os.path.isfile(file):
            raise UserError(f"export: --evaluation '{path}': no eval.json there")
        report = _read_json(file)
        name = _evaluated_name(report, source.model_dir, os.path.dirname(file)) if isinstance(report, dict) else None
        if name is None:
            raise UserError(f"export: --evaluation '{path}': its eval.json did not evaluate '{source.model_dir}' "
                            f"(model_paths: {', '.join(map(str, (report.get('model_paths') or {}).values())) or 'none'})")
        found.append((file, name, report))
        seen.add(os.path.realpath(file))
    home = os.path.dirname(os.path.abspath(source.run_dir or source.model_dir))
    for entry in sorted(os.listdir(home)):
        file = os.path.join(home, entry, "eval.json")
        if os.path.realpath(file) in seen or not os.path.isfile(file):
            continue
        try:
            with open(file, encoding="utf-8") as f:
                report = json.load(f)
        except (OSError, ValueError):
            continue   # not ours to judge: an unreadable sibling is simply not an evaluation of this model
        name = _evaluated_name(report, source.model_dir, os.path.dirname(file)) if isinstance(report, dict) else None
        if name is not None:
            found.append((file, name, report))
    return found


def evaluation_lines(file: str, name: str, report: dict[str, Any]) -> list[str]:
    """The headline numbers of model `name` in one eval.json, as markdown."""
    m = report["models"][name]
    baseline = report.get("baseline")
    lines = [f"From `{os.path.basename(os.path.dirname(os.path.abspath(file)))}/eval.json` "
             f"(this model is `{name}`{f', the baseline is `{baseline}`' if baseline and baseline != name else ''}):", ""]
    numbers = [("score (mean)", m.get("score_mean")), ("score (std)", m.get("score_std")),
               ("toxic rate", m.get("toxic_rate")), ("toxicity (mean)", m.get("toxicity_mean")),
               ("toxicity improvement vs baseline (%)", m.get("toxicity_improvement_pct"))]
    pair = (report.get("pairs") or {}).get(f"{name}_vs_{baseline}", {})
    numbers += [(f"{k.replace('_', ' ')} vs baseline", pair.get(k)) for k in ("win_rate", "tie_rate", "loss_rate", "kl")]
    judged = pair.get("judged") or {}
    numbers += [("judged win rate", judged.get("win_rate")), ("length-controlled win rate", judged.get("lc_win_rate"))]
    for suite, languages in (m.get("suites") or {}).items():
        for language, metrics in languages.items():
            for key in HEADLINES.get(suite, ()):
                numbers.append((f"{suite} ({language}): {key.replace('_', ' ')}", metrics.get(key)))
    shown = [(label, value) for label, value in numbers if isinstance(value, (int, float))]
    return lines + ["| metric | value |", "|---|---|"] + [f"| {label} | {value:.4g} |" for label, value in shown] + [""]


# ----------------------------------------------------------------------------------------------------
# The card


def without_secrets(value: Any) -> Any:
    """`value` with every mapping key that names a secret left out (at any depth).

    >>> without_secrets({"hub_token": "x", "max_new_tokens": 8, "judge": {"api_key": "y", "model": "m"}})
    {'max_new_tokens': 8, 'judge': {'model': 'm'}}
    """
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items() if not names_a_secret(k)}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


def data_sources(value: Any) -> list[DataSource]:
    """The files or hub names a data key of a run's config names: one, or a weighted mixture's."""
    try:
        return parse_sources(value)
    except ValueError:   # absent, or not a data key in this config
        return []


def data_languages(files: list[str], limit: int = 200) -> list[str]:
    """vi and/or en, from the first `limit` lines of the local data files (nothing when none is readable)."""
    text = []
    for path in files:
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text += [line for _, line in zip(range(limit), f)]
    joined = "".join(text)
    return [code for code, pattern in (("vi", VIETNAMESE), ("en", ENGLISH)) if joined and pattern.search(joined)]


def _license(base: str | None) -> str | None:
    """The license in the local base model's own card front matter, if it states one."""
    readme = os.path.join(base or "", "README.md")
    if not base or not os.path.isfile(readme):
        return None
    with open(readme, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except (yaml.YAMLError, IndexError):
        return None
    return meta.get("license") if isinstance(meta, dict) and isinstance(meta.get("license"), str) else None


def _value(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else f"`{value}`" if isinstance(value, str) else str(value)


def model_card(source: Source, title: str, dtype: str, evaluations: list[tuple[str, str, dict[str, Any]]]) -> str:
    config = without_secrets(source.config)
    method = source.info.get("method") or ("lora" if source.base else "fine-tuned")
    base = source.base or config.get("model_name_or_path")
    named = [(k, data_sources(config.get(k))) for k in DATA_KEYS]
    data = [source.path for _, sources in named for source in sources]
    meta: dict[str, Any] = {"library_name": "transformers"}
    if base:
        meta["base_model"] = str(base)
    meta["tags"] = ["vietnamese-ai", method]
    languages = data_languages(data)
    if languages:
        meta["language"] = languages
    license_name = _license(source.base or config.get("model_name_or_path"))
    if license_name:
        meta["license"] = license_name
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {title}", ""]
    adapted = (f"a LoRA adapter (r={config.get('lora_r', '?')}, alpha={config.get('lora_alpha', '?')}) merged into "
               f"the base weights" if source.base else "a full model")
    lines += [f"Trained with vietnamese-ai by **{method}**{f' from `{base}`' if base else ''}; "
              f"exported as {adapted}, in {dtype}, as safetensors. It loads with "
              f"`AutoModelForCausalLM.from_pretrained` and needs no PEFT.", ""]
    settings = [(k, config[k]) for k in KEY_SETTINGS if config.get(k) is not None]
    if settings:
        lines += ["## Training", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {_value(v)} |" for k, v in settings] + [""]
    if data:
        lines += ["## Data", ""] + [f"- {k}: " + ", ".join(f"`{s.path}`" + (f" (weight {s.weight:g})" if s.weight != 1 else "")
                                                       for s in sources) for k, sources in named if sources] + [""]
    if source.info or source.last_metrics:
        lines += ["## Results", ""]
        if "steps" in source.info:
            lines.append(f"- steps: {source.info['steps']}")
        if isinstance(source.info.get("seconds"), (int, float)):
            lines.append(f"- training time: {source.info['seconds']:.1f} s")
        if source.info.get("finished_at"):
            lines.append(f"- finished: {source.info['finished_at']}")
        shown = {k: v for k, v in source.last_metrics.items() if k not in GENERIC_METRICS and not k.startswith("time/")
                 and isinstance(v, (int, float))}
        if shown:
            lines += ["", f"Final metrics (metrics.jsonl, step {source.last_metrics.get('step', '?')}):", "",
                      "| metric | value |", "|---|---|"] + [f"| {k} | {v:.6g} |" for k, v in shown.items()]
        lines.append("")
    if evaluations:
        lines += ["## Evaluation", ""]
        for file, name, report in evaluations:
            lines += evaluation_lines(file, name, report)
    lines += ["## Usage", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'model = AutoModelForCausalLM.from_pretrained("{title}")',
              f'tokenizer = AutoTokenizer.from_pretrained("{title}")', "```", ""]
    if config:
        lines += ["## Full configuration", "", "<details><summary>config.yaml (secrets left out)</summary>", "",
                  "```yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip(), "```", "",
                  "</details>", ""]
    versions = source.info.get("versions")
    if isinstance(versions, dict) and versions:
        lines += ["## Framework versions", ""] + [f"- {k}: {v}" for k, v in versions.items()] + [""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# The command


def push(output: str, repo: str, private: bool, token: str) -> None:
    """Upload `output` to the hub model repository `repo` (created if needed)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id=repo, private=private, exist_ok=True, token=token)
        api.upload_folder(folder_path=output, repo_id=repo, repo_type="model", token=token,
                          commit_message="Upload model exported by vietnamese-ai")
    except Exception as e:   # noqa: BLE001 - only the two hub calls are inside: HTTP, connection, offline mode
        detail = " ".join(f"{type(e).__name__}: {e}".replace(token, "***").split())[:300]
        raise UserError(f"export: pushing to '{repo}' failed ({detail}); the export is in '{output}'") from None


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="vietnamese-ai export",
                            description="A merged, self-contained model with a model card (README.md), optionally "
                                        "pushed to the Hugging Face hub (docs/chat_and_export.md).")
    parser.add_argument("source", metavar="RUN_OR_MODEL", help="a run directory (with final/) or a model/adapter directory")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="the directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --output")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the output to this hub model repository "
                                                              "(the token is read from HF_TOKEN)")
    parser.add_argument("--private", action="store_true", help="create the hub repository as private")
    parser.add_argument("--evaluation", nargs="+", action="extend", default=[], metavar="EVAL_DIR",
                        help="evaluate output directories (or eval.json files) whose numbers go in the card")
    return parser


def run_command(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    token = None
    if args.push_to_hub:
        token = os.environ.get("HF_TOKEN", "").strip()
        if not token:
            raise UserError(NO_TOKEN)
    elif args.private:
        raise UserError("export: --private applies to --push-to-hub; add --push-to-hub REPO, or leave it out")
    source = find_source(args.source)
    check_output(args.output, source, args.overwrite)
    evaluations = find_evaluations(source, args.evaluation)
    trust = bool(source.config.get("trust_remote_code", False))
    title = args.push_to_hub or os.path.basename(os.path.abspath(args.output))
    with atomic_directory(args.output) as tmp:
        dtype = write_model(source, tmp, trust)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(model_card(source, title, dtype, evaluations))
    log.info("exported %s (%s) to %s%s", source.model_dir, "merged LoRA adapter" if source.base else "full model",
             args.output, f"; model card with {len(evaluations)} evaluation(s)" if evaluations else "")
    if token:
        push(args.output, args.push_to_hub, args.private, token)
        log.info("pushed %s to the hub repository %s", args.output, args.push_to_hub)
    return 0
