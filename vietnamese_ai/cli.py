"""Command line: `vietnamese-ai <method> [--config FILE.yaml] [key=value ...]`.

This module only wires a config to a recipe. User mistakes (UserError) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from typing import Any

from vietnamese_ai.errors import UserError

# command -> (module, config class, run function, one-line description)
METHODS: dict[str, tuple[str, str, str, str]] = {
    "sft": ("vietnamese_ai.recipes.sft", "SFTConfig", "run_sft", "Supervised fine-tuning on text, chat or prompt-completion data."),
    "dpo": ("vietnamese_ai.recipes.dpo", "DPOConfig", "run_dpo",
            "Direct preference optimisation: loss_type=sigmoid|ipo|hinge|robust|rpo|simpo."),
    "orpo": ("vietnamese_ai.recipes.orpo", "ORPOConfig", "run_orpo", "ORPO: SFT and preference alignment in one stage, no reference."),
    "kto": ("vietnamese_ai.recipes.kto", "KTOConfig", "run_kto", "KTO: alignment from unpaired desirable/undesirable examples."),
    "reward": ("vietnamese_ai.recipes.reward", "RewardConfig", "run_reward", "Train a Bradley-Terry reward model on preference pairs."),
    "score": ("vietnamese_ai.recipes.score", "ScoreConfig", "run_score", "Score prompt/response records with a reward model."),
    "score-sft": ("vietnamese_ai.recipes.score_sft", "ScoreSFTConfig", "run_score_sft",
                  "SFT plus a score head regressed onto target scores (score-regularised fine-tuning)."),
    "grpo": ("vietnamese_ai.recipes.grpo", "GRPOConfig", "run_grpo",
             "Online RL: GRPO, group-relative advantages over num_generations samples per prompt."),
    "rloo": ("vietnamese_ai.recipes.rloo", "RLOOConfig", "run_rloo",
             "Online RL: RLOO, a leave-one-out baseline over num_generations samples per prompt."),
    "ppo": ("vietnamese_ai.recipes.ppo", "PPOConfig", "run_ppo",
            "Online RL: PPO with a value head, a per-token KL penalty (fixed or adaptive) and GAE."),
    "evaluate": ("vietnamese_ai.recipes.evaluate", "EvaluateConfig", "run_evaluate",
                 "Compare two or more models on held-out prompts: scores, principles, toxicity, win/tie/loss, KL."),
    "feedback generate": ("vietnamese_ai.recipes.feedback", "GenerateConfig", "run_generate",
                          "AI feedback: sample candidate answers (N per prompt, several temperatures)."),
    "feedback label": ("vietnamese_ai.recipes.feedback", "LabelConfig", "run_label",
                       "AI feedback: score candidates, keep (best, worst) pairs, write DPO and KTO data."),
    "feedback critique": ("vietnamese_ai.recipes.feedback", "CritiqueConfig", "run_critique",
                          "Constitutional AI: critique -> revision, written as SFT data and pairs."),
}

USAGE = """vietnamese-ai <command> [--config FILE.yaml] [key=value ...]

Commands:
{commands}
  report             An HTML report (training curves, evaluations, samples) from run directories:
                     vietnamese-ai report RUN_DIR... --output report.html

