"""The Vietnamese-named API, on top of the English recipes.

    from vietnamese_ai import SFTTrainer
    trainer = SFTTrainer(so_vong=3, kich_thuoc_batch=4, toc_do_hoc=2e-5, gradient_accumulation=4)
    ket_qua = trainer.huan_luyen(model, du_lieu, du_lieu_val=val_data)
    ket_qua["train_loss_min"], ket_qua["eval_loss_min"]

Vocabulary: so_vong = epochs, kich_thuoc_batch = batch size, toc_do_hoc = learning rate,
huan_luyen = train, du_lieu = data, du_lieu_val = validation data, ket_qua = result.
English keywords (num_epochs, batch_size, learning_rate, ...) and any config key of the recipe are
accepted as well.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from vietnamese_ai.data.loading import load_records
from vietnamese_ai.errors import ConfigError, DataError
from vietnamese_ai.recipes.dpo import DPOConfig, run_dpo
from vietnamese_ai.recipes.reward import RewardConfig, run_reward
from vietnamese_ai.recipes.sft import SFTConfig, run_sft
from vietnamese_ai.training.config import InvalidValue, closest

# Vietnamese keyword -> config key; English short forms map to the same keys.
ALIASES = {
    "so_vong": "num_train_epochs", "num_epochs": "num_train_epochs",
    "kich_thuoc_batch": "per_device_train_batch_size", "batch_size": "per_device_train_batch_size",
    "toc_do_hoc": "learning_rate",
    "gradient_accumulation": "gradient_accumulation_steps",
    "gradient_clip": "max_grad_norm",
}
# The defaults of the Vietnamese-named API's documentation (SFT parameter table, DPO example).
# Every step is logged, so that the returned histories have a value per step.
SFT_DEFAULTS = {"num_train_epochs": 3, "per_device_train_batch_size": 4, "learning_rate": 2e-5,
                "gradient_accumulation_steps": 4, "max_grad_norm": 1.0, "warmup_ratio": 0.1, "logging_steps": 1}
DPO_DEFAULTS = {"num_train_epochs": 1, "beta": 0.1, "learning_rate": 5e-7, "label_smoothing": 0.0,
                "per_device_train_batch_size": 4, "logging_steps": 1}
REWARD_DEFAULTS = {"learning_rate": 1e-5, "num_train_epochs": 3, "per_device_train_batch_size": 4, "logging_steps": 1}
# PPO as the RLHF stage: the learning rate of the RLAIF-with-PPO recipe, one pass over the prompts.
PPO_DEFAULTS = {"learning_rate": 1.41e-5, "num_train_epochs": 1, "logging_steps": 1}


def resolve_keywords(method: str, defaults: dict[str, Any], kwargs: dict[str, Any],
                     config_class: type | None = None) -> dict[str, Any]:
    """Map Vietnamese and English keywords onto config keys; the same setting twice, or a keyword no
    config knows (the closest one is suggested), is an error that names the keyword as typed."""
    values = dict(defaults)
    given: dict[str, str] = {}
    renamed_keys = getattr(config_class, "renamed_keys", {}) if config_class is not None else {}
    for key, value in kwargs.items():
        target = ALIASES.get(key, renamed_keys.get(key, key))   # the recipe's other names (max_new_tokens) too
        if config_class is not None and target not in config_class.model_fields:
            suggestion = closest(key, list(ALIASES) + list(config_class.model_fields))
            raise ConfigError(f"{method}: unknown keyword '{key}'" + (f"; did you mean '{suggestion}'?" if suggestion else ""))
        if target in given:
            raise ConfigError(f"{method}: '{given[target]}' and '{key}' set the same option; give one of them")
        if config_class is not None and _is_string_field(config_class, target) and value is not None:
            # The config turns numbers into strings (a YAML `output_dir: 2024` is a name); typed in
            # Python, output_dir=5 is a mistake, not a directory called "5".
            if not isinstance(value, (str, os.PathLike)):
                raise ConfigError(f"{method}: '{key}': expected a string, got {_describe(value)}")
            value = os.fspath(value)
        given[target] = key
        values[target] = value
    values["_given"] = given
    return values


def _is_string_field(config_class: type, key: str) -> bool:
    return config_class.model_fields[key].annotation in (str, str | None)


def _describe(value: Any) -> str:
    """What a wrong argument is, for a message: its type's name, or what makes it wrong."""
    if isinstance(value, str) and not value:
        return "an empty string"
    return "one dict" if isinstance(value, Mapping) else type(value).__name__


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and os.fspath(value) != ""


