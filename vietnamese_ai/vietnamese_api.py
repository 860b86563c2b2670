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
from typing import Any

import torch

from vietnamese_ai.errors import ConfigError
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
        given[target] = key
        values[target] = value
    values["_given"] = given
    return values


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
    if isinstance(model, str):
        values[key] = model
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
            "reward_history": rewards, "kl_history": result.series("objective/kl"), **_run_info(result)}


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


class RLHFPipeline:
    """SFT -> reward model -> DPO (or PPO rewarded by the trained reward model), with Vietnamese names:

        pipeline = RLHFPipeline(sft_config={"so_vong": 3, "toc_do_hoc": 2e-5}, dpo_config={"beta": 0.2, "so_vong": 1},
                                reward_config={"toc_do_hoc": 1e-5})
        pipeline.sft(model, sft_data); pipeline.train_reward_model(reward_model, preference_data)
        pipeline.rlhf(model, ref_model, dpo_data)          # or all three: pipeline.chay_day_du(...)
        print(pipeline.thong_ke())

    Every stage runs through the YAML pipeline's `execute`, in `output_dir/<stage>`. `rlhf="ppo"`
    makes the last stage PPO with `reward_model:<the trained reward model>` as its reward, on the
    prompts of the data given to `rlhf`."""

    def __init__(self, sft_config: dict[str, Any] | None = None, dpo_config: dict[str, Any] | None = None,
                 reward_config: dict[str, Any] | None = None, ppo_config: dict[str, Any] | None = None,
                 rlhf: str = "dpo", output_dir: str | None = None):
        from vietnamese_ai.recipes.ppo import PPOConfig

        if rlhf not in ("dpo", "ppo"):
            raise ConfigError(f"RLHFPipeline: rlhf must be 'dpo' or 'ppo', got {rlhf!r}")
        self.method = rlhf
        self.output_dir = output_dir or f"runs/rlhf-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        self.configs = {  # stage -> (command, config class, keywords resolved)
            "sft": ("sft", SFTConfig, resolve_keywords("sft_config", SFT_DEFAULTS, sft_config or {}, SFTConfig)),
            "reward_model": ("reward", RewardConfig,
                             resolve_keywords("reward_config", REWARD_DEFAULTS, reward_config or {}, RewardConfig)),
            "dpo": ("dpo", DPOConfig, resolve_keywords("dpo_config", DPO_DEFAULTS, dpo_config or {}, DPOConfig)),
            "ppo": ("ppo", PPOConfig, resolve_keywords("ppo_config", PPO_DEFAULTS, ppo_config or {}, PPOConfig)),
        }
        for name, (_, cls, values) in self.configs.items():   # a bad value fails now, named as typed
            make_config(f"{name} config", cls, {"reward": "constitution", **values} if name == "ppo" else values)
        self.stats = PipelineStats()
        self.results: dict[str, dict[str, Any]] = {}
        self.model: Any = None          # the policy after the latest stage
        self.reward_model: Any = None   # the trained reward model

    def _run(self, stage_name: str, label: str, model: Any, objects: dict[str, Any],
             extra: dict[str, Any] | None = None) -> Any:
        """Run the stage configured as `stage_name` in output_dir/<stage_name>; its numbers go under `label`."""
        from vietnamese_ai.pipeline import Stage, execute

        command, _, resolved = self.configs[stage_name]
        values = {k: v for k, v in resolved.items() if k not in ("_given", "output_dir")}
        values.update(extra or {})
        model = _model_argument(model, values)
        if model is not None:
            objects["model"] = model
        stage = Stage(stage_name, command, values, os.path.join(self.output_dir, stage_name),
                      objects={k: v for k, v in objects.items() if v is not None})
        started = time.perf_counter()
        result = execute(stage)
        self.stats[label] = {"method": command, "seconds": time.perf_counter() - started}
        return result

    def _record(self, label: str, ket_qua: dict[str, Any]) -> dict[str, Any]:
        self.results[label] = ket_qua
        self.stats[label].update({k: v for k, v in ket_qua.items() if not isinstance(v, list)})
        return ket_qua

    def sft(self, model: Any, sft_data: Any, du_lieu_val: Any = None, tokenizer: Any = None) -> dict[str, Any]:
        """Step 1: SFT on `sft_data` (the same records as SFTTrainer.huan_luyen)."""
        result = self._run("sft", "sft", model, {"tokenizer": tokenizer, "train_records": sft_data, "eval_records": du_lieu_val})
        self.model = result.model
        return self._record("sft", sft_result(result))

    def train_reward_model(self, reward_model: Any, preference_data: Any, du_lieu_val: Any = None,
                           tokenizer: Any = None) -> dict[str, Any]:
        """Step 2: a Bradley-Terry reward model from `reward_model` on chosen/rejected records."""
        result = self._run("reward_model", "reward_model", reward_model, {"tokenizer": tokenizer, "train_records": preference_data,
                                                          "eval_records": du_lieu_val})
        self.reward_model = result.model
        return self._record("reward_model", reward_result(result))

    def rlhf(self, model: Any, ref_model: Any, dpo_data: Any, tokenizer: Any = None) -> dict[str, Any]:
        """Step 3: DPO on prompt/chosen/rejected records against `ref_model` (None: the starting
        policy); with rlhf="ppo", PPO on the records' prompts, rewarded by the trained reward model."""
        if self.method == "dpo":
            values: dict[str, Any] = {}
            ref_model = _model_argument(ref_model, values, "ref_model_name_or_path") if ref_model is not None else None
            result = self._run("dpo", "rlhf", model, {"tokenizer": tokenizer, "ref_model": ref_model,
                                                      "train_records": dpo_data}, values)
            self.model = result.model
            return self._record("rlhf", dpo_result(result))
        if "reward_model" not in self.results:
            raise ConfigError("rlhf: rlhf='ppo' is rewarded by the trained reward model; call train_reward_model first")
        prompts = []
        for i, record in enumerate(dpo_data):
            if not isinstance(record, dict) or not record.get("prompt"):
                raise ConfigError(f"rlhf: record {i}: field 'prompt': missing (PPO samples answers to the prompts)")
            prompts.append({"prompt": record["prompt"]})
        reward = f"reward_model:{self.results['reward_model']['final_dir']}"
        result = self._run("ppo", "rlhf", model, {"tokenizer": tokenizer, "train_records": prompts}, {"reward": reward})
        self.model = result.model
        return self._record("rlhf", ppo_result(result))

    def chay_day_du(self, model: Any, ref_model: Any = None, reward_model: Any = None, sft_data: Any = None,
                    preference_data: Any = None, dpo_data: Any = None, tokenizer: Any = None) -> dict[str, Any]:
        """Everything: SFT (when sft_data is given), the reward model (when reward_model is given), then
        DPO/PPO on dpo_data (default: preference_data). Returns each stage's ket_qua."""
        if preference_data is None and dpo_data is None:
            raise ConfigError("chay_day_du: preference_data is required (the reward model's and DPO's pairs)")
        ket_qua: dict[str, Any] = {}
        if sft_data is not None:
            ket_qua["sft"] = self.sft(model, sft_data, tokenizer=tokenizer)
        if reward_model is not None and preference_data is not None:
            ket_qua["reward_model"] = self.train_reward_model(reward_model, preference_data)
        ket_qua["rlhf"] = self.rlhf(model, ref_model, dpo_data if dpo_data is not None else preference_data,
                                    tokenizer=tokenizer)
        return ket_qua

    def thong_ke(self) -> PipelineStats:
        """Per stage: method, steps, time, loss, accuracy, reward margin, final model directory."""
        return self.stats

    run_all = chay_day_du
    statistics = thong_ke
