"""User-facing errors.

Every mistake a user can make (sweep file, ``--set``, CSV, storage, study name) is raised
as a :class:`DropsweepError`; the CLI turns it into one line on stderr and exit status 2.
The error carries *where* (file, line, dotted key) separately from *what*, so the message
is formatted in one place and tests can assert on the parts.
"""

from __future__ import annotations

from pathlib import Path


class DropsweepError(Exception):
    """A mistake in the user's input: reported as one line, exit status 2."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.key:
            where.append(self.key)
        text = ": ".join(where + [self.message]) if where else self.message
        # One line, always: a newline in a message would break the contract.
        return " ".join(text.split())


class SweepError(DropsweepError):
    """The sweep file or a ``--set`` override is malformed or out of range."""


class DataError(DropsweepError):
    """The dataset cannot be found, downloaded or read, or does not fit the cross-validation."""


class StorageError(DropsweepError):
    """The storage cannot be opened, or a study in it cannot be used as asked."""


class OutputFailure(DropsweepError):
    """The command's output could not be written (a full disk behind ``> file``): not a
    mistake in the input, so exit status 1; what was stored stays stored."""

    exit_code = 1


class StorageFailure(StorageError):
    """The storage failed while in use (disk full, connection lost for too long): not a
    mistake in the input, so exit status 1; the search that met it says how to resume."""

    exit_code = 1


class StudyMismatchError(StorageError):
    """Resuming a study with a sweep whose experiment differs from the one it was made with."""
