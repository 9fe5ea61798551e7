"""Checkpoints of long batches: a killed worker's trials go on from their last checkpoint.

A Sonar batch is seconds of work, so a killed worker loses little (its batch goes on from
its start, :func:`dropsweep.study.liveness.replays`); a Fashion-MNIST or CIFAR-10 batch is
minutes to hours. Every few minutes (``--checkpoint-every``), and where a stop (Ctrl-C)
lands, the batch's whole state — the engine's (weights, optimiser state, random streams,
who is still training), the epoch (at a stop, the minibatch it was at and that epoch's row
order), the results so far, and the trials and configurations it trains — is written to
one file in the study's checkpoint directory, atomically (a temporary file, then a
rename), so the last complete checkpoint survives any kill.

When the batch's trials are later failed as stale (kill -9) or stopped (Ctrl-C), the next
worker *claims* the file by renaming it (atomic: one claimant wins) and trains the same
configurations on from that epoch, as new trials; the results are those of an uninterrupted
run on the same engine. A claim whose claimant died in turn is claimed again once its
trials are no longer running. Files are deleted once their batch is recorded.

A file belongs to one study (:class:`Owner`): its directory is keyed by the study's random
id, and its header names the study's id, name, storage and experiment, and the batch, trials,
configurations and seed it trains. A file that is not the study's is given back its name and
left alone, never deleted; a study deletes only files it has read as its own.

This module knows files and torch's serialisation, not Optuna: the runner decides, from
the study, which files are resumable.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from dropsweep.data.fetch import replace_atomically

class Unusable(Exception):
    """This checkpoint cannot continue here (unreadable, or not what its batch would hold):
    its configurations train from the start."""


class Elsewhere(Unusable):
    """A sound checkpoint made by another engine, kind of device or form: its random
    streams and sums differ from this worker's, so the batch trains from the start here."""


def expect_made(state: Mapping[str, Any], family: str, device: str, form: str) -> None:
    """Refuse (:class:`Elsewhere`) a batch state made by another family, kind of device or
    form: their random streams and sums differ, so it would not go on as it began."""
    made = (state.get("family"), state.get("device"), state.get("form"))
    if made != (family, device, form):
        raise Elsewhere(f"a checkpoint of {made} cannot continue as "
                        f"({family!r}, {device!r}, {form!r})")


SUFFIX = ".ckpt"
UNUSABLE = ".unusable"  # a file set aside: never read again, never deleted
TMP_PREFIX = ".tmp-"
STALE_TMP = 3600.0  # seconds: a temporary file this old was left by a kill mid-write
_CLAIMED = re.compile(r"^(?P<batch>\d+)\.ckpt\.claimed-(?P<token>[0-9a-f]{32})$")
_WRITTEN = re.compile(r"^(?P<batch>\d+)\.ckpt$")
DEFAULT_EVERY = 300.0  # seconds: a few minutes of work at most is lost to a kill


def study_dir(root: Path, study_name: str, uid: str) -> Path:
    """The study's own directory under ``root``, keyed by its id (two storages may each hold
    a study of one name); the name is kept, where it is safe, for people to read."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", study_name)[:60]
    return root / f"{safe}-{re.sub(r'[^A-Za-z0-9]+', '_', uid)[:64]}"


# What a checkpoint's owner fields are called in a refusal
_OWNER_WORDS = {"study_uid": "study id", "study": "study name", "storage": "storage",
                "sweep": "sweep"}


@dataclass(frozen=True)
class Owner:
    """Whose checkpoints these are: the study's id and name, its storage (masked URL) and
    the SHA-256 of its stored experiment. Every file carries them; a study takes (and
    deletes) only a file whose owner is itself."""

    study_uid: str
    study: str
    storage: str
    sweep: str

    def header(self) -> dict[str, str]:
        return {"study_uid": self.study_uid, "study": self.study, "storage": self.storage,
                "sweep": self.sweep}

    def differences(self, payload: Mapping[str, Any]) -> list[str]:
        """The owner fields of ``payload`` that are not this owner's, in words."""
        return [_OWNER_WORDS[key] for key, value in self.header().items()
                if payload.get(key) != value]


