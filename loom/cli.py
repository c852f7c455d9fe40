"""The ``loom`` command: train, validate, list, compare, predict, export, events."""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import os
import select
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import loom
from loom.trainer import is_main_process

__all__ = ["main"]

_EPILOG = "Run `loom COMMAND --help` for a command's options. Docs: docs/cli.md."


class CommandError(Exception):
    """A mistake in the command line or a job file: one message, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``loom`` command with ``argv`` (default: the process arguments).

    Returns:
        The exit status: 0, or 2 after a usage or job-file error (printed as one
        line on standard error, without a traceback).
    """
    parser = _parser()
    args = _parse_intermixed(parser, argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        status = args.run(args)
        sys.stdout.flush()  # here, not at exit, where a closed pipe could not be caught
        return status
    except CommandError as error:
        print(f"loom {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not _stdout_is_closed():
            raise  # another pipe broke: a real error
        if args.command == "train":
            print("loom train: standard output was closed; training stopped.", file=sys.stderr)
        return _SIGPIPE_STATUS


_SIGPIPE_STATUS = 128 + getattr(signal, "SIGPIPE", 13)
"""The status of a process that ``SIGPIPE`` ended, as a shell reports it."""


def _stdout_is_closed() -> bool:
    """Whether the reader of standard output went away (``loom list | head``). If so,
    stdout is pointed at the null device, so that nothing is left for the interpreter to
    fail writing at exit.

    Asked of the pipe itself (a pipe whose reader has gone polls as an error): the
    exception does not say which stream it came from, and a failed flush drops what it
    could not write, so flushing again would not tell.
    """
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        closed = any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or no real stdout
        return False
    if closed:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    return closed


def _parse_intermixed(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> Any:
    """``parser.parse_args(argv)``, with a job's overrides allowed after its options too
    (``loom train job.yaml --run-dir runs/x optimizer.lr=0.05``), in the order given.

    argparse takes a ``nargs="*"`` positional only in one run: overrides after an option
    come back unrecognised. (Its ``parse_intermixed_args`` refuses subcommands.)
    """
    args, unrecognised = parser.parse_known_args(argv)
    unrecognised = [item for item in unrecognised if item != "--"]  # "the rest is positional"
    if unrecognised:
        options = [item for item in unrecognised if item.startswith("-")]
        if options or not hasattr(args, "overrides"):
            parser.parse_args(argv)  # argparse's own message for what it does not know
        args.overrides = [*args.overrides, *unrecognised]
    return args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loom",
        description="loom: a small, fast, event-driven PyTorch trainer whose methods are plugins.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"loom {loom.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="run a YAML job",
        description="Train the job in CONFIG, writing a run directory "
        "(config.yaml, metrics.jsonl, summary.json, model.pt, plots).",
    )
    _add_job_arguments(
        train,
        config_help="the YAML job file; with --resume it may be left out, the run's own "
        "config.yaml being the job",
    )
    train.add_argument(
        "--print-config", action="store_true", help="print the resolved job and exit"
    )
    train.add_argument(
        "--dry-run",
        type=_positive_int,
        metavar="N",
        help="run N train and N eval batches through every part of the job, "
        "writing into a temporary directory, then exit",
    )
    train.add_argument(
        "--run-dir",
        type=Path,
        help="where the run's files go (default: runs/<config name>-<timestamp>)",
    )
    train.add_argument(
        "--seeds",
        type=_seed_list,
        metavar="S,S,...",
        help="run the job once per seed, one after another, each in RUN_DIR/seed<S>/ "
        "(compare them with loom compare RUN_DIR)",
    )
    train.add_argument(
        "--autoresume",
        action="store_true",
        help="with --run-dir DIR: continue the run of this job in DIR if it holds one, "
        "else start it there; the same command, run again after any stop (a torchrun "
        "restart, a requeue), goes on with the run",
    )
    train.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its latest checkpoint, as the job its "
        "config.yaml holds (only trainer.max_duration may change); it ends as the "
        "uninterrupted run would have",
    )
    train.set_defaults(run=_train)

    validate = commands.add_parser(
        "validate",
        help="check a job file without training",
        description="Check CONFIG (and overrides): every key, type and name, then build "
        "the job (datasets, model, optimizer, plugins) without training, so that sizes "
        "and class counts that contradict the data are found too.",
    )
    _add_job_arguments(validate)
    validate.set_defaults(run=_validate)

    listing = commands.add_parser(
        "list",
        help="show every registered name with its arguments",
        description="Show the names a job file can use, with their arguments and defaults.",
    )
    listing.add_argument(
        "kind",
        nargs="?",
        help="only this kind: model, dataset, wrapper, optimizer, scheduler, algorithm or callback",
    )
    _add_import_argument(listing)
    listing.add_argument(
        "--markdown", action="store_true", help="print Markdown tables, as in docs/config.md"
    )
    listing.set_defaults(run=_list)

    compare = commands.add_parser(
        "compare",
        help="compare finished runs in one table and one plot",
        description="Print final and best accuracy, NLL, ECE and time of each run (mean "
        "and standard deviation over seeds), every seed's value, paired differences with "
        "95% intervals between runs that differ only in their algorithms, and plot their "
        "curves side by side.",
    )
    compare.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    compare.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="the folder for compare.md and compare.png (default: beside the runs, in the "
        "folder that holds them all)",
    )
    compare.set_defaults(run=_compare)

    predict = commands.add_parser(
        "predict",
        help="predict data with a run's weights, into a file",
        description="Build the model of the run in RUN_DIR from its config.yaml, load "
        "only the weights from the file --checkpoint names, and predict its job's "
        "evaluation data (or --split train, or the data the overrides name) in dataset "
        "order, writing each sample's predicted class and class probabilities to a file.",
    )
    predict.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    predict.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY.PATH=VALUE",
        help="change the job's data or trainer section, e.g. data.eval.batch_size=512 "
        "trainer.device=cpu",
    )
    predict.add_argument(
        "--checkpoint",
        default="final",
        metavar="final|last|best|PATH",
        help="the weights: final, the run's model.pt (default); last, its latest "
        "checkpoint; best, the best checkpoint its summary.json lists; or the path of a "
        "checkpoint or weights file",
    )
    predict.add_argument(
        "--split",
        default="eval",
        metavar="eval|train",
        help="the job's data section to predict (default: eval)",
    )
    predict.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="FILE.csv (a row per sample) or FILE.pt (the tensors); default "
        "RUN_DIR/predictions-<split>-<checkpoint>.csv",
    )
    _add_import_argument(predict)
    predict.set_defaults(run=_predict)

    export = commands.add_parser(
        "export",
        help="export a run's model as ONNX, an exported program or TorchScript",
        description="Build the model of the run in RUN_DIR from its config.yaml, load only "
        "the weights from the file --checkpoint names (the run's result: an EMA's average "
        "when the run had one), export it in eval mode with a dynamic batch dimension, "
        "check its outputs against PyTorch's on a batch of the job's evaluation data with "
        "the format's runtime, and write it once they agree.",
    )
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    export.add_argument(
        "--format",
        required=True,
        # Checked by loom.runs.export, which owns the formats (importing it here would
        # slow every command by the job builder's imports).
        metavar="onnx|exported_program|torchscript",
        help="onnx (model.onnx, checked with onnxruntime; needs loom[export]), "
        "exported_program (torch.export, .pt2) or torchscript (torch.jit.trace)",
    )
    export.add_argument(
        "--checkpoint",
        default="final",
        metavar="final|last|best|PATH",
        help="the weights, as loom predict takes them: final, the run's model.pt "
        "(default); last, its latest checkpoint; best, the best checkpoint its "
        "summary.json lists; or the path of a checkpoint or weights file",
    )
    export.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="the file, ending in the format's suffix (.onnx, .pt2, .torchscript); "
        "default RUN_DIR/export/model-<checkpoint>.<suffix>",
    )
    _add_import_argument(export)
    export.set_defaults(run=_export)

    events = commands.add_parser(
        "events", help="print the training loop with every event at its place"
    )
    events.set_defaults(run=_print_events)
    return parser


