"""The built-in image sets (Fashion-MNIST, MNIST, CIFAR-10, scikit-learn's digits) and the
user's own arrays (.npz), as arrays with their class names.

Each built-in set is a record in registry.py (its files with their URLs and SHA-256, and its
reader, here); files are found or downloaded by fetch.py and checked by SHA-256 there; here
every file is also checked for the layout it promises (IDX header, tar members, batch shapes, label
range), so a damaged or foreign file is one DataError line naming it, never a traceback or
a silently different experiment. CIFAR-10's batches are Python-serialised dicts: they are
read with an unpickler that builds only plain data and numpy arrays, never arbitrary objects.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle  # only through _Restricted below: plain data and numpy arrays
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dropsweep.data.registry import DIGIT_CLASSES
from dropsweep.errors import DataError


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays field-wise is meaningless
class ImageSet:
    """Images (or table rows) ready for a classifier; class id ``i`` means ``classes[i]``."""

    x_train: np.ndarray  # [n, h, w, c] (uint8 for the built-ins), or [n, features] from an npz
    y_train: np.ndarray  # int64 [n], 0..n_classes-1
    x_test: np.ndarray | None  # the published test split; None when there is none
    y_test: np.ndarray | None
    classes: tuple[str, ...]
    name: str  # "fashion_mnist", ..., or the npz file name
    source: str  # where the arrays were read from
    pixel_max: float | None  # 255 for 8-bit images, 16 for digits; None when unknown

    @property
    def n_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------- the formats

# The shape each IDX file must have (tests shrink these to write tiny files).
IDX_SHAPES: dict[str, tuple[int, ...]] = {
    "train-images-idx3-ubyte.gz": (60000, 28, 28),
    "train-labels-idx1-ubyte.gz": (60000,),
    "t10k-images-idx3-ubyte.gz": (10000, 28, 28),
    "t10k-labels-idx1-ubyte.gz": (10000,),
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = 5  # data_batch_1..5
CIFAR_BATCH_ROWS = 10000  # images per batch, test_batch included
CIFAR_SIDE = 32



# ----------------------------------------------------------------------------- IDX


def read_idx_set(spec: Any, paths: tuple[Path, ...]) -> ImageSet:
    """An IDX set's reader (MNIST, Fashion-MNIST: ``spec`` is its registry record): its four
    files, found and checked by SHA-256 already, in the record's order (train images, train
    labels, test images, test labels)."""
    arrays = [read_idx(_read_bytes(p), str(p), IDX_SHAPES[p.name]) for p in paths]
    x_train, y_train, x_test, y_test = arrays
    for labels, path in ((y_train, paths[1]), (y_test, paths[3])):
        _check_labels(labels, len(spec.classes), str(path))
    return ImageSet(x_train[..., None], y_train.astype(np.int64), x_test[..., None],
                    y_test.astype(np.int64), spec.classes, spec.name, str(paths[0].parent),
                    255.0)


def read_idx(raw: bytes, source: str, expect: tuple[int, ...] | None = None) -> np.ndarray:
    """A gzip-compressed IDX file (LeCun's MNIST format) as a uint8 array.

    Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    each dimension as a big-endian int32, then the data in C order. ``expect`` is the shape
    the file must have; a file of another shape is refused rather than trained on.
    """
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"not a readable gzip file ({exc or type(exc).__name__}); "
                        "delete it to download again", file=source) from None
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DataError("not an IDX file (it does not start with two zero bytes)", file=source)
    if data[2] != 0x08:
        raise DataError(f"IDX type code 0x{data[2]:02x}, expected 0x08 (unsigned bytes)",
                        file=source)
    ndim, header = data[3], 4 + 4 * data[3]
    if len(data) < header:
        raise DataError(f"truncated: the header of {ndim} dimensions needs {header} bytes, "
                        f"the file has {len(data)}", file=source)
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    have, need = len(data) - header, math.prod(shape)
    if have != need:
        problem = "truncated" if have < need else "too long"
        raise DataError(f"{problem}: {have} bytes of data, expected {need} for shape "
                        f"{_shape(shape)}", file=source)
    if expect is not None and shape != tuple(expect):
        raise DataError(f"shape {_shape(shape)}, expected {_shape(expect)}", file=source)
    # A copy: arrays over the bytes would be read-only, which torch.from_numpy warns about.
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in shape) if shape else "scalar"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", file=path) from None


def _check_labels(labels: np.ndarray, n_classes: int, source: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"label {int(labels[i])} at row {i} is not a class "
                        f"(0..{n_classes - 1})", file=source)


# ----------------------------------------------------------------------------- CIFAR-10


class _Restricted(pickle.Unpickler):
    """Builds dicts, lists, bytes, str, ints and numpy arrays only: a crafted file can make
    a plain unpickler call any function (os.system), so every other global is refused."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("builtins", "dict"): dict, ("builtins", "list"): list,
        ("builtins", "bytes"): bytes, ("builtins", "str"): str, ("builtins", "int"): int,
        ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # Python 2's name
        if name == "_reconstruct" and module in ("numpy.core.multiarray",
                                                 "numpy._core.multiarray"):
            return _numpy_reconstruct()  # numpy 1 and 2 spell the module differently
        found = self._ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which dropsweep does "
                                         "not load (only plain data and numpy arrays)")
        return found


