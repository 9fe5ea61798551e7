"""Where a study's checkpoint files live: the directory given (``--checkpoints``), else the
one the study recorded when a checkpoint was first written there, else beside its SQLite file;
and the storage's name as a checkpoint records its owner's.

One policy, apart from the loop, because every worker of a study, on any machine and in any
working directory, must look in the one directory to go on with another's lost batch. The
files themselves (format, claims, trust) are :mod:`dropsweep.train.checkpoints`', which
knows no Optuna.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from dropsweep import records
from dropsweep.storage import mask_url, sqlite_path


def default_checkpoints(storage_url: str) -> Path:
    """Beside an SQLite file (``results/checkpoints``); for a server, ``results/checkpoints``
    here: workers on other machines need a shared directory (``--checkpoints``)."""
    path = sqlite_path(storage_url)
    return (path.parent if path is not None else Path("results")).resolve() / "checkpoints"


def storage_name(url: str) -> str:
    """The storage as a checkpoint names its owner's: the masked URL, an SQLite file by its
    absolute path (one file, whatever directory a worker runs in). Workers of one study give
    it one URL (the same command): a file written under another spelling is refused."""
    path = sqlite_path(url)
    return mask_url(url) if path is None else f"sqlite:///{path.resolve()}"


def checkpoint_root(study: optuna.Study, storage_url: str, given: str | Path | None) -> Path:
    """The study's checkpoint directory: ``given``, else the one it recorded, else the
    default. It is recorded when a checkpoint is first written there
    (:func:`record_checkpoints`): a study whose batches are short records nothing."""
    recorded = study.user_attrs.get(records.CHECKPOINTS)
    if given is not None:
        return Path(given).resolve()
    return Path(recorded) if recorded else default_checkpoints(storage_url)


def record_checkpoints(study: optuna.Study, root: Path) -> None:
    """Record ``root`` with the study, where every worker that resumes will look."""
    if study.user_attrs.get(records.CHECKPOINTS) != str(root):
        study.set_user_attr(records.CHECKPOINTS, str(root))
