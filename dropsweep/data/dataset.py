"""The rows a sweep trains on (a built-in data set, any numeric CSV or npz), their folds and
scaling.

Every user mistake here (a missing file, a bad cell, an unknown target column, more folds
than a class has rows) is a one-line DataError/SweepError naming the file and row/column or
the sweep key. Splitting and scaling live here so "training-fold statistics only" is one rule.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from dropsweep.errors import DataError, SweepError
# cache_dir stays importable from here (the kernel cache); Dataset lives in readers.py and
# stays importable from here too.
from dropsweep.data.fetch import cache_dir, sha256_of  # noqa: F401
from dropsweep.data.readers import (  # noqa: F401
    Dataset, _build, _has_header, _is_int, _read_text, _rows, from_images,
)
from dropsweep.data.registry import DATASETS, load_built_in
from dropsweep.data.remembered import remembered

if TYPE_CHECKING:
    from dropsweep.sweep.sections import CVConfig, DataConfig, EvalConfig


class SweepData(Protocol):
    """What the data functions read of a sweep, and all they read (a
    :class:`~dropsweep.sweep.config.Sweep` is one): its ``data``, ``eval`` and ``cv``
    sections, the file it was read from (relative data paths start there), and where a
    key was written (a one-line error's file and line)."""

    @property
    def data(self) -> DataConfig: ...

    @property
    def eval(self) -> EvalConfig: ...

    @property
    def cv(self) -> CVConfig: ...

    @property
    def file(self) -> str: ...

    def where(self, key: str) -> dict[str, Any]: ...


# ----------------------------------------------------------------------------- entry points


def load_dataset(sweep: SweepData) -> Dataset:
    """The rows ``sweep.data`` names (a CSV or npz file, else a built-in data set), with the
    scaling ``data.scale`` asks for resolved against what the data is."""
    if sweep.data.csv is not None:
        path = _data_file(sweep, "data.csv", sweep.data.csv, "a CSV file")
        dataset = _read_once(path, sweep.data.target, lambda: load_csv(sweep))
    elif sweep.data.npz is not None:
        from dropsweep.data import images  # the npz reader: only when one is named

        path = _data_file(sweep, "data.npz", sweep.data.npz, "an .npz file")
        dataset = _read_once(path, None, lambda: from_images(images.load_npz(path)))
    else:
        dataset = load_built_in(DATASETS[str(sweep.data.dataset)])
    return hold_back_test(with_scale(dataset, sweep), sweep)


# The last data file read and its rows. A custom family's sweep is read to check the module
# against the data, then searched: the file was parsed twice (a 27 MB CSV of 50,000 rows: 0.56
# s of parsing each time). Kept while the file's bytes are the same (a hash of them, not its
# size and time: a file rewritten within the same clock tick keeps both); nothing downstream
# writes into a Dataset's arrays (it is frozen; scaling and splits copy).
_LAST_READ: tuple[tuple[Any, ...], Dataset] | None = None


def _read_once(path: Path, target: Any, read: Callable[[], Dataset]) -> Dataset:
    """``read()`` of ``path``, or the rows its last read gave while its bytes are the same."""
    global _LAST_READ
    key = (str(path.resolve()), target, sha256_of(path))
    if _LAST_READ is not None and _LAST_READ[0] == key:
        return _LAST_READ[1]
    dataset = read()
    _LAST_READ = (key, dataset)
    return dataset


def hold_back_test(dataset: Dataset, sweep: SweepData) -> Dataset:
    """The rows a search may see (``X``, ``y``) apart from the test rows (``X_test``,
    ``y_test``) that ``eval.test`` names: the data set's own test split, a stratified
    fraction held back (seeded by ``cv.seed``), or none. Nothing downstream of this reads
    the test rows but ``dropsweep test``."""
    test = sweep.eval.test
    if test is None:
        test = "official" if dataset.X_test is not None else "none"
    if test == "none":
        return replace(dataset, X_test=None, y_test=None, n_test=0)
    if test == "official":
        if dataset.X_test is None or dataset.y_test is None:
            raise SweepError(f"{dataset.name} has no test split of its own; hold a fraction "
                             "back (eval.test: 0.2) or use none", **sweep.where("eval.test"))
        return replace(dataset, n_test=int(len(dataset.y_test)))
    try:
        keep, held = stratified_split(dataset.y, float(test), sweep.cv.seed)
    except ValueError as exc:  # a class with too few rows for a stratified split
        raise SweepError(f"cannot hold {float(test):g} of {dataset.name}'s rows back for "
                         f"testing: {exc}", **sweep.where("eval.test")) from None
    return replace(dataset, X=dataset.X[keep], y=dataset.y[keep], X_test=dataset.X[held],
                   y_test=dataset.y[held], n_test=int(len(held)))


def fingerprint(*arrays: np.ndarray) -> str:
    """SHA-256 of ``arrays`` (rows, then their labels), each one's dtype and shape included:
    the same rows or not. A study records its searched rows' (:func:`rows_record`), a test
    study its test rows' (final.py)."""
    digest = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(a)
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr)  # its bytes, read in place (tobytes() would copy 150 MB for CIFAR)
    return digest.hexdigest()


