"""The ``dropsweep`` command line: parse, call one function, render.

Every user mistake arrives here as a :class:`~dropsweep.errors.DropsweepError` and leaves
as one line on stderr with exit status 2. Heavy imports (torch, optuna) happen inside the
commands, so ``--help`` is instant.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import shlex
import signal
import sys
from typing import Any

import click
from click.core import ParameterSource

from dropsweep import __version__
from dropsweep.errors import DropsweepError, OutputFailure, StorageFailure
from dropsweep.records import DATA_ROWS, DEFAULT_STORAGE

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}


class UserError(click.ClickException):
    """One line on stderr, exit status 2."""

    exit_code = EXIT_USER_ERROR


class DropsweepGroup(click.Group):
    """Turns every user mistake into one line on stderr and exit 2, in one place: our own
    :class:`DropsweepError`, and click's usage errors (which would print three lines)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DropsweepError as exc:
            error = UserError(str(exc))
            error.exit_code = exc.exit_code  # 1 for a storage that failed mid-run
            raise error from None

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        if _WHOLE_PROCESS:
            # The collector looks for cycles every 700 new objects by default: while torch,
            # Optuna and SQLAlchemy import, that is hundreds of passes over a growing heap
            # (0.24 s of a 64-trial Sonar search); every 50,000, 0.07 s (gc.callbacks). The
            # process is short-lived and makes few cycles; they are still collected.
            gc.set_threshold(50_000, *gc.get_threshold()[1:])
        opened = sys.modules.get("dropsweep.storage.open")  # (not imported for --help)
        mark = opened.storages_opened() if opened is not None else 0
        code: Any = 0
        try:
            result = self._main(*args, **kwargs)
        except SystemExit as exc:
            if not _WHOLE_PROCESS:
                raise
            code = exc.code
        finally:
            _close_storages(mark)
        if _WHOLE_PROCESS:
            _exit_at_once(code)
        return result

    def _main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
            sys.exit(0)
        except click.UsageError as exc:
            command = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            click.echo(f"Error: {command}{exc.format_message()}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(EXIT_INTERRUPTED[signal.SIGINT])
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


# ----------------------------------------------------------------------------- shared options


def _storage_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A plain path as its ``sqlite:///`` URL, once, here: the workers, the checkpoints'
    owner and every suggested command see one spelling."""
    from dropsweep.storage.urls import storage_url

    try:
        return storage_url(value)
    except DropsweepError as exc:
        raise click.BadParameter(exc.message) from None


def storage_option(f: Any) -> Any:
    return click.option("--storage", default=DEFAULT_STORAGE, show_default=True,
                        metavar="URL|PATH", callback=_storage_url,
                        help="Where studies are kept: an SQLite file's path (results.db is "
                             "sqlite:///results.db) or any Optuna storage URL "
                             "(postgresql://USER@HOST/DB, ...).")(f)


def _study_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from dropsweep.records import study_name_problem

    problem = None if value is None else study_name_problem(value)
    if problem:
        raise click.BadParameter(problem)
    return value


def study_option(f: Any) -> Any:
    """``--study`` of a command that runs a sweep: named after the sweep by default."""
    return click.option("--study", "study_name", metavar="NAME", callback=_study_name,
                        help="Study name (default: the sweep's name key, else "
                             "'dropsweep').")(f)


def stored_study_option(f: Any) -> Any:
    """``--study`` of a command that reads a stored study (report, confirm, test, export):
    :func:`dropsweep.answers.report.latest_study_name` by default."""
    return click.option("--study", "study_name", metavar="NAME", callback=_study_name,
                        help="Study name (default: the most recently updated study in the "
                             "storage).")(f)


def _family_notice(family: Any, device: str) -> str | None:
    """What the family says before a run that trains it on ``device`` (the MLP: why its
    fast CPU kernel is not used, and what it costs); read before anything is written."""
    from dropsweep.train.devices import resolve_device

    return family.notice(resolve_device(device))


def _resume_command() -> str:
    """This very command, quoted for a shell: what to run again to resume."""
    return shlex.join(["dropsweep", *sys.argv[1:]])


_WHOLE_PROCESS = False  # the command line itself runs (command_line), not a caller of main


def _exit_interrupted(signum: int) -> None:
    """Exit with the stopping signal's status (130, 143) once the summary is printed, a
    Ctrl-C from now on ignored: Python gives SIGINT back to the system as it shuts down, and
    one then would end the process as killed (-2), or raise in its last clean-up; the command
    line exits at once (:func:`_exit_at_once`: a second Ctrl-C during the interpreter's own
    shutdown ended some runs of confirm as killed, tests/test_cli.py's double Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(EXIT_INTERRUPTED.get(signum, 130))


def _close_storages(since: int) -> None:
    """The storages the command opened, closed (:func:`dropsweep.storage.open.close_storages`;
    a caller's own, opened before, are left open); as the command line, a Ctrl-C from now on
    ignored: everything is done, and one would only cut the closing short."""
    if _WHOLE_PROCESS:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    opened = sys.modules.get("dropsweep.storage.open")
    if opened is not None:
        opened.close_storages(since)


def _exit_at_once(code: Any) -> None:
    """End the command line now that everything is stored and closed: output flushed and
    ``atexit`` handlers run, then ``os._exit``, skipping the interpreter's tear-down of every
    module (torch's among them: 0.4 s of a search's 9, for nothing). ``code`` as
    :func:`sys.exit` takes it; output that cannot be written (a full disk, a closed pipe)
    turns a success into 120, as Python's own exit does."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    if not _flushed():
        code = code or 120
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    if not _flushed():
        code = code or 120
    os._exit(code)


def _flushed() -> bool:
    ok = True
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            ok = False
    return ok


def _resumable(exc: StorageFailure) -> StorageFailure:
    """A storage that failed mid-run: the same one line, with how to resume."""
    return StorageFailure(f"{exc.message}; fix it, then resume with: {_resume_command()}")


def _device_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from dropsweep.train.devices import check_name

    return check_name(value)  # its form only: whether this machine has it, where it trains


def device_option(help: str) -> Any:
    """``--device auto|cpu|cuda|cuda:N``, spelt alike by every command that trains."""
    return click.option("--device", default="auto", show_default=True,
                        metavar="auto|cpu|cuda|cuda:N", callback=_device_name,
                        help=help)


def set_option(f: Any) -> Any:
    return click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                        help="Override a sweep key (value parsed as YAML); repeatable.")(f)


def sweep_argument(f: Any) -> Any:
    return click.argument("sweep", type=click.Path())(f)


def _sweep_file(given: str) -> str:
    """The file a SWEEP argument names: a file as given, else the packaged example of that
    name (``sonar``, ``sonar.yaml``), said on stderr so no one wonders which file ran.
    Called in the command's body, not as a click type: click converts arguments in the
    order they were typed, and a bad option after the sweep must still be the error."""
    from dropsweep.sweep.examples import resolve_sweep

    source = resolve_sweep(given)
    if source.example is not None:
        init = shlex.join(["dropsweep", "init", source.example])
        click.echo(f"using the example sweep {source.path} ({init} copies it here to edit)",
                   err=True)
    return source.path


def _load_sweep(path: str, overrides: tuple[str, ...]) -> Any:
    from dropsweep.sweep.config import build_sweep
    from dropsweep.sweep.file import apply_overrides, load_sweep

    return build_sweep(apply_overrides(load_sweep(path), overrides))


class _Output:
    """Standard output for the results console: a write that fails (a full disk behind
    ``> file``) is one line on stderr and exit status 1, not a traceback. A closed pipe
    (``| head``) is left as it was: that reader has all it wanted."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: rich asks them
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    @staticmethod
    def _guarded(call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputFailure(f"cannot write to standard output: {exc.strerror or exc}"
                                ) from None


def _consoles(quiet: bool = False) -> tuple[Any, Any]:
    """Results on stdout, progress and messages on stderr; no colour when not a terminal."""
    from rich.console import Console

    out = Console(file=_Output(sys.stdout), highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)
    return out, err


def _study_to_train(storage: str, study_name: str | None, threads: int | None, err: Any
                    ) -> tuple[Any, Any, Any, Any]:
    """(storage, study, its sweep, its data) for a command that trains on a stored study
    (confirm, test): found without writing first, so that a mistyped --storage creates
    nothing; the data refused unless they are the rows the study was searched on (a note
    on ``err`` when an older study records them now)."""
    import torch

    from dropsweep.data.dataset import load_dataset, rows_record
    from dropsweep.answers.report import latest_study_name
    from dropsweep.storage.open import heartbeat_seconds, load_study, open_storage
    from dropsweep.study.open import check_rows, check_searched, stored_sweep

    reader = open_storage(storage, read_only=True)
    name = study_name or latest_study_name(reader)
    check_searched(load_study(reader, name, storage))
    store = open_storage(storage, heartbeat=heartbeat_seconds())
    study = load_study(store, name, storage)
    sweep = stored_sweep(study)
    dataset = load_dataset(sweep)
    _note(err, check_rows(study, rows_record(dataset)))
    if threads is not None:
        torch.set_num_threads(threads)
    return store, study, sweep, dataset


def _storage_args(storage: str) -> tuple[str, ...]:
    """How a suggested command names the storage: not at all for the default; its password,
    if any, masked (the user types it)."""
    from dropsweep.storage.urls import mask_url

    return () if storage == DEFAULT_STORAGE else ("--storage", mask_url(storage))


def _print_study_answer(storage: str, study_name: str, out: Any) -> None:
    """The study's answer block, as ``dropsweep report`` opens with it."""
    from dropsweep.render.answer import print_answer
    from dropsweep.answers.report import study_answer
    from dropsweep.storage.open import load_study, open_storage

    store = open_storage(storage, read_only=True)
    answer, fam, data = study_answer(load_study(store, study_name, storage),
                                     _storage_args(storage))
    out.print()
    print_answer(answer, fam, data, out)


def _note(err: Any, text: str | None) -> None:
    if text:
        err.print(f"note: {text}", markup=False)


# ----------------------------------------------------------------------------- commands


@click.group(cls=DropsweepGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dropsweep")
def main() -> None:
    """Which dropout set-up generalises best for this network and data, and does it really
    beat no dropout?

    \b
      dropsweep search sonar.yaml           # run (or resume) the example study, anywhere
      dropsweep init sonar                  # copy that example here to edit
      dropsweep report                      # read the most recent study
    """


def search_options(f: Any) -> Any:
    """What ``search`` takes, spelt alike by ``run`` (whose first stage is the search)."""
    for option in reversed([
        sweep_argument, set_option, storage_option, study_option,
        click.option("--trials", type=click.IntRange(min=1), metavar="N",
                     help="The study's TOTAL number of finished trials (default: the "
                          "sweep's search.trials)."),
        device_option("Where to train: cuda:N is GPU N; with --workers, cuda spreads the "
                      "workers over every GPU, cuda:N puts them all on GPU N."),
        click.option("--batch", type=click.IntRange(min=1), metavar="B",
                     help="Trials trained together as one batched model, fewer where "
                          "more would not fit in memory (default: 16)."),
        click.option("--threads", type=click.IntRange(min=1), metavar="N",
                     help="Torch threads per worker (default: PyTorch's own count, shared "
                          "among the workers)."),
        click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                     metavar="N", help="Worker processes on this study (more can join from "
                                       "anywhere)."),
        click.option("--checkpoint-every", type=click.FloatRange(min=0), metavar="SECONDS",
                     help="Checkpoint a batch in training this often; a killed or stopped "
                          "batch goes on from its last checkpoint (0: never; default: 300)."),
        click.option("--checkpoints", "checkpoint_dir", type=click.Path(file_okay=False),
                     metavar="DIR", help="Where checkpoints go; share it among machines "
                                         "(default: the one the study recorded, else "
                                         "checkpoints beside an SQLite storage's file, "
                                         "results/checkpoints here for a server)."),
    ]):
        f = option(f)
    return f


def _search_stage(sweep: str, overrides: tuple[str, ...], storage: str,
                  study_name: str | None, trials: int | None, device: str, batch: int | None,
                  threads: int | None, workers: int, checkpoint_every: float | None,
                  checkpoint_dir: str | None, err: Any) -> tuple[Any, int]:
    """``search`` up to its summary (``run``'s first stage): the summary, and the exit status
    the workers ask for (0 with one worker). Progress and notes go to ``err``."""
    sweep = _sweep_file(sweep)  # a file its workers are given as such
    from dropsweep.data.dataset import check_folds, load_dataset, rows_record
    from dropsweep.render.progress import SearchProgress
    import torch

    from dropsweep.train.checkpoints import DEFAULT_EVERY
    from dropsweep.study.memory_fit import worker_batches
    from dropsweep.study.runner import AUTO_BATCH, SearchEvents, open_search, run_search
    from dropsweep.study.stop import StopFlag, stop_on_signals
    from dropsweep.study.summary import watcher

    config = _load_sweep(sweep, overrides)
    dataset = load_dataset(config)
    check_folds(dataset, config)
    torch.set_num_threads(threads or max(1, torch.get_num_threads() // workers))
    progress = SearchProgress(err)
    events = SearchEvents(on_start=progress.start, on_trial=progress.trial_done,
                          on_notice=progress.notice, on_epochs=progress.epochs)
    status = 0
    kernel_notice = _family_notice(config.family, device)
    try:
        with stop_on_signals(StopFlag(), until_exit=True) as stop, progress:
            for text in (kernel_notice, *config.family.notices(config.model)):
                if text:
                    progress.notice(text)
            if workers == 1:
                summary = run_search(config, dataset, storage_url=storage,
                                     study_name=study_name, trials=trials, device=device,
                                     batch=batch or AUTO_BATCH, stop=stop, events=events,
                                     checkpoint_dir=checkpoint_dir, checkpoint_every=(
                                         DEFAULT_EVERY if checkpoint_every is None
                                         else checkpoint_every))
            else:
                from dropsweep.train.devices import gpu_count, worker_devices
                from dropsweep.study.workers import WorkerArgs, exit_status, run_workers, worker_args

                wanted = batch or AUTO_BATCH
                devices = worker_devices(device, workers, gpu_count())
                fits = worker_batches(config, dataset, wanted, devices)
                study, summary = open_search(config, storage_url=storage,
                                             study_name=study_name, trials=trials,
                                             rows=rows_record(dataset),
                                             notice=progress.notice)
                progress.start(summary)
                for name, fit in sorted(set(zip(devices, fits))):
                    if fit < wanted:
                        where = "" if len(set(devices)) == 1 else f" on {name}"
                        progress.notice(f"each worker{where} trains {fit} trials at a time, "
                                        f"not {wanted}: more would not fit in memory")
                common = WorkerArgs(sweep, tuple(overrides), storage, summary.study_name,
                                    trials, device, batch, torch.get_num_threads(),
                                    checkpoint_dir, checkpoint_every, quiet=True)
                args = worker_args(common, devices,
                                   [fit if fit < wanted else batch for fit in fits])
                codes = run_workers(args, stop, watcher(study, summary, events))
                summary.stopped_by = stop.signal
                status = exit_status(codes, summary)
    except StorageFailure as exc:
        raise _resumable(exc) from None
    return summary, status


def _worker_options(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--worker-options JSON``: how ``--workers N`` starts each worker, the parent's
    options as data (:class:`~dropsweep.study.workers.WorkerArgs`)."""
    from dropsweep.study.workers import WorkerArgs

    try:
        return None if value is None else WorkerArgs.from_json(value)
    except DropsweepError as exc:
        raise click.BadParameter(exc.message) from None


def _worker_search(sweep: str, options: Any) -> tuple[Any, ...]:
    """A worker's search options, all from its ``--worker-options``: refused with any other
    option (it would be ignored), or with another SWEEP than the one the options name."""
    ctx = click.get_current_context()
    given = [max(p.opts, key=len) for p in ctx.command.params
             if isinstance(p, click.Option) and p.name != "worker_options"
             and ctx.get_parameter_source(p.name) not in (None, ParameterSource.DEFAULT)]
    if given:
        raise UserError(f"--worker-options (how --workers N starts its workers) takes no "
                        f"other option: got {', '.join(given)}")
    if sweep != options.sweep:
        raise UserError(f"--worker-options names the sweep {options.sweep}, not {sweep}")
    return (options.overrides, options.storage, options.study, options.trials,
            options.device, options.batch, options.threads, 1, options.checkpoint_every,
            options.checkpoints, options.quiet)


@main.command()
@search_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, only the summary.")
@click.option("--worker-options", hidden=True, metavar="JSON", callback=_worker_options,
              help="Internal: a worker of --workers N, given the parent's options.")
def search(sweep: str, overrides: tuple[str, ...], storage: str, study_name: str | None,
           trials: int | None, device: str, batch: int | None, threads: int | None,
           workers: int, checkpoint_every: float | None, checkpoint_dir: str | None,
           quiet: bool, worker_options: Any) -> None:
    """Run the sweep's study, or resume it: finished trials are never redone.

    SWEEP is a sweep file, or the name of an example that ships with dropsweep when no such
    file is here (brownlee, cifar10, digits, digits-cnn, fashion-mnist, sonar).

    \b
    Example:
      dropsweep search sonar.yaml                     # the packaged example, from anywhere
      dropsweep search sweeps/sonar.yaml --trials 200
      dropsweep search sweeps/sonar.yaml --set train.epochs=100 --study sonar-100
      dropsweep search sweeps/sonar.yaml --workers 2
      dropsweep search sweeps/sonar.yaml --storage postgresql://user@host/db   # on each machine
    """
    from dropsweep.render.progress import render_search_summary
    from dropsweep.study.workers import watch_parent

    # a worker of --workers N: stop cleanly, as on SIGTERM, when that parent dies
    worker = watch_parent()
    if worker_options is not None:
        (overrides, storage, study_name, trials, device, batch, threads, workers,
         checkpoint_every, checkpoint_dir, quiet) = _worker_search(sweep, worker_options)
    out, err = _consoles(quiet)
    summary, status = _search_stage(sweep, overrides, storage, study_name, trials, device,
                                    batch, threads, workers, checkpoint_every, checkpoint_dir,
                                    err)
    render_search_summary(summary, out, resume_command=_resume_command())
    if summary.stopped_by is not None:
        _exit_interrupted(summary.stopped_by)
    if not worker and not status:
        _print_study_answer(storage, summary.study_name, out)
    if status:
        sys.exit(status)


@main.command()
@search_options
@click.option("--repeats", type=click.IntRange(min=2), default=5, show_default=True,
              help="Confirmation: repetitions of k-fold CV (or hold-out splits), each new.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the answer.")
def run(sweep: str, overrides: tuple[str, ...], storage: str, study_name: str | None,
        trials: int | None, repeats: int, device: str, batch: int | None,
        threads: int | None, workers: int, checkpoint_every: float | None,
        checkpoint_dir: str | None, quiet: bool) -> None:
    """The whole experiment, ending with the answer: search, then confirm each placement's
    best and the baseline on new splits, then (where the sweep holds test rows back) test
    the chosen dropout set-up, the tuned no-dropout and the baseline once on them.

    SWEEP is a sweep file, or the name of an example that ships with dropsweep when no such
    file is here (brownlee, cifar10, digits, digits-cnn, fashion-mnist, sonar).

    Every stage resumes: run the same command again after Ctrl-C or a kill and it goes on
    where it stopped. `dropsweep report` shows the tables behind the answer.

    \b
    Example:
      dropsweep run sonar
      dropsweep run digits --repeats 10
    """
    from dropsweep.render.progress import render_search_summary, report_command

    out, err = _consoles(quiet)
    err.print("1. search", style="bold")
    summary, status = _search_stage(sweep, overrides, storage, study_name, trials, device,
                                    batch, threads, workers, checkpoint_every, checkpoint_dir,
                                    err)
    render_search_summary(summary, err, resume_command=_resume_command())
    if summary.stopped_by is not None:
        _exit_interrupted(summary.stopped_by)
    if status:
        sys.exit(status)
    name = summary.study_name
    err.print("2. confirm", style="bold")
    confirmed, _ = _confirm_stage(storage, name, None, repeats, device, threads, err)
    if confirmed.stopped_by is not None:
        err.print(f"Interrupted: {confirmed.done} of {confirmed.total} done. Resume with: "
                  + _resume_command(), markup=False)
        _exit_interrupted(confirmed.stopped_by)
    if _has_test_rows(storage, name):
        err.print("3. test", style="bold")
        result, stopped, _ = _test_stage(storage, name, "best", None, None, 3, False, device,
                                         threads, err)
        if stopped is not None:
            _interrupted_test(result, 3, err)
            _exit_interrupted(stopped)
    _print_study_answer(storage, name, out)
    out.print(f"The tables behind it: {report_command(summary)}", markup=False)


def _has_test_rows(storage: str, study_name: str) -> bool:
    """Whether the study's sweep holds test rows back (what its search recorded of its rows;
    an older study's data are loaded to see)."""
    from dropsweep.storage.open import load_study, open_storage

    study = load_study(open_storage(storage, read_only=True), study_name, storage)
    recorded = study.user_attrs.get(DATA_ROWS)
    if isinstance(recorded, dict) and isinstance(recorded.get("test_rows"), int):
        return recorded["test_rows"] > 0
    from dropsweep.data.dataset import load_dataset
    from dropsweep.study.open import stored_sweep

    return load_dataset(stored_sweep(study)).n_test not in (None, 0)


@main.command()
@storage_option
@stored_study_option
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many of the best trials to list.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]),
              default="table", show_default=True)
@click.option("--select", "select_rule", type=click.Choice(["best", "1se"]), default="best",
              show_default=True,
              help="Recommend the best mean, or the simplest set-up within one standard error.")
@click.option("--compare", "others", multiple=True, metavar="STUDY",
              help="Put other studies beside this one, placement by placement; repeatable.")
@click.option("--plots", type=click.Path(file_okay=False), metavar="DIR",
              help="Also write PNG figures here (needs the plots extra: matplotlib).")
def report(storage: str, study_name: str | None, top: int, fmt: str, select_rule: str,
           others: tuple[str, ...], plots: str | None) -> None:
    """Report a study: best trials, each placement against the baseline, the recommended
    set-up, overfitting, importances, and the verdict once `dropsweep confirm` has run.

    Without --study, reports the most recently updated study in the storage.

    \b
    Example:
      dropsweep report --top 5 --select 1se
      dropsweep report --study sonar --format json | jq '.trials[0]'
      dropsweep report --study sonar --compare sonar-wide --plots figures/
    """
    import gc

    from dropsweep.render.comparison import render_comparison
    from dropsweep.render.report import render_report
    from dropsweep.answers.report import build_report, latest_study_name
    from dropsweep.storage.open import load_study, open_storage

    # A short-lived process building many small acyclic objects: the cyclic collector would
    # only walk them again and again (and once more at exit). Measured on a 10,000-trial study
    # with benchmarks/report_scale.py.
    gc.disable()
    store = open_storage(storage, read_only=True)
    name = study_name or latest_study_name(store)
    study = load_study(store, name, storage)
    built = build_report(study, top=top, select_rule=select_rule,
                         storage_args=_storage_args(storage))
    out, err = _consoles()
    if others:
        from dropsweep.answers.select import compare_studies

        reports = [built] + [build_report(load_study(store, other, storage), top=top)
                             for other in others]
        render_comparison([r.name for r in reports], compare_studies(reports), fmt, out)
    else:
        render_report(built, fmt, out)
    if plots is not None:
        from dropsweep.render.plots import write_plots

        written = write_plots(study, built, built.confirmation, plots)
        err.print(f"wrote {len(written)} figures to {plots}: "
                  + ", ".join(p.name for p in written), markup=False)
    gc.freeze()  # nothing left to collect: spare the exit its full collection


@main.command()
@storage_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def studies(storage: str, fmt: str) -> None:
    """List every study in a storage: trials by state, best value, last update.

    \b
    Example:
      dropsweep studies --storage postgresql://postgres@127.0.0.1/test
    """
    from dropsweep.render.studies import render_studies
    from dropsweep.answers.report import list_studies
    from dropsweep.storage.open import open_storage

    out, _ = _consoles()
    render_studies(list_studies(open_storage(storage, read_only=True)), fmt, out)


@main.command()
@storage_option
@stored_study_option
@click.option("--top", type=click.IntRange(min=1), metavar="K",
              help="Confirm the baseline and the K best configurations instead (all "
                   "placements mixed, each against the baseline).")
@click.option("--per-placement", is_flag=True, hidden=True,
              help="The default (each placement's best); kept so that scripts still run.")
@click.option("--repeats", type=click.IntRange(min=2), default=5, show_default=True,
              help="Repetitions of k-fold CV (or hold-out splits), each on a new split.")
@device_option("Where to train.")
@click.option("--threads", type=click.IntRange(min=1), metavar="N",
              help="Torch threads (default: PyTorch's own count).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines, only the result.")
@click.pass_context
def confirm(ctx: click.Context, storage: str, study_name: str | None, top: int | None,
            per_placement: bool, repeats: int, device: str, threads: int | None,
            quiet: bool) -> None:
    """Re-evaluate the baseline and the best configuration of each placement (the tuned
    no-dropout among them) with repeated k-fold CV on new splits, each against the
    baseline and every pair compared (Nadeau-Bengio corrected t-tests, p-values
    Holm-adjusted over the pairs). With --top K: the K best configurations instead.

    Results go to the study NAME:confirm in the same storage; rerun to resume.

    \b
    Example:
      dropsweep confirm --study sonar --repeats 10
      dropsweep confirm --study sonar --top 5
    """
    if per_placement and top is not None:
        raise click.UsageError("--top does not apply with --per-placement (it confirms the "
                               "best configuration of each placement)", ctx)
    from dropsweep.render.confirmation import render_confirmation

    out, err = _consoles(quiet)
    summary, confirmation = _confirm_stage(storage, study_name, top, repeats, device, threads,
                                           err)
    render_confirmation(confirmation, out)
    if summary.stopped_by is not None:
        out.print(f"Interrupted: {summary.done} of {summary.total} done. Resume with: "
                  + _resume_command(), markup=False)
        _exit_interrupted(summary.stopped_by)


def _confirm_stage(storage: str, study_name: str | None, top: int | None, repeats: int,
                   device: str, threads: int | None, err: Any) -> tuple[Any, Any]:
    """``confirm`` up to its reading (``run``'s second stage): the summary and the
    confirmation read back. Progress and notes go to ``err``."""
    from dropsweep.study.confirm import run_confirm
    from dropsweep.answers.verdict import build_confirmation
    from dropsweep.study.stop import StopFlag, stop_on_signals
    from dropsweep.storage.open import load_study

    store, study, sweep, dataset = _study_to_train(storage, study_name, threads, err)
    name = study.study_name
    _note(err, _family_notice(sweep.family, device))
    what = ("the baseline and the best configuration of each placement" if top is None
            else f"the baseline and the {top} best configurations")
    err.print(f"confirming study '{name}': {what}, "
              + (f"{repeats} new hold-out splits" if sweep.eval.protocol == "holdout"
                 else f"{repeats} x {sweep.cv.folds}-fold CV on new splits"), markup=False)
    try:
        with stop_on_signals(StopFlag(), until_exit=True) as stop:
            summary = run_confirm(study, dataset, top=top, repeats=repeats, device=device,
                                  stop=stop,
                                  on_repeat=lambda s: err.print(
                                      f"  {s.done} of {s.total} (configuration, repeat) done"))
    except StorageFailure as exc:
        raise _resumable(exc) from None
    if summary.lost:
        err.print(f"{summary.lost} result(s) dropped: another run failed their trials as stale "
                  "while this one was paused; they run again with: " + _resume_command(),
                  markup=False)
    return summary, build_confirmation(load_study(store, summary.study_name, storage),
                                       sweep.splits)


@main.command("test")
@storage_option
@stored_study_option
@click.option("--select", "select_rule", type=click.Choice(["best", "1se"]), default="best",
              show_default=True, help="Which dropout set-up: the best (the best confirmed "
              "once `dropsweep confirm` has run, else the best validation score), or the "
              "simplest within one standard error of the best validation score.")
@click.option("--trial", "number", type=click.IntRange(min=0), metavar="N",
              help="Test this trial's configuration as the chosen one instead.")
@click.option("--repeats", type=click.IntRange(min=2), default=3,
              help="Training seeds, each scored on the same test rows (default: 3, or as "
                   "many as a stored result has).")
@click.option("--rescore", is_flag=True,
              help="Score again, as asked (more seeds, another trial), though a result is "
                   "stored (recorded: a test set looked at twice is less of a test).")
@device_option("Where to train.")
@click.option("--threads", type=click.IntRange(min=1), metavar="N",
              help="Torch threads (default: PyTorch's own count).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def test_command(ctx: click.Context, storage: str, study_name: str | None, select_rule: str,
                 number: int | None, repeats: int, rescore: bool, device: str,
                 threads: int | None, fmt: str) -> None:
    """Score the chosen dropout set-up, the tuned no-dropout (the best without dropout) and
    the baseline once on the test rows the sweep held back (eval.test), each trained on every
    searched row with --repeats seeds, and compare them seed by seed: the tuning gain (tuned
    no-dropout - baseline) and the dropout gain (chosen - tuned no-dropout), p-values
    Holm-adjusted over the two. A second run shows the stored answer.

    Results go to the study NAME:test in the same storage.

    \b
    Example:
      dropsweep test --study digits
      dropsweep test --study digits --select 1se --repeats 5
    """
    from dropsweep.render.tested import render_test

    out, err = _consoles()
    # a stored answer is compared with the seeds asked for, not with the default
    asked = None if ctx.get_parameter_source("repeats") is ParameterSource.DEFAULT else repeats
    result, stopped, sweep = _test_stage(storage, study_name, select_rule, number, asked,
                                         repeats, rescore, device, threads, err)
    if result is not None:
        render_test(result, sweep.family, out, fmt)
    if stopped is not None:
        _interrupted_test(result, repeats, out if fmt == "table" else err)  # stdout: JSON
        _exit_interrupted(stopped)


def _test_stage(storage: str, study_name: str | None, select_rule: str, number: int | None,
                asked: int | None, repeats: int, rescore: bool, device: str,
                threads: int | None, err: Any) -> tuple[Any, int | None, Any]:
    """``test`` up to its result (``run``'s last stage): the result (None: nothing scored),
    the signal that stopped it (None), and the study's sweep."""
    from dropsweep.study.testset import run_test
    from dropsweep.study.stop import StopFlag, stop_on_signals

    _, study, sweep, dataset = _study_to_train(storage, study_name, threads, err)
    with stop_on_signals(StopFlag(), until_exit=True) as stop:
        result = run_test(study, dataset, rule=select_rule, number=number, repeats=asked,
                          device=device, rescore=rescore, stop=stop,
                          on_repeat=lambda r: err.print(f"  repeat {r + 1} of {repeats} scored",
                                                        markup=False),
                          on_notice=lambda text: err.print(f"note: {text}", markup=False))
    return result, stop.signal, sweep


def _interrupted_test(result: Any, repeats: int, console: Any) -> None:
    scored = 0 if result is None else len(result.seeds)
    console.print(f"Interrupted: {scored} of {repeats if result is None else result.repeats} "
                  f"repeats scored. Resume with: {_resume_command()}", markup=False)


@main.command()
@storage_option
@stored_study_option
@click.option("--trial", "number", type=click.IntRange(min=0), metavar="N",
              help="The trial to export (default: the best complete one).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              metavar="FILE.yaml", help="Where to write the sweep file.")
@click.option("--model", type=click.Path(dir_okay=False), metavar="FILE.pt",
              help="Also train it on all the data and save the weights here.")
@device_option("Where to train (--model).")
def export(storage: str, study_name: str | None, number: int | None, output: str,
           model: str | None, device: str) -> None:
    """Export one trial as a sweep file with every value fixed; --model also trains it on
    all the data and saves the weights (torch.load(..., weights_only=True) reads them).

    \b
    Example:
      dropsweep export --study sonar -o best.yaml --model best.pt
      dropsweep export --study sonar --trial 0 -o baseline.yaml
    """
    from pathlib import Path

    from dropsweep.study.open import check_searched, stored_sweep
    from dropsweep.study.export import pick_trial, sweep_text, train_on_all, write_atomically
    from dropsweep.answers.report import latest_study_name
    from dropsweep.storage.open import load_study, open_storage

    store = open_storage(storage, read_only=True)
    name = study_name or latest_study_name(store)
    study = load_study(store, name, storage)
    check_searched(study)
    trial = pick_trial(study, number)
    sweep = stored_sweep(study)
    text = sweep_text(sweep, trial, name)
    out, err = _consoles()
    if model is not None:
        import torch

        from dropsweep.data.dataset import load_dataset, rows_record
        from dropsweep.study.open import check_rows, trial_seed

        from dropsweep.records import CONFIG
        from dropsweep.sweep.space import Config

        config = Config(trial.user_attrs[CONFIG])
        dataset = load_dataset(sweep)
        # the storage is read only here: an older study's rows are not recorded, only said so
        _note(err, check_rows(study, rows_record(dataset), record=False))
        saved = train_on_all(sweep, dataset, config,
                             trial_seed(sweep.search.seed, trial.number), device)
        write_atomically(Path(model), lambda out: torch.save(saved, out))
        err.print(f"trained trial {trial.number} on all the data (training accuracy "
                  f"{saved['train_accuracy']:.2%}): {model}", markup=False)
    write_atomically(Path(output), lambda out: out.write(text.encode()))
    out.print(f"wrote {output}: study '{name}', trial {trial.number}; run it with: "
              f"{shlex.join(['dropsweep', 'search', output])}", markup=False)


@main.command()
@sweep_argument
@set_option
@click.option("--data/--no-data", "check_data", default=True, show_default=True,
              help="Also load the data and check the folds against it.")
def validate(sweep: str, overrides: tuple[str, ...], check_data: bool) -> None:
    """Check a sweep file (and its data) and print the resolved configuration.

    \b
    Example:
      dropsweep validate sweeps/sonar.yaml --set cv.folds=5
    """
    from dropsweep.sweep.file import dump as dump_sweep

    config = _load_sweep(_sweep_file(sweep), overrides)
    if check_data:
        from dropsweep.data.dataset import check_folds, load_dataset

        dataset = load_dataset(config)
        check_folds(dataset, config)
        config.family.need(config.sections, dataset, config.splits)  # the network fits the data
    out, err = _consoles()
    for text in config.family.notices(config.model):
        err.print(f"note: {text}", markup=False)
    out.out(dump_sweep(config.to_dict()).rstrip())
    if check_data:
        counts = ", ".join(f"{k}: {v}" for k, v in dataset.class_counts.items())
        held = ("" if dataset.X_test is None else
                f"; {len(dataset.X_test)} test rows held back, never searched")
        out.out(f"# data: {dataset.X.shape[0]} rows x {dataset.X.shape[1]} features "
                f"from {dataset.source} ({counts}){held}")


@main.command()
@click.argument("name", default="sonar")
@click.option("-o", "--output", type=click.Path(), metavar="FILE.yaml|DIR/",
              help="Where to write it: a file, or a directory (one that exists, or a path "
                   "ending in /) to write NAME.yaml into; missing directories are made "
                   "(default: NAME.yaml here).")
def init(name: str, output: str | None) -> None:
    """Copy an example sweep here to edit; never overwrites a file.

    NAME is one of the examples that ship with dropsweep (brownlee, cifar10, digits,
    digits-cnn, fashion-mnist, sonar; default: sonar).

    \b
    Example:
      dropsweep init                    # writes sonar.yaml
      dropsweep init brownlee -o experiments/
    """
    from dropsweep.sweep.examples import copy_example

    written = copy_example(name, output)
    out, _ = _consoles()
    out.print(f"wrote {written.path}, a copy of the example sweep {written.example}; edit it, "
              f"then run: {shlex.join(['dropsweep', 'search', written.path])}", markup=False)


def command_line() -> None:
    """The ``dropsweep`` command line itself (the console script, ``python -m dropsweep``):
    the process is its own, so it ends at once when the command is done
    (:func:`_exit_at_once`). A program calling :data:`main` in its own process goes on
    after it."""
    global _WHOLE_PROCESS
    _WHOLE_PROCESS = True
    main()


if __name__ == "__main__":  # pragma: no cover
    command_line()
