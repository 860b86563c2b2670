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

from vietnamese_ai.errors import OneLineParser, UserError
from vietnamese_ai.estimate import TRAINING_METHODS
from vietnamese_ai.recipes.commands import METHODS   # command -> (module, config class, run function, description)

USAGE = """vietnamese-ai <command> [--config FILE.yaml] [key=value ...]

Commands:
{commands}
  report             An HTML report (training curves, evaluations, samples) from run directories:
                     vietnamese-ai report RUN_DIR... --output report.html
  pipeline run       Stages in order from one YAML file, resumable by stage:
                     vietnamese-ai pipeline run PIPELINE.yaml [--dry-run] [--from STAGE] [--only STAGE]
  chat               Talk to a model (a full model or a LoRA adapter directory):
                     vietnamese-ai chat MODEL [--system TEXT] [--prompt TEXT] [--temperature T] ...
  export             A merged, self-contained model with a model card, optionally pushed to the hub:
                     vietnamese-ai export RUN_OR_MODEL --output DIR [--push-to-hub REPO]

`vietnamese-ai <command> --help` lists every option of a command: its type, its default (or
REQUIRED) and what it does. Options come from the YAML file first, then key=value pairs (values are
read as YAML). `vietnamese-ai --version` prints the version."""


def _commands(prefix: str = "") -> str:
    return "\n".join(f"  {name:<18} {spec[3]}" for name, spec in METHODS.items() if name.startswith(prefix))


def _method_help(name: str, config_class: Any) -> str:
    from vietnamese_ai.training.config import describe

    return (f"vietnamese-ai {name} [--config FILE.yaml] [key=value ...]\n\n{METHODS[name][3]}\n\n"
            f"Options:\n{describe(config_class)}\n{ESTIMATE_HELP if name in TRAINING_METHODS else ''}")


def run_method(name: str, argv: list[str]) -> int:
    module_name, config_name, run_name, _ = METHODS[name]
    module = importlib.import_module(module_name)
    config_class = getattr(module, config_name)
    parser = argparse.ArgumentParser(prog=f"vietnamese-ai {name}", add_help=False)
    parser.add_argument("--config", "-c")
    parser.add_argument("--help", "-h", action="store_true")
    for flag in ESTIMATE_FLAGS:
        parser.add_argument(flag, action="store_true" if flag == "--estimate" else "store")
    args, overrides = parser.parse_known_args(argv)
    if args.help:
        print(_method_help(name, config_class))
        return 0
    unknown_flags = [o for o in overrides if o.startswith("-")]
    if unknown_flags:
        raise UserError(f"command line: unknown flag '{unknown_flags[0]}'; options are given as key=value")
    given = [flag for flag in ESTIMATE_FLAGS[1:] if getattr(args, flag[2:].replace("-", "_")) is not None]
    if given and not args.estimate:
        raise UserError(f"command line: {given[0]} is an option of --estimate; add --estimate, or leave it out")
    from vietnamese_ai.training.config import load_config

    config = load_config(config_class, args.config, overrides)
    if args.estimate:
        return print_estimate(name, config, args)
    result = getattr(module, run_name)(config)
    logging.getLogger("vietnamese_ai").info(result.summary())
    return 0


# `--estimate` and the flags that describe where the run would go (they are not config keys: the same
# config is estimated for any machine).
ESTIMATE_FLAGS = ("--estimate", "--world-size", "--engine", "--device", "--device-memory")
ESTIMATE_HELP = """
Memory estimate (nothing is loaded or trained; the last line printed is JSON):
  --estimate           print the memory per device this run needs (docs/memory.md), then stop
  --world-size N       processes (default: WORLD_SIZE of the launch environment, else 1)
  --engine E           none, ddp, fsdp2, deepspeed-zero2 or deepspeed-zero3 (default: what accelerate launch asked for)
  --device D           cpu (the process's resident peak) or cuda (the GPU's peak); default: cuda if one is present
  --device-memory SIZE say whether the run fits, e.g. 80GB"""


def print_estimate(name: str, config: Any, args: argparse.Namespace) -> int:
    """The memory estimate of `config`, from config.json files only: a table, then one JSON line."""
    import json

    from vietnamese_ai import estimate
    from vietnamese_ai.training.distributed import ENGINES, asked_engine

    world_size = _positive(args.world_size or os.environ.get("WORLD_SIZE", "1"), "--world-size")
    engine = args.engine or asked_engine(world_size)
    if engine not in ENGINES:
        raise UserError(f"--engine: expected one of {', '.join(ENGINES)}, got '{engine}'")
    if args.device not in (None, "cpu", "cuda"):
        raise UserError(f"--device: expected cpu or cuda, got '{args.device}'")
    if args.device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = args.device
    memory = estimate.parse_size(args.device_memory) if args.device_memory else None
    shape = estimate.ModelShape.from_config(estimate.read_model_config(config.model_name_or_path))
    side, notes = {}, []
    others = [(key, getattr(config, key, None)) for key in ("ref_model_name_or_path", "value_model_name_or_path")]
    if name in ("grpo", "rloo", "ppo"):
        others += [(path, path) for path in estimate.scorer_models(config)]
    for key, path in others:
        if path:
            try:
                side[key] = estimate.ModelShape.from_config(estimate.read_model_config(path, key))
            except UserError:
                notes.append(f"{path}: config.json not read; taken to be the size of the policy")
    result = estimate.estimate_memory(name, config, shape, engine, world_size, device, memory, side)
    result.notes += notes
    if int(os.environ.get("RANK", "0")) == 0:   # under accelerate launch every process computes it; one prints
        print("\n".join(result.lines()))
        print(json.dumps(result.to_json()))
    return 0


