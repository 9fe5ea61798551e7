"""``dropsweep search --workers N``: N worker processes on one study, and a parent that watches.

Each worker is the ordinary ``dropsweep search`` command (``--workers 1``) in its own
process, so a worker that crashes or is killed takes nothing else with it: the storage is
the only thing they share, exactly as for workers on other machines. The parent creates
(or checks) the study first, so N workers never race to create it or each print the same
mistake; then it polls the storage for progress and forwards SIGTERM. Optuna's RDB storage
does the coordination (trial numbers, states); there is no scheduler of our own.

A parent that dies without a word (``kill -9``) cannot forward anything, so each worker
watches its parent itself (:func:`watch_parent`) and stops as on SIGTERM when it is gone:
its running trials end FAIL + ``interrupted``, run again later and never counted.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # not at run time: a worker calls watch_parent before importing torch
    from dropsweep.study.runner import SearchSummary, StopFlag


@dataclass(frozen=True)
class WorkerArgs:
    """What every worker is told: the same sweep, study and settings as the parent."""

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

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "dropsweep", "search", self.sweep, "--storage",
               self.storage, "--study", self.study, "--device", self.device, "--workers", "1",
               "--threads", str(self.threads), "--quiet"]
        for override in self.overrides:
            cmd += ["--set", override]
        if self.trials is not None:
            cmd += ["--trials", str(self.trials)]
        if self.batch is not None:
            cmd += ["--batch", str(self.batch)]
        if self.checkpoints is not None:
            cmd += ["--checkpoints", self.checkpoints]
        if self.checkpoint_every is not None:
            cmd += ["--checkpoint-every", repr(self.checkpoint_every)]
        return cmd


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
    ``runner.stop_on_signals``): running trials end FAIL + ``interrupted``. On Linux the
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
