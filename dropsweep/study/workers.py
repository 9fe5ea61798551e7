"""``dropsweep search --workers N``: N worker processes on one study, and a parent that watches.

Each worker is the ordinary ``dropsweep search`` command, one worker, in its own process
(``dropsweep search SWEEP --worker-options JSON``: the parent's options as data, a
:class:`WorkerArgs`, not its flags spelt again), so a worker that crashes or is killed takes
nothing else with it: the storage is the only thing they share, exactly as for workers on
other machines. The parent creates
(or checks) the study first, so N workers never race to create it or each print the same
mistake; then it polls the storage for progress and forwards SIGTERM. Optuna's RDB storage
does the coordination (trial numbers, states); there is no scheduler of our own.

A parent that dies without a word (``kill -9``) cannot forward anything, so each worker
watches its parent itself (:func:`watch_parent`) and stops as on SIGTERM when it is gone:
its running trials end FAIL + ``interrupted``, run again later and never counted.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

from dropsweep.errors import DropsweepError

if TYPE_CHECKING:  # not at run time: a worker calls watch_parent before importing torch
    from dropsweep.study.stop import StopFlag
    from dropsweep.study.summary import SearchSummary


@dataclass(frozen=True)
class WorkerArgs:
    """What every worker is told: the same sweep, study and settings as the parent, as
    resolved there (the storage as its URL, the study's name), passed as JSON
    (:meth:`to_json`, :meth:`from_json`) in ``--worker-options``."""

    sweep: str
    overrides: tuple[str, ...]
    storage: str
    study: str
    trials: int | None
    device: str
    batch: int | None
    threads: int
    checkpoints: str | None = None
    checkpoint_every: float | None = None
    quiet: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkerArgs:
        """The options :meth:`to_json` wrote; anything else (bad JSON, a key missing or
        unknown, a value of the wrong type or range) is a :class:`DropsweepError`."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DropsweepError(f"not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DropsweepError("not a JSON object")
        names = [f.name for f in fields(cls)]
        unknown = [key for key in data if key not in names]
        missing = [name for name in names if name not in data]
        if unknown or missing:
            raise DropsweepError("; ".join(
                [f"unknown key {k!r}" for k in unknown] + [f"missing key {k!r}" for k in missing]))
        for name, value in data.items():
            if not _WORKER_CHECKS[name](value):
                raise DropsweepError(f"{name}: {value!r} is not {_WORKER_KINDS[name]}")
        if data.get("checkpoint_every") is not None:
            data["checkpoint_every"] = float(data["checkpoint_every"])
        return cls(**{**data, "overrides": tuple(data["overrides"])})

    def command(self) -> list[str]:
        """The worker's command line: ``search SWEEP`` (so a process listing shows what it
        is) and the options as data."""
        return [sys.executable, "-m", "dropsweep", "search", self.sweep,
                "--worker-options", self.to_json()]


def _count(least: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _text(v: Any) -> bool:
    return isinstance(v, str) and v != ""


# What each key of --worker-options must hold: the ranges are the search options' own.
_WORKER_CHECKS: dict[str, Callable[[Any], bool]] = {
    "sweep": _text, "storage": _text, "study": _text, "device": _text,
    "overrides": lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v),
    "trials": _optional(_count(1)), "batch": _optional(_count(1)), "threads": _count(1),
    "checkpoints": _optional(lambda v: isinstance(v, str)),
    "checkpoint_every": _optional(lambda v: isinstance(v, (int, float))
                                  and not isinstance(v, bool) and v >= 0),
    "quiet": lambda v: isinstance(v, bool),
}
_WORKER_KINDS = {
    "sweep": "a non-empty string", "storage": "a non-empty string",
    "study": "a non-empty string", "device": "a non-empty string",
    "overrides": "a list of strings", "trials": "null or an integer >= 1",
    "batch": "null or an integer >= 1", "threads": "an integer >= 1",
    "checkpoints": "null or a string",
    "checkpoint_every": "null or a number >= 0", "quiet": "true or false",
}


def worker_args(common: WorkerArgs, devices: Sequence[str], batches: Sequence[int | None]
                ) -> list[WorkerArgs]:
    """One worker's arguments for each (device, batch): the same sweep and study, each on
    its own device (``devices.worker_devices``) with the batch that fits there."""
    return [replace(common, device=device, batch=batch)
            for device, batch in zip(devices, batches, strict=True)]


# Set by run_workers in each worker's environment: the parent's pid, to tell when it has died.
PARENT_PID_ENV = "DROPSWEEP_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def run_workers(args: Sequence[WorkerArgs], stop: StopFlag,
                watch: Callable[[], None], interval: float = 0.5) -> list[int]:
    """Start one worker for each of ``args`` (they differ in their device and batch, see
    :func:`worker_args`), call ``watch`` every ``interval`` seconds until all have exited,
    and return their exit codes.

    A signal the parent receives reaches the workers as SIGTERM (a clean stop for them;
    a Ctrl-C at a terminal reaches them directly as well). If the parent itself is torn down
    (a third Ctrl-C, an error), the workers get SIGTERM and are waited for; if it is killed
    outright, each worker notices by itself (:func:`watch_parent`).

    Call it from the thread that lives as long as the workers (the main thread): on Linux the
    "parent" whose death signals a worker is the thread that started it.
    """
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
    procs = [subprocess.Popen(each.command(), stdout=subprocess.DEVNULL, env=env)
             for each in args]
    forwarded = False
    try:
        while any(p.poll() is None for p in procs):
            if stop() and not forwarded:
                _signal_all(procs, signal.SIGTERM)
                forwarded = True
            try:
                watch()
            except Exception:  # a busy storage only delays the progress: the workers go on
                pass
            time.sleep(interval)
        watch()
    finally:
        if any(p.poll() is None for p in procs):
            _signal_all(procs, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
    return [p.returncode for p in procs]


def _signal_all(procs: Sequence[subprocess.Popen], signum: int) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signum)
            except ProcessLookupError:
                pass