def _positive(text: str, key: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{key}: expected a whole number of processes >= 1, got '{text}'")
    return value


def run_report(argv: list[str]) -> int:
    parser = OneLineParser(prog="vietnamese-ai report",
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
    if args.png:   # before the page is built: a PNG directory that cannot be written must not cost a report
        from vietnamese_ai.report.png import check_png_output

        check_png_output(args.png)
    found = build_report(args.runs, args.output, args.title)
    log.info("report of %d training runs and %d evaluations written to %s", len(found.training), len(found.evaluations),
             args.output)
    if args.png:
        from vietnamese_ai.report.png import export_png

        log.info("%d PNGs written to %s", len(export_png(args.output, args.png)), args.png)
    return 0


def run_pipeline_command(argv: list[str]) -> int:
    parser = OneLineParser(prog="vietnamese-ai pipeline run",
                            description="Run a pipeline file's stages in order; a stage that is done and unchanged is "
                                        "skipped, an interrupted one resumes (docs/pipelines.md).")
    parser.add_argument("file", metavar="PIPELINE.yaml")
    parser.add_argument("overrides", nargs="*", metavar="STAGE.KEY=VALUE", help="override a stage's key (or output_dir=PATH)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (what runs, what is skipped and why) and stop")
    parser.add_argument("--from", dest="start", metavar="STAGE", help="run this stage and every one after it, even if unchanged")
    parser.add_argument("--only", metavar="STAGE", help="run this one stage (the stages it reads must be done)")
    if argv and argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if not argv or argv[0] != "run":
        raise UserError("pipeline: usage: vietnamese-ai pipeline run PIPELINE.yaml [STAGE.KEY=VALUE ...] "
                        "[--dry-run] [--from STAGE | --only STAGE]")
    args = parser.parse_intermixed_args(argv[1:])
    if args.start and args.only:
        raise UserError("pipeline run: give --from or --only, not both")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:   # every rank would plan, run and write the state
        raise UserError("pipeline run: run it as one process, not under accelerate launch or torchrun; launch a "
                        "multi-GPU stage on its own with its command")
    from vietnamese_ai.pipeline import load_pipeline, plan, run_pipeline

    pipeline = load_pipeline(args.file, args.overrides)
    if args.dry_run:
        for step in plan(pipeline, args.start, args.only):
            print(f"{step.stage.name:<16} {step.stage.command:<18} {step.action:<7} {step.reason}")
            for path in step.missing or []:
                print(f"{'':<16} {'':<18} {'':<7} input '{path}' does not exist, and no earlier stage makes it")
        return 0
    rows = run_pipeline(pipeline, args.start, args.only, log=logging.getLogger("vietnamese_ai").info)
    print_results(pipeline, rows)
    ran = sum(r["action"] != "skip" for r in rows)
    logging.getLogger("vietnamese_ai").info("pipeline done: %d stages run, %d skipped; state in %s", ran,
                                            len(rows) - ran, os.path.join(pipeline.output_dir, "pipeline_state.json"))
    return 0


def print_results(pipeline: Any, rows: list[dict[str, Any]]) -> None:
    """At the end of a pipeline run: each evaluation's table, and where the report is."""
    import json

    for row in rows:
        stage = pipeline.stage(row["stage"])
        if stage.command == "evaluate" and os.path.isfile(stage.output("eval")):
            from vietnamese_ai.recipes.evaluate import EvaluateResult

            with open(stage.output("eval"), encoding="utf-8") as f:
                print(f"\n{stage.name}:\n{EvaluateResult(stage.directory, json.load(f)).summary()}")
        elif stage.command == "report" and os.path.isfile(stage.output("output")):
            print(f"\nreport: {os.path.abspath(stage.output('output'))}")


def _lazy(module: str) -> Any:
    """A command whose module is imported only when it runs: its `run_command(argv) -> exit code`."""
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(module).run_command(argv)
    return run


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
            print(f"vietnamese-ai feedback <prompts|generate|label|critique> [--config FILE.yaml] [key=value ...]\n\n"
                  f"{_commands('feedback ')}\n\n`vietnamese-ai feedback <sub-command> --help` lists its options.",
                  file=sys.stdout if rest else sys.stderr)
            return 0 if rest else 2
        command, rest = f"feedback {rest[0]}", rest[1:]
    special = {"report": run_report, "pipeline": run_pipeline_command, "chat": _lazy("vietnamese_ai.recipes.chat"),
               "export": _lazy("vietnamese_ai.recipes.export")}
    if command not in METHODS and command not in special:
        from vietnamese_ai.training.config import closest

        suggestion = closest(command, [*METHODS, *special])
        hint = f"did you mean '{suggestion}'? " if suggestion else ""
        print(f"vietnamese-ai: error: unknown command '{command}'; {hint}commands: {', '.join([*METHODS, *special])}",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="[vietnamese-ai] %(message)s")
    try:
        if "--estimate" in rest and command not in TRAINING_METHODS:
            raise UserError(f"{command}: --estimate applies to the commands that train ({', '.join(TRAINING_METHODS)}); "
                            f"'{command}' trains nothing")
        return special[command](rest) if command in special else run_method(command, rest)
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


def exit_process(code: int) -> None:
    """End the process with `code`. A process of a multi-process run ends at once (os._exit) after
    flushing its output: every file it wrote is already complete (atomic writes), and at the
    interpreter's normal shutdown a thread of torch's gloo backend, still releasing a finished
    collective's tensors, may abort the process (std::terminate, exit -6) after a run that succeeded."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


def entry() -> None:
    """The `vietnamese-ai` command."""
    exit_process(main())


if __name__ == "__main__":
    entry()