def _add_job_arguments(parser: argparse.ArgumentParser, config_help: str | None = None) -> None:
    if config_help is None:
        parser.add_argument("config", type=Path, metavar="CONFIG", help="the YAML job file")
    else:  # optional: `loom train --resume RUN_DIR` needs no job file
        parser.add_argument("config", type=Path, nargs="?", metavar="CONFIG", help=config_help)
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY.PATH=VALUE",
        help="set a value of the job, e.g. optimizer.lr=0.05 algorithms.0.alpha=0.3",
    )
    _add_import_argument(parser)


def _add_import_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (repeatable), so the components it registers can be named",
    )


def _resolved_job(args: argparse.Namespace) -> dict[str, Any]:
    from loom.config import ConfigError
    from loom.config.job import resolve_job
    from loom.config.job_file import apply_overrides, read_job_file

    _import_modules(args.imports)
    try:
        job = read_job_file(args.config)
    except ConfigError as error:
        raise CommandError(str(error)) from None  # it names the file
    try:
        return resolve_job(apply_overrides(job, list(args.overrides)))
    except ConfigError as error:
        raise CommandError(f"{args.config}{_overrides_note(args.overrides)}: {error}") from None


def _train(args: argparse.Namespace) -> int:
    from loom.callbacks import MetricsLogError
    from loom.config import ConfigError
    from loom.config.job import dump_job
    from loom.runs import RunDirectory
    from loom.runs.train import dry_run_job, train_job
    from loom.trainer import (
        CheckpointError,
        FileWriteError,
        NonFiniteLossError,
        TrainingInterrupted,
    )
    from loom.trainer.runtime import destroy_process_group
    from loom.trainer.signals import stopped_by

    if args.config is None and args.resume is None:
        raise CommandError("give the job file CONFIG, or --resume RUN_DIR to continue a run.")
    _check_autoresume_arguments(args)
    job = _resumed_job(args) if args.resume is not None else _resolved_job(args)
    source = args.config if args.config is not None else RunDirectory(args.resume).config
    if args.print_config:
        print(dump_job(job), end="")
        return 0
    run_dir: Path | None = None
    started = False  # the job was built and training began: the run directory is its
    try:
        if args.dry_run is not None:
            files = dry_run_job(job, args.dry_run)
            if is_main_process():
                print(
                    f"dry run passed: {args.dry_run} train and eval batches; the run wrote "
                    f"{', '.join(files)} (into a temporary directory, now removed)."
                )
            return 0
        if args.resume is not None and args.run_dir is not None:
            raise CommandError("give --resume RUN_DIR or --run-dir DIR, not both.")
        if args.seeds is not None and args.resume is not None:
            raise CommandError("--seeds starts new runs; resume each with --resume RUN_DIR/seedS.")
        if args.run_dir is not None and args.run_dir.exists() and not args.run_dir.is_dir():
            raise CommandError(f"--run-dir {args.run_dir}: it is a file; give a directory.")
        created = None
        resume_from = None
        if args.autoresume:
            decision = _autoresume(job, args.run_dir)
            if decision.action == "finished":
                return 0
            resume_from = decision.checkpoint
        if args.resume is None and args.run_dir is None:
            created = run_dir = _new_run_dir(job, args.config.stem)
        else:
            run_dir = args.resume or args.run_dir

        def announce() -> None:  # once the job is built: a job that fails never has one
            nonlocal started
            started = True
            if is_main_process():
                print(f"run directory: {run_dir}")

        try:
            if args.seeds is not None:
                started = True  # each seed announces its own
                return _train_seeds(job, run_dir, args.seeds)
            metrics = train_job(
                job,
                run_dir,
                resume=args.resume is not None,
                checkpoint=resume_from,
                on_start=announce,
            )
        finally:
            if created is not None and not started and is_main_process():
                with contextlib.suppress(OSError):  # only if still empty
                    created.rmdir()  # a job that could not start leaves no run directory
    except ConfigError as error:
        raise CommandError(f"{source}: {error}") from None
    except TrainingInterrupted as interruption:
        interrupted_dir = getattr(interruption, "run_dir", run_dir)  # a seed's, under --seeds
        print(f"loom train: {interruption}\n{_resume_hint(args, interrupted_dir)}", file=sys.stderr)
        return interruption.exit_status
    except KeyboardInterrupt as interruption:  # a third signal: at once, no checkpoint now
        what, status = stopped_by(interruption)
        if started and run_dir is not None:
            hint = f"the latest checkpoint written stands.\n{_resume_hint(args, run_dir)}"
        else:
            hint = "training had not started."
        print(f"loom train: stopped at once by {what}; {hint}", file=sys.stderr)
        return status
    except (
        NonFiniteLossError,
        CheckpointError,
        FileNotFoundError,
        FileWriteError,
        MetricsLogError,
    ) as error:
        print(f"loom train: error: {error}", file=sys.stderr)
        return 1
    finally:
        destroy_process_group()  # under torchrun; nothing otherwise
    if is_main_process():
        shown = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items())
        print(f"done: {shown}\nrun directory: {run_dir} (summary.json, plots, model.pt)")
    return 0