# The kinds of argument of the Vietnamese-named API: kind -> (what it must be, test).
ARGUMENT_KINDS = {
    "config": ("a dict of keywords", lambda v: isinstance(v, Mapping)),
    "model": ("a transformers model or a hub name / local path", lambda v: isinstance(v, torch.nn.Module) or _is_path(v)),
    # what load_records takes: a file path / hub name, or any iterable of dicts (a list, a datasets.Dataset)
    "data": ("a list of records (dicts) or a file path",
             lambda v: _is_path(v) or (isinstance(v, Iterable) and not isinstance(v, (str, bytes, Mapping)))),
    "tokenizer": ("a loaded tokenizer (a name or path goes in the config key tokenizer_name_or_path)",
                  lambda v: not isinstance(v, (str, os.PathLike)) and callable(getattr(v, "encode", None))),
    "directory": ("a directory path", _is_path),
}


def check_arguments(where: str, optional: tuple[str, ...] = (), **arguments: tuple[str, Any]) -> None:
    """Refuse an argument of the wrong type in one line that names the keyword as typed, before any
    model loads. `arguments`: keyword -> (kind of ARGUMENT_KINDS, value); a keyword in `optional`
    may be None."""
    for keyword, (kind, value) in arguments.items():
        if value is None and keyword in optional:
            continue
        expected, test = ARGUMENT_KINDS[kind]
        error = DataError if kind == "data" else ConfigError
        if value is None:
            raise error(f"{where}: {keyword}: required ({expected})")
        if not test(value):
            hint = "; wrap it in a list" if kind == "data" and isinstance(value, Mapping) else ""
            raise error(f"{where}: {keyword}: expected {expected}, got {_describe(value)}{hint}")


def make_config(method: str, config_class: type, values: dict[str, Any]) -> Any:
    """The config, with a bad value reported under the keyword the user typed (so_vong, not
    num_train_epochs). Without an output_dir, each run gets its own fresh one under runs/."""
    given = values.get("_given", {})
    values = {k: v for k, v in values.items() if k != "_given"}
    values.setdefault("output_dir", f"runs/{method}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}")
    try:
        return config_class(**values)
    except InvalidValue as e:
        if e.key is None:
            raise ConfigError(f"{method}: {e.problem}") from None
        raise ConfigError(f"{method}: '{given.get(e.key, e.key)}': {e.problem}") from None


def _model_argument(model: Any, values: dict[str, Any], key: str = "model_name_or_path") -> Any:
    """A model may be given as an object or as a name/path."""
    if isinstance(model, (str, os.PathLike)):
        values[key] = os.fspath(model)
        return None
    return model


def min_or_none(series: list[float]) -> float | None:
    return min(series) if series else None


def _run_info(result: Any) -> dict[str, Any]:
    return {"steps": result.global_step, "output_dir": result.output_dir, "final_dir": result.final_dir}


def sft_result(result: Any) -> dict[str, Any]:
    """ket_qua of an SFT run: train_loss_min and eval_loss_min, as the documentation page prints them."""
    train_losses, eval_losses = result.series("loss"), result.series("eval/loss")
    return {"train_loss_min": min_or_none(train_losses), "eval_loss_min": min_or_none(eval_losses),
            "train_loss_history": train_losses, "eval_loss_history": eval_losses, **_run_info(result)}


def dpo_result(result: Any) -> dict[str, Any]:
    """ket_qua of a DPO run: train_loss_min and final_reward_margin, with the reward histories."""
    margins = result.series("rewards/margins")
    return {"train_loss_min": min_or_none(result.series("loss")), "final_reward_margin": margins[-1] if margins else None,
            "train_loss_history": result.series("loss"), "chosen_rewards": result.series("rewards/chosen"),
            "rejected_rewards": result.series("rewards/rejected"), "reward_margin": margins,
            "reward_accuracy": result.series("rewards/accuracies"), **_run_info(result)}


