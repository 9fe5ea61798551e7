"""scikit-learn's splits and scaling statistics, kept on disk and read back, not asked again.

Why: importing scikit-learn (``StratifiedKFold``, ``train_test_split``, ``StandardScaler``)
costs about 1.2 s of a search's start on this project's machine — as much as the rest of
start-up besides torch — and every resumed search, every worker process and every study of
the same data asks it the same questions again. Each answer depends only on its arguments and
the versions of scikit-learn and numpy (whose reductions compute the statistics), so it is
stored in dropsweep's cache directory (``remembered/``), named by a hash of all of them, and
read back bit for bit: the results are scikit-learn's, as if it
had been asked (tests/test_remembered.py holds them to it). A file that is missing, damaged
or unreadable is computed afresh; a cache that cannot be written is simply not kept.
Writes are atomic (a temporary file, then a rename), so workers sharing the cache never read
half a file.
"""

from __future__ import annotations

import hashlib
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dropsweep.data.fetch import cache_dir, replace_atomically

FORMAT = 1  # bump when what is stored, or how a key is made, changes
DIRECTORY = "remembered"


@lru_cache(maxsize=1)
def _versions() -> str:
    """scikit-learn's installed version, from its metadata (15 ms, not the 1.2 s import),
    and numpy's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{version('scikit-learn')}|numpy {np.__version__}"
    except PackageNotFoundError:
        return f"absent|numpy {np.__version__}"


def key(kind: str, arrays: Sequence[np.ndarray], params: Sequence[object]) -> str:
    """The name of an answer: ``kind``, its parameters, every array's type, shape and bytes,
    scikit-learn's and numpy's versions and this module's format."""
    h = hashlib.sha256(f"{FORMAT}|{_versions()}|{kind}|{params!r}".encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"|{a.dtype.str}{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:32]


def _path(name: str) -> Path:
    return cache_dir() / DIRECTORY / f"{name}.npz"


def _read(path: Path, count: int) -> list[np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            got = [stored[f"a{i}"] for i in range(count)]
        return got if len(got) == count else None
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError,
            zipfile.BadZipFile):  # (a lone .npy under the name: an array, not an archive)
        return None  # missing, damaged or another layout: computed again


def _write(path: Path, arrays: Sequence[np.ndarray]) -> None:
    try:
        replace_atomically(path, lambda out: np.savez(out, **{f"a{i}": a for i, a in
                                                              enumerate(arrays)}),
                           prefix=".remembered-", suffix=".npz")
    except OSError:
        pass  # not kept: the next run asks scikit-learn again


def remembered(kind: str, arrays: Sequence[np.ndarray], params: Sequence[object],
               count: int, compute: Callable[[], Sequence[np.ndarray]]) -> list[np.ndarray]:
    """``compute()``'s ``count`` arrays for these arguments: read back where they were kept,
    else computed and kept."""
    path = _path(key(kind, arrays, params))
    got = _read(path, count)
    if got is None:
        got = [np.asarray(a) for a in compute()]
        if len(got) != count:
            raise ValueError(f"{kind}: computed {len(got)} arrays, expected {count}")
        _write(path, got)
    return got