def write_atomic(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` to ``path``: written to a temporary file beside it, flushed to disk,
    then renamed over it, so a reader (or a kill) sees the old file or the new, never half."""
    replace_atomically(path, lambda out: torch.save(payload, out), prefix=TMP_PREFIX,
                       suffix=SUFFIX, durable=True)


_ZIP = b"PK\x03\x04"  # how every file torch.save writes (its zip format) begins
# how Python-serialised data (protocol 2 on) begins, torch.save's legacy format too
_SERIALISED = b"\x80"


def read(path: Path) -> dict[str, Any]:
    """A checkpoint, loaded weights-only: tensors and plain data, never code. A file that
    is not one raises :class:`Unusable` saying why in a few words (not torch's paragraph):
    empty, truncated, not written by torch.save, or refused unread (it would run code)."""
    size = path.stat().st_size  # OSError: the disk, not the file
    if size == 0:
        raise Unusable("the file is empty")
    with open(path, "rb") as f:
        head = f.read(len(_ZIP))
    if head == _ZIP and not zipfile.is_zipfile(path):
        raise Unusable(f"the file is truncated ({size} bytes of a torch.save archive)")
    try:
        with warnings.catch_warnings():  # its doubts about a file are said below, in words
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except EOFError as exc:
        raise Unusable(f"the file is truncated ({size} bytes)") from exc
    except Exception as exc:  # noqa: BLE001 - a torn, foreign or refused file
        if type(exc).__name__ != "UnpicklingError":  # torch's weights-only loader said no
            raise Unusable("it is not a file torch.save wrote") from exc
        if head == _ZIP:
            named = re.search(r"GLOBAL (\S+)", str(exc))
            what = "objects other than tensors and plain data" + (
                f" ({named[1]})" if named else "")
        elif head[:1] == _SERIALISED:
            what = "Python objects that torch.save did not write"
        else:
            raise Unusable("it is not a file torch.save wrote") from exc
        raise Unusable(f"it holds {what}: refused unread, since loading it could run "
                       "code") from exc
    if not isinstance(payload, dict) or not {"trials", "configs", "seed", "state"} <= set(
            payload):
        raise Unusable("not a checkpoint: its header is missing")
    return payload


@dataclass(frozen=True)
class Found:
    """A checkpoint file of the study: written by batch ``batch`` (its first trial's
    number), or claimed (``token``) by a worker that resumed it."""

    path: Path
    batch: int
    token: str | None = None


def found(directory: Path) -> Iterator[Found]:
    """The study's checkpoint files, written and claimed, oldest batch first."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:  # none yet, or a place that cannot hold any (the saver says so)
        return
    items = []
    for name in names:
        if name.startswith(TMP_PREFIX) and age(Found(directory / name, -1)) > STALE_TMP:
            remove(directory / name)  # half a file, left by a kill while it was written
            continue
        written, claimed = _WRITTEN.match(name), _CLAIMED.match(name)
        if written:
            items.append(Found(directory / name, int(written["batch"])))
        elif claimed:
            items.append(Found(directory / name, int(claimed["batch"]), claimed["token"]))
    yield from sorted(items, key=lambda f: f.batch)


def claim(item: Found) -> Found | None:
    """Take ``item`` for this worker by renaming it under a new token; None when another
    worker took it first (the rename is atomic: exactly one claimant succeeds)."""
    token = uuid.uuid4().hex
    target = item.path.parent / f"{item.batch}{SUFFIX}.claimed-{token}"
    try:
        # the claim's time, before the claim shows: a claimant that dies at once is then
        # seen by age(), and no one takes a fresh claim for an old one
        os.utime(item.path)
        os.rename(item.path, target)
    except FileNotFoundError:
        return None
    return Found(target, item.batch, token)


def give_back(mine: Found, item: Found) -> None:
    """Undo :func:`claim`: ``mine`` goes back to the name it had (``item``), never over a
    file that has taken that name meanwhile (it then stays under the claim)."""
    try:
        os.link(mine.path, item.path)
    except FileExistsError:
        return
    except OSError:  # a file system without hard links: a rename, which could replace
        if not item.path.exists():
            os.rename(mine.path, item.path)
        return
    os.unlink(mine.path)


def set_aside(mine: Found, item: Found) -> Path:
    """Put a claimed file that cannot be used out of every worker's way for good: renamed
    ``<the name it was found under>.unusable`` beside it (never looked at again, never
    deleted: its owner may want to see it); its new path."""
    aside = item.path.with_name(item.path.name + UNUSABLE)
    if aside.exists():
        aside = aside.with_name(f"{aside.name}-{mine.token}")
    os.rename(mine.path, aside)
    return aside


def age(item: Found) -> float:
    """Seconds since ``item`` was written or claimed (inf when it is gone)."""
    try:
        return time.time() - item.path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def remove(*paths: Path | None) -> None:
    for path in paths:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)


class Saver:
    """The batch's checkpointer (:class:`dropsweep.train.loop.Checkpointer`): due every
    ``every`` seconds of training; each checkpoint is ``header`` (the trials, their
    configurations, the seed) plus the training state, in ``path``. The first one written
    retires the file this batch resumed from (``resumed``), which it supersedes."""

    def __init__(self, path: Path, header: dict[str, Any], every: float,
                 resumed: Path | None = None, first: Callable[[], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.path, self.header, self.every, self.resumed = path, header, every, resumed
        self.first = first  # called before the first write (the runner records the directory)
        self.on_error = on_error  # told, in one line, when checkpoints cannot be written
        self.last = time.monotonic()
        self.written = 0

    def due(self) -> bool:
        return self.every > 0 and time.monotonic() - self.last >= self.every

    def at_stop(self) -> bool:
        """A stop is checkpointed where it stopped, unless checkpoints are off (every 0:
        never), could not be written, or the batch is no longer this worker's."""
        return self.every > 0

    def __call__(self, state: dict[str, Any]) -> None:
        if self.first is not None:
            self.first()
            self.first = None
        try:
            write_atomic(self.path, {**self.header, "state": state})
        except OSError as exc:  # a safety net that fails must not stop the training it guards
            self.every = 0.0
            if self.on_error is not None:
                self.on_error(f"checkpoints cannot be written to {self.path.parent} "
                              f"({exc.strerror or exc}); this batch goes on without them")
            return
        self.last = time.monotonic()
        self.written += 1
        if self.resumed is not None:
            remove(self.resumed)
            self.resumed = None

    def done(self) -> None:
        """The batch is recorded: its checkpoints are no longer needed (a file at its path
        that it never wrote is not its own to delete)."""
        remove(self.path if self.written else None, self.resumed)