def rows_record(dataset: Dataset) -> dict[str, Any]:
    """What a study records of the rows it searches (``X``, ``y``: after eval.test's
    hold-out): their fingerprint, their labels' alone (to say which changed), how many, the
    file they came from, and how many test rows are held back (what the answer's next step
    is: ``dropsweep test`` only where there are some)."""
    return {"sha256": fingerprint(dataset.X, dataset.y), "labels": fingerprint(dataset.y),
            "rows": int(dataset.X.shape[0]), "features": dataset.n_features,
            "file": data_file(dataset),
            "test_rows": dataset.n_test}


def data_file(dataset: Dataset) -> str:
    """The file (or built-in set) the rows were read from, as a message names it."""
    return dataset.source if dataset.name in dataset.source else \
        f"{dataset.name} ({dataset.source})"


def with_scale(dataset: Dataset, sweep: SweepData) -> Dataset:
    """``data.scale`` for this data: by default unit for images (pixels / 255, as the
    articles do), standard for tables; unit needs a known pixel maximum."""
    scale = sweep.data.scale or ("unit" if dataset.pixel_max is not None else "standard")
    if scale == "unit" and dataset.pixel_max is None:
        raise SweepError(f"unit divides pixels by their maximum, and {dataset.name} has none "
                         "(only 8-bit images and the built-in image sets do); use standard or "
                         "none", **sweep.where("data.scale"))
    return replace(dataset, scale=scale)


def scaling(X_fit: np.ndarray, scale: str = "standard", pixel_max: float | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """(shift, divisor) per feature, fitted on ``X_fit`` alone, such that ``(x - shift) /
    divisor`` is what a model sees: standard, the rows' mean and sd (scikit-learn's: a
    constant feature is centred, not divided); unit, 0 and ``pixel_max``; none, 0 and 1.
    Training and an exported model's scaling both come from here."""
    if scale == "standard":
        X64 = np.asarray(X_fit, dtype=np.float64)

        def fit() -> tuple[np.ndarray, np.ndarray]:
            from sklearn.preprocessing import StandardScaler  # heavy import: only when asked

            fitted = StandardScaler().fit(X64)
            return fitted.mean_, fitted.scale_

        shift, divisor = remembered("StandardScaler", [X64], (), 2, fit)
        return shift, divisor
    n = X_fit.shape[1]
    return np.zeros(n), np.full(n, float(pixel_max if scale == "unit" else 1.0))


def scale_like(X_fit: np.ndarray, X: np.ndarray, scale: str = "standard",
               pixel_max: float | None = None) -> np.ndarray:
    """``X`` as float32, scaled as ``scale`` says from the rows ``X_fit`` alone (standard in
    float64, as scikit-learn's transform computes it; unit and none in float32)."""
    if scale == "standard":
        shift, divisor = scaling(X_fit, scale)
        return ((np.asarray(X, dtype=np.float64) - shift) / divisor).astype(np.float32)
    return np.asarray(X, dtype=np.float32) / np.float32(pixel_max if scale == "unit" else 1.0)


def _sweep_path(sweep: SweepData, given: str) -> Path:
    """A data path as written in the sweep: relative to the sweep file's directory."""
    path = Path(given).expanduser()
    if not path.is_absolute():
        path = (Path(sweep.file).parent if sweep.file else Path.cwd()) / path
    return path


def _data_file(sweep: SweepData, key: str, given: str, kind: str) -> Path:
    """The data file ``key`` names, refused in one line unless it is a regular file: a
    device, pipe or socket (a link to /dev/zero, say) would be read without end."""
    path = _sweep_path(sweep, given)
    if not path.exists():
        raise DataError(f"no such file: {path}", **sweep.where(key))
    if path.is_dir():
        raise DataError(f"is a directory, not {kind}: {path}", **sweep.where(key))
    if not path.is_file():
        raise DataError(f"is not a regular file (a device, pipe or socket), not {kind}: "
                        f"{path}", **sweep.where(key))
    return path


def check_folds(dataset: Dataset, sweep: SweepData) -> None:
    """Refuse a split that would leave some test fold (or the validation split) without a
    class, before training."""
    label, smallest = min(dataset.class_counts.items(), key=lambda kv: kv[1])
    if sweep.eval.protocol == "holdout":
        val = sweep.eval.validation
        if smallest * val < 1 or smallest * (1 - val) < 1:
            raise SweepError(
                f"a validation fraction of {val:g} leaves class '{label}' ({smallest} rows) "
                "no row in the validation split or none to train on (data: "
                f"{dataset.name}, {dataset.target})", **sweep.where("eval.validation"))
        return
    folds = sweep.cv.folds
    if folds > smallest:
        raise SweepError(
            f"{folds} folds need at least {folds} rows of every class, but class '{label}' "
            f"has {smallest} (data: {dataset.name}, {dataset.target})", **sweep.where("cv.folds"))


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, test_idx) per fold; depends only on ``y``, ``folds`` and ``seed``, so every
    trial of a study is scored on exactly the same splits."""
    y = np.asarray(y)

    def split() -> list[np.ndarray]:
        from sklearn.model_selection import StratifiedKFold  # heavy import: only when asked

        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return [part.astype(np.int64) for pair in splitter.split(np.zeros((len(y), 1)), y)
                for part in pair]

    got = remembered("StratifiedKFold", [y], (folds, seed), 2 * folds, split)
    return [(got[2 * i], got[2 * i + 1]) for i in range(folds)]


def stratified_split(y: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) row indices, sorted: ``fraction`` of the rows held, every class in
    proportion; depends only on ``y``, ``fraction`` and ``seed`` (a hold-out validation
    split, the test rows held back). A class too small to split raises ValueError."""
    y = np.asarray(y)

    def split() -> list[np.ndarray]:
        from sklearn.model_selection import train_test_split  # heavy import: only when asked

        kept, held = train_test_split(np.arange(len(y)), test_size=fraction, stratify=y,
                                      random_state=seed)
        return [np.sort(kept).astype(np.int64), np.sort(held).astype(np.int64)]

    kept, held = remembered("train_test_split", [y], (float(fraction), seed), 2, split)
    return kept, held