def exit_status(codes: Sequence[int], summary: SearchSummary) -> int:
    """0 when the study reached its target; else the first worker failure's code."""
    if summary.finished >= summary.target:
        return 0
    failures = [c for c in codes if c not in (0, 130, 143)]
    return failures[0] if failures else (codes[0] if codes else 1)


def watch_parent(interval: float = 1.0) -> bool:
    """In a worker of :func:`run_workers`: when the parent dies, stop as on SIGTERM.

    ``kill -9`` of the parent would otherwise leave its workers running trials under init,
    the study growing with no one to stop it. SIGTERM is the worker's own clean stop (see
    ``stop.stop_on_signals``): running trials end FAIL + ``interrupted``. On Linux the
    kernel sends it the moment the parent exits (``PR_SET_PDEATHSIG``); elsewhere a daemon
    thread sends it within ``interval`` seconds of ``os.getppid()`` changing (the worker
    reparented to init or a subreaper). A parent that died before this call is noticed at
    once. Returns whether there is a parent to watch: the variable is set only by
    run_workers, and taken out of the environment so nothing this worker starts inherits it.

    Call it early: a SIGTERM before the signal handlers are installed ends the worker at once,
    which is right, as it holds no trial yet.
    """
    text = os.environ.pop(PARENT_PID_ENV, None)
    try:
        parent = int(text) if text else 0
    except ValueError:
        return False
    if parent <= 0:
        return False
    by_kernel = _signal_when_parent_dies(signal.SIGTERM)
    if os.getppid() != parent:  # it died before the kernel was told (or before we looked)
        os.kill(os.getpid(), signal.SIGTERM)
    elif not by_kernel:
        threading.Thread(target=_poll_parent, args=(parent, interval), daemon=True,
                         name="dropsweep-parent-watch").start()
    return True


def _signal_when_parent_dies(signum: int) -> bool:
    """Linux: have the kernel send ``signum`` when the parent (the thread that started this
    process) exits. False where that does not exist (then watch_parent polls instead)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), ctypes.c_ulong(0),
                          ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    except (OSError, AttributeError):
        return False


def _poll_parent(parent: int, interval: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os.kill(os.getpid(), signal.SIGTERM)