def reward_result(result: Any) -> dict[str, Any]:
    """ket_qua of a reward-model run: final_accuracy, with the loss and margin histories."""
    accuracy = result.series("accuracy")
    return {"final_accuracy": accuracy[-1] if accuracy else None, "accuracy_history": accuracy,
            "train_loss_min": min_or_none(result.series("loss")), "train_loss_history": result.series("loss"),
            "margin_history": result.series("margin"), "eval_accuracy": (result.series("eval/accuracy") or [None])[-1],
            **_run_info(result)}


def ppo_result(result: Any) -> dict[str, Any]:
    """ket_qua of a PPO run: the reward and KL per logged step."""
    rewards = result.series("reward")
    return {"train_loss_min": min_or_none(result.series("loss")), "final_reward": rewards[-1] if rewards else None,
            "reward_history": rewards, "kl_history": result.series("kl"), **_run_info(result)}


class SFTTrainer:
    """SFT with Vietnamese names: `SFTTrainer(so_vong=3, kich_thuoc_batch=4, toc_do_hoc=2e-5, gradient_accumulation=4,
    gradient_clip=1.0, warmup_ratio=0.1)`."""

    def __init__(self, **kwargs: Any):
        self.values = resolve_keywords("sft", SFT_DEFAULTS, kwargs, SFTConfig)
        make_config("sft", SFTConfig, {**self.values, "model_name_or_path": None})  # fail early on a bad value
        self.model: Any = None

    def huan_luyen(self, model: Any, du_lieu: Any, du_lieu_val: Any = None, tokenizer: Any = None) -> dict[str, Any]:
        """Train `model` (a transformers model, or a hub name / local path) on `du_lieu`: a list of
        dicts (pre-tokenised input_ids + labels, text, prompt/completion, messages) or a file path."""
        check_arguments("SFTTrainer.huan_luyen", ("du_lieu_val", "tokenizer"), model=("model", model),
                        du_lieu=("data", du_lieu), du_lieu_val=("data", du_lieu_val), tokenizer=("tokenizer", tokenizer))
        values = dict(self.values)
        model = _model_argument(model, values)
        config = make_config("sft", SFTConfig, values)
        result = run_sft(config, model=model, tokenizer=tokenizer, train_records=du_lieu,
                         eval_records=du_lieu_val)
        self.model = result.model
        return sft_result(result)

    train = huan_luyen


class DPOTrainer:
    """DPO with Vietnamese names: `DPOTrainer(so_vong=1, beta=0.1, toc_do_hoc=5e-7, label_smoothing=0.0)`; any DPO
    config key (loss_type, prefix_sharing, ...) is accepted too."""

    def __init__(self, **kwargs: Any):
        self.values = resolve_keywords("dpo", DPO_DEFAULTS, kwargs, DPOConfig)
        make_config("dpo", DPOConfig, self.values)
        self.model: Any = None

    def huan_luyen(self, model: Any, ref_model: Any, preference_data: Any, du_lieu_val: Any = None,
                   tokenizer: Any = None) -> dict[str, Any]:
        """Train `model` on prompt/chosen/rejected records. `ref_model=None` uses the default reference
        (the starting policy; with LoRA the policy with its adapters disabled)."""
        check_arguments("DPOTrainer.huan_luyen", ("ref_model", "du_lieu_val", "tokenizer"), model=("model", model),
                        ref_model=("model", ref_model), preference_data=("data", preference_data),
                        du_lieu_val=("data", du_lieu_val), tokenizer=("tokenizer", tokenizer))
        values = dict(self.values)
        model = _model_argument(model, values)
        ref_model = _model_argument(ref_model, values, "ref_model_name_or_path") if ref_model is not None else None
        result = run_dpo(make_config("dpo", DPOConfig, values), model=model, tokenizer=tokenizer, ref_model=ref_model,
                         train_records=preference_data, eval_records=du_lieu_val)
        self.model = result.model
        return dpo_result(result)

    train = huan_luyen