def _check_autoresume_arguments(args: argparse.Namespace) -> None:
    if not args.autoresume:
        return
    if args.run_dir is None:
        raise CommandError(
            "--autoresume needs --run-dir DIR: the directory a rerun of the same command "
            "finds the run in again."
        )
    for given, option in ((args.resume, "--resume"), (args.seeds, "--seeds")):
        if given is not None:
            raise CommandError(f"give --autoresume or {option}, not both.")
    if args.dry_run is not None:
        raise CommandError("--dry-run writes no run to resume: give it without --autoresume.")


def _autoresume(job: dict[str, Any], run_dir: Path) -> Any:
    """Rank 0's decision for every rank: start, resume from a checkpoint, or nothing."""
    from loom.runs.autoresume import AutoresumeError, decide
    from loom.trainer.runtime import decided_by_rank_zero

    _join_torchrun_job(job)
    try:
        decision = decided_by_rank_zero(lambda: decide(run_dir, job), "--autoresume")
    except AutoresumeError as error:
        raise CommandError(str(error)) from None
    if is_main_process():
        print(f"autoresume: {decision.found}")
    return decision


def _join_torchrun_job(job: dict[str, Any]) -> None:
    """Under torchrun, this process's part of the process group, started now: rank 0
    then decides for every rank. Alone, nothing."""
    from loom.trainer.runtime import (
        TorchrunSetupError,
        join_torchrun_job,
        resolve_device,
        torchrun_world_size,
    )

    if torchrun_world_size() > 1:
        try:
            device = resolve_device(job["trainer"]["device"])
        except ValueError as error:
            raise CommandError(f"trainer.device: {error}") from None
        try:
            join_torchrun_job(device)
        except TorchrunSetupError as error:
            raise CommandError(str(error)) from None


