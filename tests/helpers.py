"""Assertions shared by the test modules."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

from dropsweep.errors import DropsweepError
from dropsweep.study.stop import StopFlag


def assert_one_line(err: DropsweepError, file: str, line: int | None, key: str | None,
                    *fragments: str) -> None:
    """The error's parts (file, line, key), and its one-line text naming each of them."""
    assert (err.file, err.line, err.key) == (file, line, key), str(err)
    text = str(err)
    assert len(text.splitlines()) == 1 and "\n" not in text
    assert text.startswith(" ".join(file.split()))  # str() folds runs of whitespace
    if line is None:
        assert ": line " not in text
    else:
        assert f": line {line}: " in text
    if key is not None:
        assert f"{key}:" in text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


# What the robustness tests exercised in this run (printed at the end of the session by
# conftest.py; the README quotes a run): kill -9 points, worker processes, fuzzed inputs.
SUITE: Counter[str] = Counter()


class StopAfter(StopFlag):
    """A stop flag (as Ctrl-C sets it: :class:`dropsweep.study.stop.StopFlag`) raised after
    ``n`` looks, so a search or a batch stops at a chosen point."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def __call__(self) -> bool:
        self.n -= 1
        if self.n < 0:
            self.signal = signal.SIGINT
        return self.signal is not None


class Every:
    """A checkpointer (:class:`dropsweep.train.loop.Checkpointer`) that is always due and keeps
    every state it is given."""

    def __init__(self) -> None:
        self.states: list[dict] = []

    def due(self) -> bool:
        return True

    def at_stop(self) -> bool:
        return True

    def __call__(self, state: dict) -> None:
        self.states.append(state)


def alive(pid: int, started: str) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (a zombie does not:
    the orphan's new parent may be slow to reap it; a reused pid is another process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)"
    return fields[0] not in ("Z", "X") and fields[19] == started


def worker_processes(parent: int) -> dict[int, str]:
    """The ``--workers`` children of ``parent``: pid -> start time (for :func:`alive`).
    Its own children only: another test's workers, running beside it under xdist, have the
    same command line."""
    children = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True,
                              text=True).stdout.split()
    found = {}
    for pid in children:
        try:
            if b"\x00--worker-options\x00" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            found[int(pid)] = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone already
    return found


def trials_in_the_file_alone(db: Path, copy: Path) -> int:
    """The trials a copy of the SQLite file holds without its ``-wal`` and ``-shm`` beside it
    (as it is mailed, committed or ``scp``-ed)."""
    shutil.copyfile(db, copy)
    with contextlib.closing(sqlite3.connect(copy)) as con:
        return con.execute("select count(*) from trials").fetchone()[0]
