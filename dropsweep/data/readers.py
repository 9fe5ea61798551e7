"""The record of rows a classifier trains on (:class:`Dataset`) and the readers that make
one: CSV text checked cell by cell, Sonar checked against its published shape, image arrays
flattened. Where the rows come from (a data set's files, a sweep's data.csv) is not decided
here: the registry (dropsweep.data.registry) and dataset.load_dataset call these readers.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dropsweep.errors import DataError

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




# ----------------------------------------------------------------------------- Sonar


def read_sonar(spec: Any, paths: tuple[Path, ...]) -> Dataset:
    """Sonar's reader (its registry record's): the one file, found and checked by SHA-256
    already, parsed and checked again against the published shape and class counts."""
    path = paths[0]
    return _sonar(_read_text(path), str(path), f"replace it with {spec.files[0].url}")


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


# ----------------------------------------------------------------------------- CSV


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