def _numpy_reconstruct() -> Any:
    """numpy's array rebuilder, without importing the deprecated ``numpy.core`` on numpy 2."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray
    return multiarray._reconstruct


def restricted_load(raw: bytes, source: str) -> Any:
    """Python-serialised bytes (``encoding="bytes"``, as CIFAR's Python 2 files need) read
    with the restricted unpickler; anything unreadable or refused is one line."""
    try:
        return _Restricted(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"cannot be read: {exc}", file=source) from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes fail in many ways
        raise DataError(f"cannot be read: {type(exc).__name__}: {exc}", file=source) from None


def read_cifar_set(spec: Any, paths: tuple[Path, ...]) -> ImageSet:
    """CIFAR-10's reader (``spec`` is its registry record): the one archive, checked by
    SHA-256 already; the class names are the archive's own."""
    x_train, y_train, x_test, y_test, classes = read_cifar(paths[0])
    return ImageSet(x_train, y_train, x_test, y_test, classes, spec.name, str(paths[0]), 255.0)


def read_cifar(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                    tuple[str, ...]]:
    """(x_train, y_train, x_test, y_test, classes) from ``cifar-10-python.tar.gz``; the
    images as [n, 32, 32, 3] uint8 (the files store each image channel-major)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            meta = _member(tar, path, "batches.meta")
            train = [_member(tar, path, f"data_batch_{i}")
                     for i in range(1, CIFAR_TRAIN_BATCHES + 1)]
            test = _member(tar, path, "test_batch")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"not a readable tar.gz file ({exc or type(exc).__name__}); delete it "
                        "to download again", file=path) from None
    classes = _cifar_classes(meta, f"{path}:{CIFAR_DIR}/batches.meta")
    batches = [_cifar_batch(b, f"{path}:{CIFAR_DIR}/data_batch_{i}", len(classes))
               for i, b in enumerate(train, 1)]
    x_test, y_test = _cifar_batch(test, f"{path}:{CIFAR_DIR}/test_batch", len(classes))
    x_train = np.concatenate([x for x, _ in batches])
    y_train = np.concatenate([y for _, y in batches])
    return x_train, y_train, x_test, y_test, classes


def _member(tar: tarfile.TarFile, path: Path, name: str) -> Any:
    """One batch of the archive, read in memory (nothing is extracted to disk)."""
    full = f"{CIFAR_DIR}/{name}"
    try:
        info = tar.getmember(full)
    except KeyError:
        raise DataError(f"has no member {full}; delete it to download again",
                        file=path) from None
    handle = tar.extractfile(info) if info.isfile() else None
    if handle is None:
        raise DataError(f"member {full} is not a regular file", file=path)
    return restricted_load(handle.read(), f"{path}:{full}")


def _get(batch: Any, key: str) -> Any:
    """A batch's entry: the official files have bytes keys (Python 2 strings)."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    return None


def _cifar_classes(meta: Any, source: str) -> tuple[str, ...]:
    names = _get(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) < 2 or not all(
            isinstance(n, (bytes, str)) for n in names):
        raise DataError("has no list of label_names", file=source)
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def _cifar_batch(batch: Any, source: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict):
        raise DataError(f"holds a {type(batch).__name__}, expected a dict of data and labels",
                        file=source)
    data, labels = _get(batch, "data"), _get(batch, "labels")
    pixels = 3 * CIFAR_SIDE * CIFAR_SIDE
    want = (CIFAR_BATCH_ROWS, pixels)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != want:
        got = (f"{data.dtype} {_shape(data.shape)}" if isinstance(data, np.ndarray)
               else "none" if data is None else type(data).__name__)
        raise DataError(f"data is {got}, expected uint8 {_shape(want)}", file=source)
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise DataError("labels is not a list of integers", file=source)
    if len(labels) != CIFAR_BATCH_ROWS:
        raise DataError(f"has {len(labels)} labels for {CIFAR_BATCH_ROWS} images", file=source)
    y = np.asarray(labels, dtype=np.int64)
    _check_labels(y, n_classes, source)
    x = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y


# ----------------------------------------------------------------------------- digits


def read_digits(spec: Any, paths: tuple[Path, ...]) -> ImageSet:
    """The digits' reader: no files (scikit-learn bundles them)."""
    return load_digits()


def load_digits() -> ImageSet:
    """scikit-learn's bundled 8×8 digits (values 0..16): no download, so always at hand."""
    from sklearn.datasets import load_digits as sklearn_digits  # heavy import: only here

    bunch = sklearn_digits()
    x = bunch.images.astype(np.uint8)[..., None]
    return ImageSet(x, bunch.target.astype(np.int64), None, None, DIGIT_CLASSES, "digits",
                    "scikit-learn (bundled)", 16.0)


# ----------------------------------------------------------------------------- .npz


def load_npz(path: Path) -> ImageSet:
    """The user's own arrays: ``x`` and ``y``, optionally ``x_test`` and ``y_test``.

    ``x`` is [n, h, w] (one channel added), [n, h, w, c], or a table [n, features] (kept as
    it is); ``y`` holds integer or string labels, mapped to ids of sorted class names
    (numerically sorted when every label is a number). Nothing but plain arrays is loaded
    (no Python objects). Messages name the file alone, as a CSV's do: the sweep key that
    named it is said only when there is no such file (dataset.load_dataset).
    """
    path = Path(path).expanduser()
    where = {"file": path}
    if not path.is_file():
        what = "is a directory, not an .npz file" if path.is_dir() else "no such file"
        raise DataError(what, **where)
    arrays, names = _npz_arrays(path, where)
    for name in ("x", "y"):
        if name not in arrays:
            held = ", ".join(sorted(names)) or "nothing"
            raise DataError(f"has no array '{name}' (it holds: {held}); save it with "
                            "np.savez(path, x=..., y=...)", **where)
    if ("x_test" in arrays) != ("y_test" in arrays):
        have, missing = ("x_test", "y_test") if "x_test" in arrays else ("y_test", "x_test")
        raise DataError(f"has array '{have}' but no '{missing}': give both or neither",
                        **where)
    x = _npz_x(arrays["x"], "x", where)
    y = _npz_y(arrays["y"], "y", len(x), where)
    classes = _sorted_classes(y)
    if len(classes) < 2:
        raise DataError(f"array 'y' has only one class, '{classes[0]}'; a classifier needs "
                        "at least two", **where)
    ids = {label: i for i, label in enumerate(classes)}
    x_test = y_test = None
    if "x_test" in arrays:
        x_test = _npz_x(arrays["x_test"], "x_test", where)
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"array 'x_test' has items of shape {_shape(x_test.shape[1:])}, "
                            f"but 'x' has {_shape(x.shape[1:])}", **where)
        names = _npz_y(arrays["y_test"], "y_test", len(x_test), where)
        unknown = [i for i, label in enumerate(names) if label not in ids]
        if unknown:
            raise DataError(f"array 'y_test' holds label '{names[unknown[0]]}' (row "
                            f"{unknown[0]}), which 'y' does not have", **where)
        y_test = np.array([ids[label] for label in names], dtype=np.int64)
    y_train = np.array([ids[label] for label in y], dtype=np.int64)
    pixel_max = 255.0 if x.dtype == np.uint8 and x.ndim == 4 else None
    return ImageSet(x, y_train, x_test, y_test, classes, path.name, str(path), pixel_max)