def _new_run_dir(job: dict[str, Any], name: str) -> Path:
    """A new run directory, ``runs/<name>-<timestamp>``, created: under torchrun the
    process group starts first, so that rank 0 names it for every rank."""
    from loom.runs import new_run_dir

    _join_torchrun_job(job)
    return new_run_dir(name)


def _resume_hint(args: argparse.Namespace, run_dir: Path) -> str:
    imports = "".join(f" --import {module}" for module in args.imports)
    return f"resume with: loom train --resume {run_dir}{imports}"  # its config.yaml: the job


def _train_seeds(job: dict[str, Any], parent: Path, seeds: list[int]) -> int:
    """One run per seed in ``parent/seed<S>``, one after another."""
    from loom.runs.train import train_job
    from loom.trainer import TrainingInterrupted

    for number, seed in enumerate(seeds, start=1):
        run_dir = parent / f"seed{seed}"

        def announce(run_dir: Path = run_dir, seed: int = seed, number: int = number) -> None:
            if is_main_process():
                print(f"run directory: {run_dir} (seed {seed}, {number} of {len(seeds)})")

        try:
            metrics = train_job({**job, "seed": seed}, run_dir, on_start=announce)
        except TrainingInterrupted as interruption:
            interruption.run_dir = run_dir  # the seed's, which the hint names
            raise
        if is_main_process():
            print(f"seed {seed} done: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if is_main_process():
        print(f"all {len(seeds)} seeds done; compare them with: loom compare {parent}")
    return 0


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of ints"
        ) from None
    if len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct seeds >= 0")
    return seeds