`vietnamese-ai <command> --help` lists every option of a command: its type, its default (or
REQUIRED) and what it does. Options come from the YAML file first, then key=value pairs (values are
read as YAML). `vietnamese-ai --version` prints the version."""


def _commands(prefix: str = "") -> str:
    return "\n".join(f"  {name:<18} {spec[3]}" for name, spec in METHODS.items() if name.startswith(prefix))


def _method_help(name: str, config_class: Any) -> str:
    from vietnamese_ai.training.config import describe

    return (f"vietnamese-ai {name} [--config FILE.yaml] [key=value ...]\n\n{METHODS[name][3]}\n\n"
            f"Options:\n{describe(config_class)}\n")


def run_method(name: str, argv: list[str]) -> int:
    module_name, config_name, run_name, _ = METHODS[name]
    module = importlib.import_module(module_name)
    config_class = getattr(module, config_name)
    parser = argparse.ArgumentParser(prog=f"vietnamese-ai {name}", add_help=False)
    parser.add_argument("--config", "-c")
    parser.add_argument("--help", "-h", action="store_true")
    args, overrides = parser.parse_known_args(argv)
    if args.help:
        print(_method_help(name, config_class))
        return 0
    unknown_flags = [o for o in overrides if o.startswith("-")]
    if unknown_flags:
        raise UserError(f"command line: unknown flag '{unknown_flags[0]}'; options are given as key=value")
    from vietnamese_ai.training.config import load_config

    config = load_config(config_class, args.config, overrides)
    result = getattr(module, run_name)(config)
    logging.getLogger("vietnamese_ai").info(result.summary())
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with its usage errors as one UserError line instead of usage text and exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def run_report(argv: list[str]) -> int:
    parser = _OneLineParser(prog="vietnamese-ai report",
                                     description="One self-contained HTML page from run directories (their metrics.jsonl, "
                                                 "config.yaml, run.json, eval.json, samples.jsonl, summary.json); no "
                                                 "model is loaded and the page needs no network.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or a directory of them (runs/demo)")
    parser.add_argument("--output", "-o", default="report.html", help="the HTML file to write (default: report.html)")
    parser.add_argument("--title", default="vietnamese-ai report", help="the page title")
    parser.add_argument("--png", metavar="DIR", help="also save PNGs of the page top and each figure in DIR "
                                                     "(needs playwright and a system Chromium)")
    args = parser.parse_args(argv)
    from vietnamese_ai.report import build_report

    log = logging.getLogger("vietnamese_ai")
    found = build_report(args.runs, args.output, args.title)
    log.info("report of %d training runs and %d evaluations written to %s", len(found.training), len(found.evaluations),
             args.output)
    if args.png:
        from vietnamese_ai.report.png import export_png

        log.info("%d PNGs written to %s", len(export_png(args.output, args.png)), args.png)
    return 0


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(commands=_commands()))
        return 0
    if argv[0] in ("--version", "-V"):
        from vietnamese_ai import __version__

        print(f"vietnamese-ai {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "feedback":
        if not rest or rest[0] in ("-h", "--help", "help"):
            print(f"vietnamese-ai feedback <generate|label|critique> [--config FILE.yaml] [key=value ...]\n\n"
                  f"{_commands('feedback ')}\n\n`vietnamese-ai feedback <sub-command> --help` lists its options.",
                  file=sys.stdout if rest else sys.stderr)
            return 0 if rest else 2
        command, rest = f"feedback {rest[0]}", rest[1:]
    if command not in METHODS and command != "report":
        from vietnamese_ai.training.config import closest

        suggestion = closest(command, [*METHODS, "report"])
        hint = f"did you mean '{suggestion}'? " if suggestion else ""
        print(f"vietnamese-ai: error: unknown command '{command}'; {hint}commands: {', '.join([*METHODS, 'report'])}",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="[vietnamese-ai] %(message)s")
    try:
        return run_report(rest) if command == "report" else run_method(command, rest)
    except UserError as e:
        print(f"vietnamese-ai: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during training (errors.Interrupted says what was kept)
        message = getattr(e, "message", "")
        print(f"vietnamese-ai: interrupted{': ' + message if message else ''}", file=sys.stderr)
        return 128 + int(getattr(e, "signum", 2))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _dispatch(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`vietnamese-ai sft --help | head -1`): not an error. Point stdout at
        # devnull so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if e.errno == errno.ENOSPC and not (isinstance(e.filename, str)):  # stdout itself is full
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            print(f"vietnamese-ai: error: could not write the output: {e.strerror}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