def standardize(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both with the training fold's mean and std only: the held-out rows must not leak."""
    return scale_like(X_train, X_train), scale_like(X_train, X_test)


# ----------------------------------------------------------------------------- Sonar and any CSV


def load_sonar() -> Dataset:
    """Sonar, through its registry record: from $DROPSWEEP_DATA_DIR (sonar.csv or
    sonar.all-data), else the cache, else Brownlee's copy (downloaded once); any copy
    checked by SHA-256, then against the published shape and class counts."""
    return load_built_in(DATASETS["sonar"])


def load_csv(sweep: SweepData) -> Dataset:
    """``data.csv`` (relative to the sweep file) with ``data.target`` as the class column."""
    path = _data_file(sweep, "data.csv", sweep.data.csv or "", "a CSV file")
    source = str(path)
    rows = _rows(_read_text(path), source)
    first = rows[0][1]
    names = first if _has_header(first, sweep.data.target) else None
    column = _target_column(sweep, names, len(first), source)
    return _build(rows, names, column, source, path.name)[0]


def _target_column(sweep: SweepData, names: list[str] | None, n_cols: int, source: str) -> int:
    """Index of the class column: last by default, else a 0-based index or a header name."""
    target, where = sweep.data.target, sweep.where("data.target")
    if target is None:
        return n_cols - 1
    if isinstance(target, str):
        if names is not None and target in names:
            if names.count(target) > 1:
                raise SweepError(f"column name '{target}' appears {names.count(target)} times "
                                 f"in {source}; give its index instead", **where)
            return names.index(target)
        if not _is_int(target):
            if names is None:
                hint = f"it has no header row, so give a column index (0..{n_cols - 1} or -1)"
            else:
                shown = ", ".join(names[:12]) + (f", ... ({n_cols} in all)" if n_cols > 12 else "")
                hint = f"columns: {shown}"
            raise SweepError(f"no column named '{target}' in {source}; {hint}", **where)
        target = int(target)
    if not -n_cols <= target < n_cols:
        raise SweepError(f"column index {target} is out of range: {source} has {n_cols} columns "
                         f"(0..{n_cols - 1}, or -{n_cols}..-1 from the end)", **where)
    return target % n_cols