def _resumed_job(args: argparse.Namespace) -> dict[str, Any]:
    """The job of the run in ``--resume RUN_DIR``: its own ``config.yaml``, with the
    overrides given (or a job file given instead, which must be that job). Only
    :data:`~loom.config.job_changes.RESUMABLE_CHANGES` may differ; every other change is
    refused, naming each key with both values, so that a resumed run is the run that was
    started.
    """
    from loom.config import ConfigError
    from loom.config.job import resolve_job
    from loom.config.job_changes import (
        RESUMABLE_CHANGES,
        describe_differences,
        job_differences,
        length_change_refused,
        unresumable,
    )
    from loom.config.job_file import apply_overrides, read_job_file
    from loom.runs import RunDirectory
    from loom.runs.status import RunState, read_status

    if args.config is not None and _is_override(str(args.config)):
        args.overrides, args.config = [str(args.config), *args.overrides], None
    status = read_status(args.resume)
    if status is not None and status.state is RunState.RUNNING:  # two would write one run
        raise CommandError(
            f"--resume {args.resume}: the run is still running ({status.detail}); "
            "stop it (SIGTERM saves a checkpoint), then resume."
        )
    saved_path = RunDirectory(args.resume).config
    if not saved_path.is_file():
        if args.config is None:
            raise CommandError(
                f"--resume {args.resume}: it holds no {saved_path.name}, the job of a run "
                "that loom train started; give the run's directory, or its job file too."
            )
        return _resolved_job(args)  # not a run loom train started: the file is the job
    _import_modules(args.imports)
    try:
        saved_job = read_job_file(saved_path)
    except ConfigError as error:  # it names the file
        raise CommandError(
            f"--resume {args.resume}: {error} It is the job the run started as: repair it, "
            "or give the run's job file too (loom train JOB --resume RUN_DIR)."
        ) from None
    try:
        wanted_job = (
            read_job_file(args.config) if args.config is not None else copy.deepcopy(saved_job)
        )
    except ConfigError as error:
        raise CommandError(str(error)) from None
    try:
        saved = resolve_job(saved_job)
    except ConfigError as error:
        raise CommandError(f"--resume {args.resume}: {saved_path}: {error}") from None
    try:
        wanted = resolve_job(apply_overrides(wanted_job, list(args.overrides)))
    except ConfigError as error:
        source = args.config or saved_path
        raise CommandError(f"{source}{_overrides_note(args.overrides)}: {error}") from None
    changed = unresumable(job_differences(saved, wanted))
    if changed:
        given = "the overrides change" if args.config is None else f"{args.config} changes"
        raise CommandError(
            f"--resume {args.resume}: {given} {describe_differences(changed, saved, wanted)} "
            f"of the job the run started as ({saved_path}); a resumed run may change only "
            f"{', '.join(RESUMABLE_CHANGES)}. Leave the job file out (loom train --resume "
            "RUN_DIR resumes the run's own job), or start a new run for another job."
        )
    refused = length_change_refused(saved, wanted)
    if refused is not None:
        raise CommandError(
            f"--resume {args.resume}: {refused}. Resume with the run's own duration, or "
            "start a new run."
        )
    return wanted  # the run's job, but for what a resumed run may change


def _is_override(text: str) -> bool:
    """Whether a positional argument is ``KEY.PATH=VALUE`` rather than a job file."""
    return "=" in text and not Path(text).exists()


def _validate(args: argparse.Namespace) -> int:
    from loom.config import ConfigError
    from loom.config.build import build_job
    from loom.trainer.runtime import parse_device

    job = _resolved_job(args)
    where = f"{args.config}{_overrides_note(args.overrides)}"
    try:
        # Built, not trained: the data's sizes and class counts against the job's. (A
        # checkpoint callback's folder is only named, never made, by building it.)
        folder = Path(tempfile.gettempdir()) / "loom-validate" / "checkpoints"
        # Built and checked on this machine's CPU in fp32: the job's device and precision
        # may be those of the machine it runs on (its name is checked all the same).
        try:
            parse_device(job["trainer"]["device"])
        except ValueError as error:
            raise CommandError(f"{where}: trainer.device: {error}") from None
        here = {**job, "trainer": {**job["trainer"], "device": "cpu"}}
        parts = build_job(here, checkpoint_folder=folder)
        parts.trainer_arguments.update(precision="fp32")
        trainer = parts.trainer()
    except ConfigError as error:
        raise CommandError(f"{where}: {error}") from None
    print(f"{args.config}: valid job{_overrides_note(args.overrides)}.")
    for line in trainer.engine.effects_schedule():
        print(line)
    return 0


