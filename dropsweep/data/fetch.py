"""Finding a data file: $DROPSWEEP_DATA_DIR, then dropsweep's cache, else one download.

Every data file dropsweep reads (the files of every record in dropsweep.data.registry: Sonar,
the image sets) is found here, so they all behave
alike: a copy the user put in place wins, any copy is checked before it is used (a wrong
file would silently change the experiment), a download never leaves a half file behind, and
being offline is one line naming the URL, the file name and where to save it by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from dropsweep import env
from dropsweep.errors import DataError

DOWNLOAD_TIMEOUT = 30.0  # seconds without a byte: a stall means no usable network
_CHUNK = 1 << 20  # bytes per read: progress moves often, memory stays small for 170 MB
_SHOWN = 12  # hex digits of a digest shown in a message: enough to tell two files apart

Progress = Callable[[int, "int | None"], None]  # (bytes so far, total bytes or None)


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it lives and the SHA-256 any copy of it must have.

    ``name`` is its path under $DROPSWEEP_DATA_DIR and the cache; it may hold a folder
    (``mnist/train-images-idx3-ubyte.gz``) when two sets publish files of the same name.
    ``also`` are other names a user's copy may have under $DROPSWEEP_DATA_DIR (Sonar's
    ``sonar.all-data``, UCI's own name), looked up after ``name``, in order.
    """

    name: str
    url: str
    sha256: str
    size: int | None = None  # bytes; the progress total when the server does not say
    also: tuple[str, ...] = ()


def cache_dir() -> Path:
    """dropsweep's cache (downloaded data, built kernels): $DROPSWEEP_CACHE_DIR, else the
    XDG cache."""
    mine = env.path("DROPSWEEP_CACHE_DIR")
    if mine is not None:
        return mine
    xdg = env.path("XDG_CACHE_HOME")
    return (xdg or Path.home() / ".cache") / "dropsweep"


def fetch(remote: RemoteFile, what: str, progress: Progress | None = None) -> Path:
    """The checked local path of ``remote``, downloading it into the cache if need be.

    ``what`` names the data set in messages ("fashion_mnist"). A local copy with the wrong
    digest is an error, not a reason to download: the user put it there, or a previous
    download was damaged after it was checked, and either way someone should look.
    """
    data_dir = env.path("DROPSWEEP_DATA_DIR")
    for path in [data_dir / n for n in (remote.name, *remote.also)] if data_dir else []:
        if path.is_file():
            _verify(path, remote, f"replace it with {remote.url}")
            return path
    cached = cache_dir() / "datasets" / remote.name
    if cached.is_file():
        _verify(cached, remote, "delete it to download again")
        return cached
    return _download_into(remote, cached, what, data_dir, progress)


# ----------------------------------------------------------------------------- checking


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (the largest set is 170 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, remote: RemoteFile, advice: str) -> None:
    try:
        got = sha256_of(path)
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", file=path) from None
    if got != remote.sha256.lower():
        raise DataError(f"not the published {Path(remote.name).name}: its SHA-256 is "
                        f"{_short(got)}, expected {_short(remote.sha256)}; {advice}", file=path)


def _short(digest: str) -> str:
    return digest.lower()[:_SHOWN] + "..."


# ----------------------------------------------------------------------------- downloading


def _stream(url: str, out: BinaryIO, timeout: float, progress: Progress | None) -> None:
    """Copy ``url`` into ``out`` chunk by chunk; the one function that touches the network,
    module-level so tests can replace it."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed URLs
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else None
        done = 0
        if progress is not None:
            progress(0, total)
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)


class _Hashing:
    """A writer that hashes what passes through, so a download is checked without a
    second read."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.digest = out, hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self.digest.update(chunk)
        return self.out.write(chunk)


def _download_into(remote: RemoteFile, cached: Path, what: str, data_dir: Path | None,
                   progress: Progress | None) -> Path:
    """Download to a temp file beside ``cached``, check it, then rename: never a half file."""
    by_hand = f"save {remote.url} as {data_dir / remote.name if data_dir else cached}"
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.name}-", suffix=".part")
    except OSError as exc:
        raise DataError(f"{what}: cannot write to the cache {cached.parent} "
                        f"({exc.strerror or exc}); set DROPSWEEP_CACHE_DIR, or {by_hand}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            writer = _Hashing(out)
            _stream(remote.url, writer, DOWNLOAD_TIMEOUT,  # type: ignore[arg-type]
                    _with_total(progress, remote.size))
        got = writer.digest.hexdigest()
        if got != remote.sha256.lower():
            raise DataError(f"the download is not the published {Path(remote.name).name}: its "
                            f"SHA-256 is {_short(got)}, expected {_short(remote.sha256)}; try "
                            f"again later, or {by_hand}", file=remote.url)
        os.replace(tmp, cached)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        places = [f"$DROPSWEEP_DATA_DIR ({data_dir})"] if data_dir else []
        places.append(f"the cache ({cached.parent})")
        raise DataError(f"{what}: {Path(remote.name).name} is not in {' or '.join(places)}, "
                        f"and the download failed ({_reason(exc)}); {by_hand}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # gone already after the rename
    return cached


def _with_total(progress: Progress | None, size: int | None) -> Progress | None:
    """Report the published size as the total when the server sends no Content-Length."""
    if progress is None or size is None:
        return progress
    return lambda done, total: progress(done, total if total is not None else size)


def _reason(exc: BaseException) -> str:
    """Why a download failed, in a few words."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return f"no answer within {DOWNLOAD_TIMEOUT:g} s"
    return str(exc) or type(exc).__name__


def replace_atomically(path: Path, write: Callable[[BinaryIO], object], prefix: str,
                       suffix: str = ".part", durable: bool = False) -> None:
    """``write`` a temporary file beside ``path``, then rename it over ``path``: a reader, a
    crash or a kill sees the old file or the new, never half of one (``durable``: flushed
    to the disk first). The temporary is removed when anything fails; the error stands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