class RewardModel:
    """A reward model with Vietnamese names: `RewardModel(toc_do_hoc=1e-5)`, `.huan_luyen(model, preference_data, so_vong=3)`,
    `.diem_danh_gia(model, ["văn bản 1", ...])`. Any reward config key is accepted too."""

    def __init__(self, **kwargs: Any):
        self.values = resolve_keywords("reward", REWARD_DEFAULTS, kwargs, RewardConfig)
        make_config("reward", RewardConfig, self.values)
        self.model: Any = None        # the trained reward model
        self.tokenizer: Any = None
        self._trained_from: Any = None

    def huan_luyen(self, model: Any, preference_data: Any, so_vong: float | None = None, du_lieu_val: Any = None,
                   tokenizer: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Train a reward model from `model` (a causal LM or reward model, object or name/path) on
        chosen/rejected records (a `prompt` is optional: without one the shared prefix is used)."""
        check_arguments("RewardModel.huan_luyen", ("du_lieu_val", "tokenizer"), model=("model", model),
                        preference_data=("data", preference_data), du_lieu_val=("data", du_lieu_val),
                        tokenizer=("tokenizer", tokenizer))
        if so_vong is not None:
            kwargs["so_vong"] = so_vong
        extra = resolve_keywords("reward", {}, kwargs, RewardConfig)
        values = {**self.values, **extra, "_given": {**self.values["_given"], **extra["_given"]}}
        source = model
        model = _model_argument(model, values)
        config = make_config("reward", RewardConfig, values)
        result = run_reward(config, model=model, tokenizer=tokenizer, train_records=preference_data,
                            eval_records=du_lieu_val)
        from vietnamese_ai.recipes.common import load_tokenizer_for

        self.model, self._trained_from = result.model, source
        self.tokenizer = tokenizer or load_tokenizer_for(config, result.model)
        return reward_result(result)

    def diem_danh_gia(self, model: Any, texts: list[str], prompts: list[Any] | None = None) -> list[dict[str, Any]]:
        """Score texts: `[{"van_ban": text, "score": reward}]`. `model` may be the object (or path)
        passed to huan_luyen (its trained reward model is used), a reward model, or a final/ path."""
        from vietnamese_ai.scoring.reward_model import RewardModelScorer

        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise ConfigError(f"diem_danh_gia: texts must be a list of strings, got "
                              f"{'one string (wrap it in a list)' if isinstance(texts, str) else type(texts).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ConfigError(f"diem_danh_gia: texts[{i}] must be a string, got {type(text).__name__}")
        if prompts is not None and not isinstance(prompts, (list, tuple)):
            raise ConfigError(f"diem_danh_gia: prompts must be a list (one prompt per text), got {_describe(prompts)}")
        if prompts is not None and len(prompts) != len(texts):
            raise ConfigError(f"diem_danh_gia: {len(prompts)} prompts for {len(texts)} texts")
        trained = self.model is not None and (model is self.model or model is self._trained_from
                                              or (isinstance(model, str) and model == self._trained_from))
        if trained:
            scorer = RewardModelScorer(self.model, self.tokenizer)
        elif isinstance(model, str) or isinstance(model, torch.nn.Module):
            scorer = RewardModelScorer(model)
        else:
            raise ConfigError(f"diem_danh_gia: model must be a reward model or its path, got {type(model).__name__}")
        rewards = scorer.rewards(prompts or [""] * len(texts), list(texts))
        return [{"van_ban": text, "score": value} for text, value in zip(texts, rewards)]

    train = huan_luyen
    score = diem_danh_gia


class PipelineStats(dict):
    """thong_ke(): per stage, its numbers (a dict); printed, a table."""

    COLUMNS = (("steps", "steps", "{}"), ("seconds", "time (s)", "{:.1f}"), ("train_loss_min", "loss (min)", "{:.4f}"),
               ("final_accuracy", "accuracy", "{:.3f}"), ("final_reward_margin", "reward margin", "{:.4f}"),
               ("final_reward", "reward", "{:.4f}"))

    def __str__(self) -> str:
        if not self:
            return "RLHFPipeline: no stage has run yet"
        shown = [c for c in self.COLUMNS if any(s.get(c[0]) is not None for s in self.values())]
        head = f"{'stage':<14}{'method':<8}" + "".join(f"{title:>15}" for _, title, _ in shown) + "  final model"
        rows = [f"{name:<14}{s['method']:<8}" + "".join(
            f"{(fmt.format(s[key]) if s.get(key) is not None else '-'):>15}" for key, _, fmt in shown) + f"  {s['final_dir']}"
            for name, s in self.items()]
        return "\n".join([head, *rows])


def ppo_prompts(records: Any) -> list[dict[str, Any]]:
    """The prompts of the records given to a PPO stage (PPO samples its own answers to them)."""
    prompts = []
    for record in load_records(records, name="dpo_data"):
        if not record.data.get("prompt"):
            raise DataError.at(record.where, "prompt", "missing (PPO samples answers to the prompts)")
        prompts.append({"prompt": record.data["prompt"]})
    return prompts


def _same_model(a: Any, b: Any) -> bool:
    """The same model argument: the same object, or the same name/path."""
    if a is b:
        return True
    return _is_path(a) and _is_path(b) and os.path.normpath(os.fspath(a)) == os.path.normpath(os.fspath(b))


class RLHFPipeline:
    """SFT -> reward model -> DPO (or PPO rewarded by the trained reward model), with Vietnamese names:

        pipeline = RLHFPipeline(sft_config={"so_vong": 3, "toc_do_hoc": 2e-5}, dpo_config={"beta": 0.2, "so_vong": 1},
                                reward_config={"toc_do_hoc": 1e-5})
        pipeline.sft(model, sft_data); pipeline.train_reward_model(reward_model, preference_data)
        pipeline.rlhf(model, ref_model, dpo_data)          # or all three: pipeline.chay_day_du(...)
        print(pipeline.thong_ke())

    The policy goes from stage to stage: `rlhf(model, ...)` given the `model` that `sft` was given (the
    same object or the same name/path), or None, starts from the SFT result (`self.model`, saved in
    output_dir/sft/final, which the stage's config.yaml names as model_name_or_path), whether `model`
    is a path, an object or trained with LoRA. Its reference, when ref_model is None or that same
    model, is the SFT model too (DPO's step-1 rewards are 0). Any other model given to `rlhf` is used
    as given. A model object is trained in place, as by SFTTrainer; the reward model starts from the
    `reward_model` given. `thong_ke()` names what each stage started from (`started_from`).

    Every stage runs through the YAML pipeline's `execute`, in `output_dir/<stage>`. `rlhf="ppo"`
    makes the last stage PPO with `reward_model:<the trained reward model>` as its reward, on the
    prompts of the data given to `rlhf`."""

    def __init__(self, sft_config: dict[str, Any] | None = None, dpo_config: dict[str, Any] | None = None,
                 reward_config: dict[str, Any] | None = None, ppo_config: dict[str, Any] | None = None,
                 rlhf: str = "dpo", output_dir: str | None = None):
        from vietnamese_ai.recipes.ppo import PPOConfig

        check_arguments("RLHFPipeline", ("sft_config", "dpo_config", "reward_config", "ppo_config", "output_dir"),
                        sft_config=("config", sft_config), dpo_config=("config", dpo_config),
                        reward_config=("config", reward_config), ppo_config=("config", ppo_config),
                        output_dir=("directory", output_dir))
        if rlhf not in ("dpo", "ppo"):
            raise ConfigError(f"RLHFPipeline: rlhf must be 'dpo' or 'ppo', got {rlhf!r}")
        self.method = rlhf
        self.output_dir = (os.fspath(output_dir) if output_dir is not None
                           else f"runs/rlhf-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}")
        stages = (("sft", "sft", SFTConfig, SFT_DEFAULTS, sft_config),
                  ("reward_model", "reward", RewardConfig, REWARD_DEFAULTS, reward_config),
                  ("dpo", "dpo", DPOConfig, DPO_DEFAULTS, dpo_config), ("ppo", "ppo", PPOConfig, PPO_DEFAULTS, ppo_config))
        self.configs: dict[str, tuple[str, type, dict[str, Any]]] = {}   # stage -> (command, config class, keywords)
        for name, command, cls, defaults, typed in stages:
            keyword = f"{command}_config"   # the argument the user typed, named in every message about it
            values = resolve_keywords(keyword, defaults, typed or {}, cls)
            if "output_dir" in values["_given"]:   # it would be ignored: each stage writes in output_dir/<stage>
                raise ConfigError(f"{keyword}: '{values['_given']['output_dir']}' is the whole pipeline's "
                                  f"(RLHFPipeline(output_dir=...)); each stage writes in output_dir/{name}")
            # a bad value fails now, named as typed
            make_config(keyword, cls, {"reward": "constitution", **values} if name == "ppo" else values)
            self.configs[name] = (command, cls, values)
        self.stats = PipelineStats()
        self.results: dict[str, dict[str, Any]] = {}
        self.model: Any = None          # the policy after the latest stage
        self.policy_dir: str | None = None   # where that stage saved it (its final/)
        self.reward_model: Any = None   # the trained reward model
        self._policy_given: Any = None  # the `model` argument the policy's stages started from

    def _policy(self, model: Any) -> tuple[Any, dict[str, Any]]:
        """What a policy stage starts from: the latest stage's result, named by its final/, when `model` is
        the model the stages started from (or that result, or None); otherwise `model` as given."""
        if self.model is not None and (model is None or model is self.model or _same_model(model, self._policy_given)):
            return self.model, {"model_name_or_path": self.policy_dir}
        return model, {}

    def _run(self, stage_name: str, label: str, model: Any, objects: dict[str, Any],
             extra: dict[str, Any] | None = None) -> Any:
        """Run the stage configured as `stage_name` in output_dir/<stage_name>, starting from `model` (an
        object or a name/path; `extra` may name an object's directory); its numbers go under `label`."""
        from vietnamese_ai.pipeline import Stage, execute

        command, _, resolved = self.configs[stage_name]
        values = {k: v for k, v in resolved.items() if k not in ("_given", "output_dir")}
        values.update(extra or {})
        model = _model_argument(model, values)
        if model is not None:
            objects["model"] = model
        started_from = values.get("model_name_or_path") or f"{type(model).__name__} object"
        stage = Stage(stage_name, command, values, os.path.join(self.output_dir, stage_name),
                      objects={k: v for k, v in objects.items() if v is not None})
        started = time.perf_counter()
        result = execute(stage)
        self.stats[label] = {"method": command, "started_from": started_from, "seconds": time.perf_counter() - started}
        return result

    def _record(self, label: str, ket_qua: dict[str, Any]) -> dict[str, Any]:
        self.results[label] = ket_qua
        self.stats[label].update({k: v for k, v in ket_qua.items() if not isinstance(v, list)})
        return ket_qua

    def sft(self, model: Any, sft_data: Any, du_lieu_val: Any = None, tokenizer: Any = None) -> dict[str, Any]:
        """Step 1: SFT of `model` as given on `sft_data` (the same records as SFTTrainer.huan_luyen)."""
        check_arguments("RLHFPipeline.sft", ("du_lieu_val", "tokenizer"), model=("model", model),
                        sft_data=("data", sft_data), du_lieu_val=("data", du_lieu_val), tokenizer=("tokenizer", tokenizer))
        result = self._run("sft", "sft", model, {"tokenizer": tokenizer, "train_records": sft_data, "eval_records": du_lieu_val})
        self.model, self.policy_dir, self._policy_given = result.model, result.final_dir, model
        return self._record("sft", sft_result(result))

    def train_reward_model(self, reward_model: Any, preference_data: Any, du_lieu_val: Any = None,
                           tokenizer: Any = None) -> dict[str, Any]:
        """Step 2: a Bradley-Terry reward model from `reward_model` on chosen/rejected records."""
        check_arguments("RLHFPipeline.train_reward_model", ("du_lieu_val", "tokenizer"),
                        reward_model=("model", reward_model), preference_data=("data", preference_data),
                        du_lieu_val=("data", du_lieu_val), tokenizer=("tokenizer", tokenizer))
        result = self._run("reward_model", "reward_model", reward_model, {"tokenizer": tokenizer, "train_records": preference_data,
                                                          "eval_records": du_lieu_val})
        self.reward_model = result.model
        return self._record("reward_model", reward_result(result))

    def rlhf(self, model: Any, ref_model: Any, dpo_data: Any, tokenizer: Any = None) -> dict[str, Any]:
        """Step 3: DPO on prompt/chosen/rejected records, from the SFT result when `model` is the model
        given to `sft` (see the class docstring), against `ref_model` (None, or `model` itself: the
        policy it starts from); with rlhf="ppo", PPO on the records' prompts, rewarded by the trained
        reward model (a ref_model then goes in as ref_model_name_or_path, so it must be a name/path)."""
        check_arguments("RLHFPipeline.rlhf", ("ref_model", "tokenizer") + (("model",) if self.model is not None else ()),
                        model=("model", model), ref_model=("model", ref_model), dpo_data=("data", dpo_data),
                        tokenizer=("tokenizer", tokenizer))
        start, values = self._policy(model)
        if ref_model is not None and (_same_model(ref_model, model) or ref_model is start):
            ref_model = None   # the policy's own starting point, which is the default reference
        if self.method == "dpo":
            ref_model = _model_argument(ref_model, values, "ref_model_name_or_path") if ref_model is not None else None
            result = self._run("dpo", "rlhf", start, {"tokenizer": tokenizer, "ref_model": ref_model,
                                                      "train_records": dpo_data}, values)
            self.model, self.policy_dir, self._policy_given = result.model, result.final_dir, model
            return self._record("rlhf", dpo_result(result))
        if ref_model is not None and not _is_path(ref_model):
            raise ConfigError("RLHFPipeline.rlhf: with rlhf='ppo', ref_model must be a hub name / local path (PPO's "
                              f"ref_model_name_or_path) or None (the starting policy), got {_describe(ref_model)}")
        if "reward_model" not in self.results:
            raise ConfigError("rlhf: rlhf='ppo' is rewarded by the trained reward model; call train_reward_model first")
        prompts = ppo_prompts(dpo_data)
        values["reward"] = f"reward_model:{self.results['reward_model']['final_dir']}"
        if ref_model is not None:
            values["ref_model_name_or_path"] = os.fspath(ref_model)
        result = self._run("ppo", "rlhf", start, {"tokenizer": tokenizer, "train_records": prompts}, values)
        self.model, self.policy_dir, self._policy_given = result.model, result.final_dir, model
        return self._record("rlhf", ppo_result(result))

    def chay_day_du(self, model: Any, ref_model: Any = None, reward_model: Any = None, sft_data: Any = None,
                    preference_data: Any = None, dpo_data: Any = None, tokenizer: Any = None) -> dict[str, Any]:
        """Everything: SFT (when sft_data is given), the reward model (when reward_model is given), then
        DPO/PPO on dpo_data (default: preference_data), from the SFT result. Returns each stage's ket_qua."""
        check_arguments("RLHFPipeline.chay_day_du",
                        ("ref_model", "reward_model", "sft_data", "preference_data", "dpo_data", "tokenizer"),
                        model=("model", model), ref_model=("model", ref_model), reward_model=("model", reward_model),
                        sft_data=("data", sft_data), preference_data=("data", preference_data),
                        dpo_data=("data", dpo_data), tokenizer=("tokenizer", tokenizer))
        if preference_data is None and dpo_data is None:
            raise ConfigError("chay_day_du: preference_data is required (the reward model's and DPO's pairs)")
        if self.method == "ppo":   # found now, not after SFT has trained
            if reward_model is None and "reward_model" not in self.results:
                raise ConfigError("chay_day_du: rlhf='ppo' is rewarded by the trained reward model; give reward_model")
            ppo_prompts(dpo_data if dpo_data is not None else preference_data)
        ket_qua: dict[str, Any] = {}
        if sft_data is not None:
            ket_qua["sft"] = self.sft(model, sft_data, tokenizer=tokenizer)
        if reward_model is not None and preference_data is not None:
            ket_qua["reward_model"] = self.train_reward_model(reward_model, preference_data)
        ket_qua["rlhf"] = self.rlhf(model, ref_model, dpo_data if dpo_data is not None else preference_data,
                                    tokenizer=tokenizer)
        return ket_qua

    def thong_ke(self) -> PipelineStats:
        """Per stage: method, what it started from, steps, time, loss, accuracy, reward margin, final model directory."""
        return self.stats

    run_all = chay_day_du
    statistics = thong_ke