def _list(args: argparse.Namespace) -> int:
    from loom.config import REGISTRIES

    _import_modules(args.imports)
    kinds = list(REGISTRIES)
    if args.kind is not None:
        kind = args.kind.removesuffix("s")
        if kind not in REGISTRIES:
            raise CommandError(f"unknown kind {args.kind!r}; one of {', '.join(kinds)}.")
        kinds = [kind]
    if args.markdown:
        from loom.config.reference import components_markdown

        print(components_markdown(kinds), end="")
        return 0
    blocks = []
    for kind in kinds:
        registry = REGISTRIES[kind]
        lines = [f"{kind}s:"]
        for name in registry:
            lines.append(f"  {name}: {registry.summary(name)}")
            lines += [f"      {parameter.describe()}" for parameter in registry.parameters(name)]
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from loom.config import ConfigError
    from loom.runs import compare_runs, compare_seeds, find_runs
    from loom.runs.compare import comparison_folder

    try:
        found = find_runs(args.run_dirs)
    except (FileNotFoundError, ConfigError) as error:  # each names its file
        raise CommandError(str(error)) from None
    skipped = "".join(f"\n  {line}" for line in found.skipped_lines())
    if not found.finished:
        raise CommandError(f"no finished run to compare; skipped:{skipped}")
    runs = found.finished
    folder = args.out if args.out is not None else comparison_folder(args.run_dirs)
    folder.mkdir(parents=True, exist_ok=True)
    plot, markdown = folder / "compare.png", folder / "compare.md"
    print(compare_runs(runs, plot))
    seeds = compare_seeds(runs)
    if seeds:
        print(f"\n{seeds}\n")
    tables = [compare_runs(runs, markdown=True), compare_seeds(runs, markdown=True)]
    markdown.write_text("\n\n".join(filter(None, tables)) + "\n", encoding="utf-8")
    print(f"curves side by side: {plot}; Markdown table: {markdown}")
    if skipped:
        count = len(found.skipped)
        runs_word = "run that has" if count == 1 else "runs that have"
        print(f"skipped {count} {runs_word} not finished:{skipped}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from loom.config import ConfigError
    from loom.runs import RunDirectory
    from loom.runs.predict import (
        PredictionError,
        check_output,
        default_output,
        predict_job,
        predict_run,
        weights_file,
        write_predictions,
    )
    from loom.trainer import CheckpointError
    from loom.trainer.runtime import destroy_process_group

    _import_modules(args.imports)
    try:
        # The output's format first: a mistake there should not wait for the predictions.
        output = check_output(
            args.output or default_output(args.run_dir, args.split, args.checkpoint)
        )
        job = predict_job(args.run_dir, args.overrides)
        weights = weights_file(args.run_dir, job, args.checkpoint)
        predictions = predict_run(job, weights, split=args.split)
        if is_main_process():
            write_predictions(predictions, output)
            print(
                f"predicted {len(predictions.logits)} samples of data.{args.split} with "
                f"{weights}: {output}"
            )
    except ConfigError as error:
        source = RunDirectory(args.run_dir).config
        raise CommandError(f"{source}{_overrides_note(args.overrides)}: {error}") from None
    except (PredictionError, CheckpointError, FileNotFoundError) as error:
        raise CommandError(str(error)) from None
    finally:
        destroy_process_group()  # under torchrun; nothing otherwise
    return 0


def _export(args: argparse.Namespace) -> int:
    from loom.config import ConfigError
    from loom.runs import RunDirectory
    from loom.runs.export import ExportError, check_output, default_output, export_run
    from loom.runs.predict import PredictionError, predict_job, weights_file
    from loom.trainer import CheckpointError, FileWriteError

    _import_modules(args.imports)
    try:
        # The output first: a mistake there should not wait for the export.
        output = check_output(
            args.output or default_output(args.run_dir, args.format, args.checkpoint),
            args.format,
        )
        job = predict_job(args.run_dir)
        weights = weights_file(args.run_dir, job, args.checkpoint)
        exported = export_run(job, weights, args.format, output)
    except ConfigError as error:
        raise CommandError(f"{RunDirectory(args.run_dir).config}: {error}") from None
    except (ExportError, PredictionError, CheckpointError, FileNotFoundError) as error:
        raise CommandError(str(error)) from None
    except FileWriteError as error:
        raise CommandError(f"{error}; give --output FILE in a writable folder.") from None
    print(
        f"exported {weights} as {args.format}: {exported.path}\n"
        f"checked against PyTorch on {exported.samples} samples of data.{exported.split} "
        f"(traced with {exported.traced_samples}): max abs difference "
        f"{exported.max_abs_difference:.3g}"
    )
    return 0


def _print_events(args: argparse.Namespace) -> int:
    from loom.trainer import Engine

    del args
    print(Engine().schedule())
    return 0


def _import_modules(modules: Sequence[str]) -> None:
    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: modules next to the job
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise CommandError(
                f"--import {module}: {error}. Give an importable module name "
                "(on sys.path, e.g. my_package.components), not a file path."
            ) from None


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of batches >= 1")
    return int(text)


def _overrides_note(overrides: Sequence[str]) -> str:
    return f" (with {' '.join(overrides)})" if overrides else ""


if __name__ == "__main__":
    sys.exit(main())
