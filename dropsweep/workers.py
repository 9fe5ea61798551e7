"""``dropsweep search --workers N``: N worker processes on one study, and a parent that watches.

Each worker is the ordinary ``dropsweep search`` command (``--workers 1``) in its own
process, so a worker that crashes or is killed takes nothing else with it: the storage is
the only thing they share, exactly as for workers on other machines. The parent creates
(or checks) the study first, so N workers never race to create it or each print the same
mistake; then it polls the storage for progress and forwards SIGTERM. Optuna's RDB storage
does the coordination (trial numbers, states); there is no scheduler of our own.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from dropsweep.runner import SearchSummary, StopFlag


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
        return cmd


def run_workers(args: WorkerArgs, n: int, stop: StopFlag,
                watch: Callable[[], None], interval: float = 0.5) -> list[int]:
    """Start ``n`` workers, call ``watch`` every ``interval`` seconds until all have exited,
    and return their exit codes.

    A signal the parent receives reaches the workers as SIGTERM (a clean stop for them;
    a Ctrl-C at a terminal reaches them directly as well). If the parent itself is torn down
    (a second Ctrl-C), the workers get SIGTERM and are waited for.
    """
    procs = [subprocess.Popen(args.command(), stdout=subprocess.DEVNULL) for _ in range(n)]
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