NPZ_ARRAYS = ("x", "y", "x_test", "y_test")  # the members dropsweep reads; others are ignored


def _npz_arrays(path: Path, where: dict[str, Any]
                ) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """The arrays of :data:`NPZ_ARRAYS` the file holds, read now so that a damaged member is
    reported here, and the names of every array it holds (a message about a missing one
    lists them): a member dropsweep does not use is never read."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(len(np.lib.format.MAGIC_PREFIX))
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", **where) from None
    if start == np.lib.format.MAGIC_PREFIX:
        raise DataError("is a single .npy array, not an .npz archive; save one with "
                        "np.savez(path, x=..., y=...)", **where)
    try:
        archive = zipfile.ZipFile(path)
    except Exception as exc:  # noqa: BLE001 - not a zip, or a forged one
        raise DataError(f"not an .npz file ({_first_line(exc)}); save one with "
                        "np.savez(path, x=..., y=...)", **where) from None
    with archive:
        # numpy's naming: a member "x.npy" is the array "x"
        members = {(m[:-4] if m.endswith(".npy") else m): m for m in archive.namelist()}
        arrays = {name: _npz_member(archive, members[name], where)
                  for name in NPZ_ARRAYS if name in members}
    return arrays, tuple(members)


def _npz_member(archive: zipfile.ZipFile, member: str, where: dict[str, Any]) -> np.ndarray:
    """One member as an array, its header checked before numpy allocates anything: a member
    that is not a .npy array (numpy would hand back its bytes), holds Python objects, or
    declares more (or less) data than the archive holds (numpy would first allocate what
    the header claims, 8 TB for a forged 10⁶×10⁶ header) is one line naming it."""
    what = f"member '{member}'"
    try:
        with archive.open(member) as handle:
            try:
                version = np.lib.format.read_magic(handle)
            except ValueError:
                raise DataError(f"{what} is not a .npy array (it does not start with numpy's "
                                "header); save the file with np.savez", **where) from None
            # format 3.0 differs from 2.0 only in its header's encoding (UTF-8, for the
            # field names of structured arrays, which dropsweep refuses anyway)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
            header = handle.tell()
        if dtype.hasobject:
            raise DataError(f"{what} holds Python objects, which dropsweep does not load; "
                            "save numbers or strings", **where)
        declared = math.prod(shape) * dtype.itemsize
        held = archive.getinfo(member).file_size - header
        if declared != held:
            raise DataError(f"{what} declares {_shape(shape)} {dtype} ({declared} bytes) but "
                            f"holds {held} bytes of data; the file is damaged", **where)
        with archive.open(member) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a forged archive fails in many ways (a bad
        # header, CRC or compression method, an encrypted member, memory)
        raise DataError(f"{what} cannot be read ({_first_line(exc)})", **where) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _npz_x(x: np.ndarray, name: str, where: dict[str, Any]) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise DataError(f"array '{name}' holds {x.dtype} values, not numbers", **where)
    if x.ndim not in (2, 3, 4):
        raise DataError(f"array '{name}' has shape {_shape(x.shape)}; expected [n, features], "
                        "[n, height, width] or [n, height, width, channels]", **where)
    if len(x) == 0:
        raise DataError(f"array '{name}' has no rows", **where)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        at = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise DataError(f"array '{name}' holds {x[at]} at index {list(at)}; every value must "
                        "be a finite number", **where)
    return x[..., None] if x.ndim == 3 else x


def _npz_y(y: np.ndarray, name: str, rows: int, where: dict[str, Any]) -> list[str]:
    """Labels as their names (strings), so integer and string labels are handled alike."""
    if y.ndim != 1:
        raise DataError(f"array '{name}' has shape {_shape(y.shape)}; labels must be 1-d [n]",
                        **where)
    x_name = "x" if name == "y" else "x_test"
    if len(y) != rows:
        raise DataError(f"array '{name}' has {len(y)} labels, but '{x_name}' has {rows} rows",
                        **where)
    kind = y.dtype.kind
    if kind in "iub":
        return [str(v) for v in y.tolist()]
    if kind in "US":
        labels = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                  for v in y.tolist()]
        empty = [i for i, v in enumerate(labels) if not v.strip()]
        if empty:
            raise DataError(f"array '{name}' has an empty label at row {empty[0]}", **where)
        return labels
    if kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if bad.size:
            raise DataError(f"array '{name}' holds {y[bad[0]]} at row {int(bad[0])}; labels "
                            "must be integers or strings", **where)
        return [str(int(v)) for v in y.tolist()]
    raise DataError(f"array '{name}' holds {y.dtype} values; labels must be integers or "
                    "strings", **where)


def _sorted_classes(labels: list[str]) -> tuple[str, ...]:
    """Sorted names; numerically when every label is a number ("2" before "10")."""
    unique = set(labels)
    try:
        return tuple(sorted(unique, key=lambda s: (float(s), s)))
    except ValueError:
        return tuple(sorted(unique))
