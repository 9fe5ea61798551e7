"""The built-in data sets: one :class:`DataSet` record each, in one mapping, :data:`DATASETS`.

A record says all there is to know of a set: its name, its kind (a table or images), its
published files (name, URL, SHA-256: fetched and checked by fetch.py, wherever the copy
comes from), the function that reads them, its class names, an image's shape and whether it
has a test split of its own. ``data.dataset`` in a sweep file takes exactly these names
(sweep/config.py reads them here) and ``dataset.load_dataset`` reads a set through its
record: adding a data set is adding a record.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropsweep.data.fetch import Progress, RemoteFile, fetch
from dropsweep.errors import DataError

if TYPE_CHECKING:
    from dropsweep.data.readers import Dataset

KINDS = ("table", "image")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class Reader:
    """A reader named by its import path (``module:function``) and imported when a set is
    read: naming the sets — a sweep's ``data.dataset``, ``validate --no-data`` — imports no
    numpy (which the readers need), as a family names its engine (``EngineFamily.engine``)."""

    path: str

    def __call__(self, record: DataSet, paths: tuple[Path, ...]) -> Any:
        module, name = self.path.split(":")
        return getattr(importlib.import_module(module), name)(record, paths)


@dataclass(frozen=True)
class DataSet:
    """One built-in data set.

    ``reader(record, paths)`` gets the record and the checked local paths of its ``files``
    (in order) and returns an :class:`~dropsweep.data.images.ImageSet` for an image set, a
    :class:`~dropsweep.data.readers.Dataset` for a table.
    """

    name: str
    kind: str  # "table" or "image"
    files: tuple[RemoteFile, ...]  # none for a set bundled with a library (digits)
    reader: Reader
    classes: tuple[str, ...] | None  # None: the files name them (CIFAR-10)
    image_shape: tuple[int, int, int] | None = None  # (height, width, channels) of an image
    official_test: bool = False  # a test split of its own (eval.test's "official")
    about: str = ""  # a few words for a reader of this table


# ----------------------------------------------------------------------------- the files

# Sonar (Gorman & Sejnowski's UCI set) as Brownlee's article reads it: the copy in his
# Datasets repository (87,775 bytes, no final newline), which is the file the test suite
# reads ($DROPSWEEP_DATA_DIR/sonar.csv: `sha256sum sonar.csv` gave this digest). UCI's own
# sonar.all-data holds the same rows but other bytes (87,785 in a mirror), so it is not the
# URL here: a download would fail its checksum. In $DROPSWEEP_DATA_DIR the file may also
# be named sonar.all-data; it must be these bytes either way.
SONAR = RemoteFile("sonar.csv",
                   "https://raw.githubusercontent.com/jbrownlee/Datasets/master/sonar.csv",
                   "3079c09b5d2789a0f96aff82c28e5164fafe2495c5f8da96c6c256c1bd25763f",
                   87775, also=("sonar.all-data",))

# Fashion-MNIST: URLs, sizes and SHA-256 from TensorFlow Datasets,
# tensorflow_datasets/url_checksums/fashion_mnist.txt (the same digests are in
# zalandoresearch/fashion-mnist users' checksum lists).
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION = {
    "train-images-idx3-ubyte.gz":
        (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "train-labels-idx1-ubyte.gz":
        (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "t10k-images-idx3-ubyte.gz":
        (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "t10k-labels-idx1-ubyte.gz":
        (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}
# MNIST: the CVDF mirror TensorFlow Datasets uses; URLs, sizes and SHA-256 from
# tensorflow_datasets/url_checksums/mnist.txt.
_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_MNIST = {
    "train-images-idx3-ubyte.gz":
        (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz":
        (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz":
        (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz":
        (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
# CIFAR-10 (python version): SHA-256 from Keras, keras/src/datasets/cifar10.py (file_hash);
# the size, 170,498,071 bytes, is the one published copies report.
CIFAR10 = RemoteFile("cifar-10-python.tar.gz",
                     "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                     170498071)


def _idx_files(folder: str, base: str, table: dict[str, tuple[int, str]]
               ) -> tuple[RemoteFile, ...]:
    """MNIST and Fashion-MNIST publish files of the same names, so each set has a folder."""
    return tuple(RemoteFile(f"{folder}/{name}", base + name, sha, size)
                 for name, (size, sha) in table.items())


# ----------------------------------------------------------------------------- the records

DATASETS: dict[str, DataSet] = {record.name: record for record in (
    DataSet("sonar", "table", (SONAR,), Reader("dropsweep.data.readers:read_sonar"), ("M", "R"),
            about="Sonar (a table): 208 returns, 60 band energies, mines and rocks"),
    DataSet("digits", "image", (), Reader("dropsweep.data.images:read_digits"), DIGIT_CLASSES,
            (8, 8, 1),
            about="scikit-learn's bundled 8x8 digits (works offline)"),
    DataSet("fashion_mnist", "image", _idx_files("fashion_mnist", _FASHION_URL, _FASHION),
            Reader("dropsweep.data.images:read_idx_set"), FASHION_CLASSES, (28, 28, 1),
            official_test=True,
            about="Zalando's Fashion-MNIST, read from its official files"),
    DataSet("mnist", "image", _idx_files("mnist", _MNIST_URL, _MNIST),
            Reader("dropsweep.data.images:read_idx_set"), DIGIT_CLASSES, (28, 28, 1),
            official_test=True,
            about="LeCun's MNIST, read from its official files (CVDF's mirror)"),
    DataSet("cifar10", "image", (CIFAR10,), Reader("dropsweep.data.images:read_cifar_set"),
            None, (32, 32, 3),
            official_test=True, about="CIFAR-10, the python version"),
)}


# ----------------------------------------------------------------------------- reading


def read(record: DataSet, progress: Progress | None = None) -> Any:
    """What ``record``'s reader makes of its files, each found or downloaded (and checked)
    first; ``progress`` is called with (bytes so far, total) while a file downloads."""
    paths = tuple(fetch(remote, record.name, progress) for remote in record.files)
    return record.reader(record, paths)


def load_built_in(record: DataSet, progress: Progress | None = None) -> Dataset:
    """A built-in set's rows (an image set's images flattened)."""
    from dropsweep.data.readers import from_images

    got = read(record, progress)
    return from_images(got) if record.kind == "image" else got


def load_image_set(name: str, progress: Progress | None = None) -> Any:
    """A built-in image set by name, as images (an :class:`~dropsweep.data.images.ImageSet`:
    not imported here, which images.py imports for the class names)."""
    record = DATASETS.get(name)
    if record is None or record.kind != "image":
        known = ", ".join(n for n, r in DATASETS.items() if r.kind == "image")
        raise DataError(f"unknown image set '{name}'; known: {known}")
    return read(record, progress)
