"""The rows a sweep trains on (built-in Sonar or any numeric CSV), their folds and scaling.

Every user mistake here (a missing file, a bad cell, an unknown target column, more folds
than a class has rows) is a one-line DataError/SweepError naming the file and row/column or
the sweep key. Splitting and scaling live here so "training-fold statistics only" is one rule.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dropsweep import env
from dropsweep.errors import DataError, SweepError
# Finding and downloading files lives in fetch.py; these names stay importable from here
# (cache_dir for the kernel cache, _download for the tests that replace the network).
from dropsweep.data.fetch import DOWNLOAD_TIMEOUT, _download, _reason, _store, cache_dir  # noqa: F401

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

SONAR_URL = ("https://archive.ics.uci.edu/ml/machine-learning-databases/undocumented/"
             "connectionist-bench/sonar/sonar.all-data")
SONAR_NAMES = ("sonar.csv", "sonar.all-data")  # looked up in $DROPSWEEP_DATA_DIR, in order
# Gorman & Sejnowski's set: 208 returns, 60 band energies in [0, 1], 111 mines and 97 rocks.
SONAR_ROWS, SONAR_FEATURES = 208, 60
SONAR_COUNTS = {"M": 111, "R": 97}
# Cells that mean "no value" in the CSVs people actually have ("?" is UCI's convention).
_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays field-wise is meaningless
class Dataset:
    """Rows ready for a classifier; class id ``i`` means label ``classes[i]``."""

    X: np.ndarray  # float32 [rows, features]
    y: np.ndarray  # int64 [rows], 0..n_classes-1
    classes: tuple[str, ...]  # sorted (numerically when every label is a number)
    name: str  # "sonar" or the CSV file name
    source: str  # the path (or URL) the rows were read from
    feature_names: tuple[str, ...]
    target: str = "the target column"  # how messages name the label column: "column 'label'"
    # the data set's own test split (image sets, an npz's x_test): never read by a search
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    image_shape: tuple[int, ...] | None = None  # (height, width, channels) of image rows
    pixel_max: float | None = None  # what `unit` scaling divides by (255 for 8-bit images)
    scale: str = "standard"  # how rows are scaled for training: data.scale, resolved
    # how many test rows eval.test held back (hold_back_test): counted once there, so what
    # a search records of its data never has to touch the test rows themselves
    n_test: int | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.y, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}


# ----------------------------------------------------------------------------- entry points


def load_dataset(sweep: SweepData) -> Dataset:
    """The rows ``sweep.data`` names (a CSV or npz file, else a built-in data set), with the
    scaling ``data.scale`` asks for resolved against what the data is."""
    if sweep.data.csv is not None:
        dataset = load_csv(sweep)
    elif sweep.data.dataset == "sonar":
        dataset = load_sonar()
    else:
        from dropsweep.data import images  # the image sets' readers: only when one is named

        if sweep.data.npz is not None:
            path = _data_file(sweep, "data.npz", sweep.data.npz, "an .npz file")
            dataset = from_images(images.load_npz(path))
        else:
            dataset = from_images(images.load_image_set(str(sweep.data.dataset)))
    return hold_back_test(with_scale(dataset, sweep), sweep)


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


def from_images(imgs: Any) -> Dataset:
    """An :class:`~dropsweep.data.images.ImageSet` (or an npz's table) as rows: each image
    flattened, pixels kept as stored (8-bit images stay uint8 until they are scaled)."""
    n = len(imgs.x_train)
    shape = tuple(int(d) for d in imgs.x_train.shape[1:])
    X = imgs.x_train.reshape(n, -1)
    names = tuple(f"pixel {i}" for i in range(X.shape[1])) if len(shape) > 1 else tuple(
        f"feature {i}" for i in range(X.shape[1]))
    x_test = None if imgs.x_test is None else imgs.x_test.reshape(len(imgs.x_test), -1)
    return Dataset(X=X, y=imgs.y_train.astype(np.int64), classes=tuple(imgs.classes),
                   name=imgs.name, source=imgs.source, feature_names=names, target="y",
                   X_test=x_test, y_test=None if imgs.y_test is None
                   else imgs.y_test.astype(np.int64),
                   image_shape=shape if len(shape) > 1 else None, pixel_max=imgs.pixel_max)


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
        from sklearn.preprocessing import StandardScaler  # heavy import: only when scaling

        fitted = StandardScaler().fit(np.asarray(X_fit, dtype=np.float64))
        return fitted.mean_, fitted.scale_
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
    from sklearn.model_selection import StratifiedKFold  # heavy import: only when splitting

    y = np.asarray(y)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(train.astype(np.int64), test.astype(np.int64))
            for train, test in splitter.split(np.zeros((len(y), 1)), y)]


def stratified_split(y: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) row indices, sorted: ``fraction`` of the rows held, every class in
    proportion; depends only on ``y``, ``fraction`` and ``seed`` (a hold-out validation
    split, the test rows held back). A class too small to split raises ValueError."""
    from sklearn.model_selection import train_test_split  # heavy import: only when splitting

    kept, held = train_test_split(np.arange(len(y)), test_size=fraction, stratify=y,
                                  random_state=seed)
    return np.sort(kept).astype(np.int64), np.sort(held).astype(np.int64)


def standardize(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both with the training fold's mean and std only: the held-out rows must not leak."""
    return scale_like(X_train, X_train), scale_like(X_train, X_test)


# ----------------------------------------------------------------------------- Sonar


def load_sonar() -> Dataset:
    """Sonar from $DROPSWEEP_DATA_DIR, else the cache, else UCI (downloaded once, then cached).

    Any copy is checked against the published shape and class counts, so a truncated or
    edited file is refused instead of silently changing the experiment.
    """
    cache = cache_dir() / "sonar.csv"
    data_dir = env.path("DROPSWEEP_DATA_DIR")
    candidates = [data_dir / n for n in SONAR_NAMES] if data_dir else []
    for path in [*candidates, cache]:
        if path.is_file():
            advice = ("delete it to download again" if path == cache
                      else f"replace it with UCI's sonar.all-data ({SONAR_URL})")
            return _sonar(_read_text(path), str(path), advice)
    try:
        raw = _download(SONAR_URL, DOWNLOAD_TIMEOUT)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        places = [f"$DROPSWEEP_DATA_DIR ({data_dir})"] if data_dir else []
        places.append(f"the cache ({cache.parent})")
        raise DataError(
            f"sonar: not found in {' or '.join(places)}, and the download from UCI failed "
            f"({_reason(exc)}); save UCI's sonar.all-data ({SONAR_URL}) as {cache}") from None
    dataset = _sonar(_decode(raw), SONAR_URL,
                     f"the download is not UCI's Sonar file; save a good copy as {cache}")
    return replace(dataset, source=str(cache)) if _store(raw, cache) else dataset


def _sonar(text: str, source: str, advice: str) -> Dataset:
    """Parse and check one Sonar copy; any problem names ``source`` and says what to do."""
    try:
        rows = _rows(text, source)
        names = rows[0][1] if _has_header(rows[0][1], None) else None
        dataset, lines = _build(rows, names, len(rows[0][1]) - 1, source, "sonar")
    except DataError as exc:
        raise DataError(f"{exc.message}; {advice}", file=exc.file) from None
    X, counts = dataset.X, dataset.class_counts
    problem = None
    if len(X) != SONAR_ROWS:
        problem = f"has {len(X)} rows, expected {SONAR_ROWS}"
    elif X.shape[1] != SONAR_FEATURES:
        problem = f"has {X.shape[1]} feature columns, expected {SONAR_FEATURES}"
    elif counts != SONAR_COUNTS:
        problem = "has labels {}, expected {}".format(
            *(", ".join(f"{n} {label}" for label, n in c.items()) for c in (counts, SONAR_COUNTS)))
    elif ((X < 0) | (X > 1)).any():
        i, j = np.argwhere((X < 0) | (X > 1))[0]
        problem = f"row {lines[i]}, column {j + 1}: {X[i, j]:g} is outside [0, 1]"
    if problem:
        raise DataError(f"not the UCI Sonar data: {problem}; {advice}", file=source)
    return dataset


# ----------------------------------------------------------------------------- any CSV


def load_csv(sweep: SweepData) -> Dataset:
    """``data.csv`` (relative to the sweep file) with ``data.target`` as the class column."""
    path = _data_file(sweep, "data.csv", sweep.data.csv or "", "a CSV file")
    source = str(path)
    rows = _rows(_read_text(path), source)
    first = rows[0][1]
    names = first if _has_header(first, sweep.data.target) else None
    column = _target_column(sweep, names, len(first), source)
    return _build(rows, names, column, source, path.name)[0]


def _read_text(path: Path) -> str:
    try:
        return _decode(path.read_bytes())
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", file=path) from None


def _decode(raw: bytes) -> str:
    """UTF-8 (BOM dropped); Latin-1 otherwise, since numbers are ASCII in either."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _rows(text: str, source: str) -> list[tuple[int, list[str]]]:
    """(line number, stripped cells) of every non-blank record, so errors can point at lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for cells in reader:
            if len(cells) > 1 or (cells and cells[0].strip()):
                rows.append((line, [c.strip() for c in cells]))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"row {line}: {exc}", file=source) from None
    if not rows:
        raise DataError("the file is empty", file=source)
    return rows


def _number(cell: str) -> float | None:
    if cell.lower() in _MISSING:
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def _has_header(first: list[str], target: str | int | None) -> bool:
    """A header row has a non-number in some feature column (labels may be words anyway)."""
    n = len(first)
    if isinstance(target, str) and not _is_int(target):
        if target in first:
            return True  # the target's name is in the first row
        target = None  # an unknown name is reported later; guess the default meanwhile
    column = n - 1 if target is None else int(target)
    return any(cell.lower() not in _MISSING and _number(cell) is None
               for j, cell in enumerate(first) if j != column % n)


def _is_int(text: str) -> bool:
    return re.fullmatch(r"\s*[+-]?\d+\s*", text) is not None


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


def _column(j: int, names: list[str] | None) -> str:
    """1-based, as a spreadsheet shows it, with the header name when there is one."""
    return f"column {j + 1} ('{names[j]}')" if names and names[j] else f"column {j + 1}"


def _build(rows: list[tuple[int, list[str]]], names: list[str] | None, target: int,
           source: str, name: str) -> tuple[Dataset, list[int]]:
    """Check every cell and make the arrays; also return each data row's line number."""
    header_line, first = rows[0]
    n_cols = len(first)
    data = rows[1:] if names is not None else rows
    if not data:
        raise DataError("has a header row but no data rows", file=source)
    features = [j for j in range(n_cols) if j != target]
    if not features:
        raise DataError(f"{_column(target, names)} is the only column, so there are no features "
                        "(is the file comma-separated?)", file=source)
    X = np.empty((len(data), len(features)), dtype=np.float32)
    labels: list[str] = []
    for i, (line, cells) in enumerate(data):
        if len(cells) != n_cols:
            raise DataError(f"row {line}: has {len(cells)} cells, but row {header_line} has "
                            f"{n_cols}", file=source)
        for k, j in enumerate(features):
            cell, where = cells[j], f"row {line}, {_column(j, names)}"
            if cell.lower() in _MISSING:
                raise DataError(f"{where}: missing value", file=source)
            value = _number(cell)
            shown = repr(cell if len(cell) <= 40 else cell[:40] + "...")
            if value is None:
                raise DataError(f"{where}: {shown} is not a number", file=source)
            if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
                raise DataError(f"{where}: {shown} is not a finite number", file=source)
            X[i, k] = value
        if cells[target].lower() in _MISSING:
            raise DataError(f"row {line}, {_column(target, names)}: missing value (the class "
                            "label)", file=source)
        labels.append(cells[target])

    column = (f"column '{names[target]}'" if names and names[target]
              else f"column {target + 1}")
    unique = set(labels)
    numeric = all(_number(label) is not None for label in unique)
    classes = tuple(sorted(unique, key=(lambda s: (float(s), s)) if numeric else None))
    if len(classes) < 2:
        raise DataError(f"{column} (the target) has only one class, '{classes[0]}'; a "
                        "classifier needs at least two", file=source)
    ids = {label: i for i, label in enumerate(classes)}
    y = np.array([ids[label] for label in labels], dtype=np.int64)
    feature_names = tuple(names[j] if names and names[j] else f"column {j + 1}" for j in features)
    return (Dataset(X, y, classes, name, source, feature_names, target=column),
            [line for line, _ in data])
