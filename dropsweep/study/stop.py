"""Stopping: a first Ctrl-C or SIGTERM asks for a clean stop, a second one stops at once
where the work allows it.

The search, ``confirm`` and ``test`` check a :class:`StopFlag` at safe points; nothing here
imports torch, so a command that only reads stops the same way.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from typing import Any, Iterator


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop and the trainer check it at safe points."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.at_once = False  # in :func:`at_once`: a second Ctrl-C raises KeyboardInterrupt
        self.presses = 0  # Ctrl-Cs since the stop was asked

    def __call__(self) -> bool:
        return self.signal is not None


@contextmanager
def stop_on_signals(flag: StopFlag, *, until_exit: bool = False) -> Iterator[StopFlag]:
    """First Ctrl-C/SIGTERM asks for a clean stop. A second Ctrl-C stops at once where the
    work allows it (:func:`at_once`) and is ignored elsewhere: the stop is under way there,
    and what it prints (the summary, the command to resume) must not be cut short; a third
    stops at once wherever it lands. ``until_exit``: the caller exits once stopped (the
    command line), so after a stop the handlers stay until it has printed and exited."""

    def handler(signum: int, frame: Any) -> None:
        if flag.signal is None or signum != signal.SIGINT:
            flag.signal = signum
            return
        flag.presses += 1
        if flag.at_once or flag.presses > 1:
            flag.at_once = False  # once: the unwinding is not cut short by the next one
            raise KeyboardInterrupt

    def unraisable(info: Any) -> None:
        # The handler's KeyboardInterrupt can land in a finalizer (a weakref's callback, a
        # __del__ run by the collector), where Python cannot raise it and prints "Exception
        # ignored" with a traceback instead. The stop is under way: drop it without a word.
        if not (isinstance(info.exc_value, KeyboardInterrupt) and flag.signal is not None):
            hook(info)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in previous:
            signal.signal(s, handler)
    except ValueError:  # not the main thread (e.g. some test runners): no handlers
        previous = {}
    hook = sys.unraisablehook
    if previous:
        sys.unraisablehook = unraisable
    try:
        yield flag
    finally:
        if not (until_exit and flag.signal is not None):
            for s, h in previous.items():
                signal.signal(s, h)
            if previous:
                sys.unraisablehook = hook


@contextmanager
def at_once(flag: StopFlag) -> Iterator[None]:
    """Work that a second Ctrl-C cuts short: it raises KeyboardInterrupt in here, the work
    gives back what it holds as it unwinds, and the caller goes on as after a clean stop.
    A KeyboardInterrupt when no stop was asked (Python's own handler) goes on up."""
    flag.at_once = True
    try:
        yield
    except KeyboardInterrupt:
        if flag.signal is None:
            raise
    finally:
        flag.at_once = False


@contextmanager
def deferred(flag: StopFlag) -> Iterator[None]:
    """Work a second Ctrl-C must not cut in two, inside :func:`at_once`: asking a trial and
    holding it (cut between the two, the trial would stay RUNNING, held by no one, until it
    went stale). A press in here waits until the work ends, then stops at once."""
    outer, presses = flag.at_once, flag.presses
    flag.at_once = False
    try:
        yield
    finally:
        flag.at_once = outer
    if outer and flag.presses > presses:
        flag.at_once = False  # once, as the handler does
        raise KeyboardInterrupt

