"""dropsweep.data.fetch and dropsweep.data.images: finding, downloading and checking data files; the
IDX, CIFAR-10 and .npz readers. Every file is a tiny one written here in the official
format; nothing touches the network."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest

from dropsweep.data import dataset as data

from dropsweep.data import fetch

from dropsweep.data import images, registry
from dropsweep.errors import DataError
from dropsweep.data.fetch import RemoteFile, cache_dir


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("DROPSWEEP_DATA_DIR", str(d))
    return d


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def refuse(url: str, out: BinaryIO, timeout: float, progress: Any) -> None:
        calls.append(url)
        raise AssertionError("unexpected download")

    monkeypatch.setattr(fetch, "_stream", refuse)
    return calls


def fake_server(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]) -> list[str]:
    """Serve ``files`` by URL in 3-byte chunks, reporting progress as urllib would."""
    calls: list[str] = []

    def serve(url: str, out: BinaryIO, timeout: float, progress: Any) -> None:
        calls.append(url)
        raw = files[url]
        for i in range(0, len(raw), 3):
            out.write(raw[i:i + 3])
            if progress:
                progress(min(i + 3, len(raw)), None)  # no Content-Length: the size is used

    monkeypatch.setattr(fetch, "_stream", serve)
    return calls


# ----------------------------------------------------------------------------- fetch

PAYLOAD = b"the published bytes\n" * 5
REMOTE = RemoteFile("set/file.bin", "https://example.org/file.bin", sha(PAYLOAD), len(PAYLOAD))


def test_fetch_prefers_data_dir_then_cache(data_dir: Path, no_network: list[str]) -> None:
    cached = cache_dir() / "datasets" / "set" / "file.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD)
    assert fetch.fetch(REMOTE, "demo") == cached
    (data_dir / "set").mkdir()
    (data_dir / "set" / "file.bin").write_bytes(PAYLOAD)
    assert fetch.fetch(REMOTE, "demo") == data_dir / "set" / "file.bin"
    assert not no_network


def test_download_is_verified_stored_atomically_and_used_once(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_server(monkeypatch, {REMOTE.url: PAYLOAD})
    seen: list[tuple[int, int | None]] = []
    path = fetch.fetch(REMOTE, "demo", progress=lambda done, total: seen.append((done, total)))
    assert path == cache_dir() / "datasets" / "set" / "file.bin"
    assert path.read_bytes() == PAYLOAD and calls == [REMOTE.url]
    assert os.listdir(path.parent) == ["file.bin"]  # no temp file left behind
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) > 5
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert fetch.fetch(REMOTE, "demo") == path and calls == [REMOTE.url]  # from the cache


def test_a_wrong_download_is_refused_and_not_kept(data_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake_server(monkeypatch, {REMOTE.url: b"<html>moved</html>"})
    with pytest.raises(DataError) as exc:
        fetch.fetch(REMOTE, "demo")
    text = one_line(exc)
    assert text.startswith(f"{REMOTE.url}: the download is not the published file.bin")
    assert f"expected {REMOTE.sha256[:12]}..." in text
    assert f"save {REMOTE.url} as {data_dir / 'set' / 'file.bin'}" in text
    assert os.listdir(cache_dir() / "datasets" / "set") == []


def test_a_download_cut_short_leaves_no_half_file(data_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def cut(url: str, out: BinaryIO, timeout: float, progress: Any) -> None:
        out.write(PAYLOAD[:10])
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(fetch, "_stream", cut)
    with pytest.raises(DataError, match="download failed .connection reset by peer"):
        fetch.fetch(REMOTE, "demo")
    assert os.listdir(cache_dir() / "datasets" / "set") == []


@pytest.mark.parametrize("use_data_dir", [True, False])
def test_offline_names_the_url_the_file_and_where_to_save_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_data_dir: bool) -> None:
    if use_data_dir:
        place = tmp_path / "data"
        place.mkdir()
        monkeypatch.setenv("DROPSWEEP_DATA_DIR", str(place))
    else:
        monkeypatch.delenv("DROPSWEEP_DATA_DIR")
        place = cache_dir() / "datasets"

    def offline(url: str, out: BinaryIO, timeout: float, progress: Any) -> None:
        raise TimeoutError("timed out")

    monkeypatch.setattr(fetch, "_stream", offline)
    with pytest.raises(DataError) as exc:
        fetch.fetch(REMOTE, "demo")
    text = one_line(exc)
    assert text.startswith("demo: file.bin is not in ")
    assert ("$DROPSWEEP_DATA_DIR" in text) == use_data_dir
    assert "no answer within 30 s" in text
    assert text.endswith(f"save {REMOTE.url} as {place / 'set' / 'file.bin'}")


def test_checksum_mismatch_says_delete_for_the_cache_and_replace_for_data_dir(
        data_dir: Path, no_network: list[str]) -> None:
    cached = cache_dir() / "datasets" / "set" / "file.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD[:-1])
    with pytest.raises(DataError) as exc:
        fetch.fetch(REMOTE, "demo")
    text = one_line(exc)
    assert text == (f"{cached}: not the published file.bin: its SHA-256 is "
                    f"{sha(PAYLOAD[:-1])[:12]}..., expected {REMOTE.sha256[:12]}...; "
                    "delete it to download again")
    mine = data_dir / "set" / "file.bin"
    mine.parent.mkdir()
    mine.write_bytes(b"edited")
    with pytest.raises(DataError) as exc:
        fetch.fetch(REMOTE, "demo")
    assert one_line(exc).startswith(f"{mine}: not the published file.bin")
    assert str(exc.value).endswith(f"replace it with {REMOTE.url}")
    assert not no_network  # a wrong local copy is an error, not a reason to download


def test_the_real_stream_reads_in_chunks_with_the_total(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "served.bin"
    source.write_bytes(bytes(range(256)) * 40)
    monkeypatch.setattr(fetch, "_CHUNK", 1000)
    seen: list[tuple[int, int | None]] = []
    out = io.BytesIO()
    fetch._stream(source.as_uri(), out, 5.0, lambda done, total: seen.append((done, total)))
    assert out.getvalue() == source.read_bytes()
    assert seen[0] == (0, 10240) and seen[-1] == (10240, 10240) and len(seen) == 12


def test_sonar_still_downloads_through_the_shared_stream(
        sonar_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = (sonar_dir / "sonar.csv").read_bytes()
    monkeypatch.setenv("DROPSWEEP_DATA_DIR", str(tmp_path))
    calls = fake_server(monkeypatch, {registry.SONAR.url: raw})
    assert data.load_sonar().source == str(cache_dir() / "datasets" / "sonar.csv")
    assert calls == [registry.SONAR.url] and data.cache_dir is fetch.cache_dir


# ----------------------------------------------------------------------------- IDX


def idx(array: np.ndarray) -> bytes:
    """``array`` as a gzip-compressed IDX file: 0, 0, type 0x08, ndim, big-endian dims."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gz(header + array.astype(np.uint8).tobytes())


def gz(data: bytes) -> bytes:
    """``data`` gzip-compressed with a fixed time stamp: the same bytes in every process (the
    test ids of a parallel run must agree)."""
    return gzip.compress(data, mtime=0)


def test_read_idx_round_trip() -> None:
    images_ = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    got = images.read_idx(idx(images_), "f.gz", expect=(2, 3, 4))
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, images_)
    assert got[1, 2, 3] == 23  # C order: the last pixel of the second image
    np.testing.assert_array_equal(images.read_idx(idx(np.array([7, 0, 9])), "l.gz"), [7, 0, 9])


@pytest.mark.parametrize("raw, message", [
    (gz(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]) + bytes(20)),
     "truncated: 20 bytes of data, expected 24 for shape 2×3×4"),
    (gz(bytes([0, 0, 8, 1, 0, 0, 0, 2]) + bytes(3)),
     "too long: 3 bytes of data, expected 2 for shape 2"),
    (gz(bytes([0, 0, 8, 3, 0, 0, 0])), "truncated: the header of 3 dimensions"),
    (gz(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + bytes(4)),
     "IDX type code 0x0d, expected 0x08"),
    (gz(b"<html>not found</html>"), "not an IDX file"),
    (b"\x1f\x8b\x08\x00garbage", "not a readable gzip file"),
    (b"plain text", "not a readable gzip file"),
    (idx(np.zeros((2, 3, 4)))[:-6], "not a readable gzip file"),  # a cut-off download
], ids=lambda value: value if isinstance(value, str) else None)
def test_read_idx_refuses_damaged_files(raw: bytes, message: str) -> None:
    with pytest.raises(DataError) as exc:
        images.read_idx(raw, "/x/train-images-idx3-ubyte.gz")
    text = one_line(exc)
    assert text.startswith("/x/train-images-idx3-ubyte.gz: ") and message in text


def test_read_idx_refuses_the_wrong_shape() -> None:
    with pytest.raises(DataError) as exc:
        images.read_idx(idx(np.zeros((5, 28, 28))), "t.gz", expect=(60000, 28, 28))
    assert one_line(exc) == "t.gz: shape 5×28×28, expected 60000×28×28"


def write_idx_set(monkeypatch: pytest.MonkeyPatch, data_dir: Path, name: str,
                  n: tuple[int, int]) -> dict[str, np.ndarray]:
    """A tiny copy of an IDX set in $DROPSWEEP_DATA_DIR/<name>/, its digests recorded."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (n[0], 5, 4)),
              "train-labels-idx1-ubyte.gz": np.arange(n[0]) % 10,
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n[1], 5, 4)),
              "t10k-labels-idx1-ubyte.gz": (np.arange(n[1]) * 3) % 10}
    (data_dir / name).mkdir()
    for file, array in arrays.items():
        raw = idx(array)
        (data_dir / name / file).write_bytes(raw)
        record_digest(monkeypatch, name, file, raw)
        monkeypatch.setitem(images.IDX_SHAPES, file, array.shape)
    return arrays


def record_digest(monkeypatch: pytest.MonkeyPatch, name: str, file: str, raw: bytes) -> None:
    """Make ``raw`` the published ``file`` of the registry's set ``name``, for this test."""
    record = registry.DATASETS[name]
    files = tuple(replace(f, sha256=sha(raw), size=len(raw)) if f.name.endswith("/" + file)
                  or f.name == file else f for f in record.files)
    monkeypatch.setitem(registry.DATASETS, name, replace(record, files=files))


@pytest.mark.parametrize("name, classes", [
    ("fashion_mnist", registry.FASHION_CLASSES),
    ("mnist", tuple("0123456789")),
])
def test_an_idx_set_from_data_dir(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                  no_network: list[str], name: str,
                                  classes: tuple[str, ...]) -> None:
    arrays = write_idx_set(monkeypatch, data_dir, name, (12, 6))
    got = registry.load_image_set(name)
    assert got.x_train.shape == (12, 5, 4, 1) and got.x_test.shape == (6, 5, 4, 1)
    assert got.x_train.dtype == np.uint8 and got.y_train.dtype == np.int64
    np.testing.assert_array_equal(got.x_train[..., 0], arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(got.y_test, arrays["t10k-labels-idx1-ubyte.gz"])
    assert got.classes == classes and got.pixel_max == 255 and got.name == name
    assert got.source == str(data_dir / name) and not no_network
    assert registry.FASHION_CLASSES[:2] == ("T-shirt/top", "Trouser")


def test_an_idx_set_with_a_wrong_shape_names_the_file(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str]) -> None:
    write_idx_set(monkeypatch, data_dir, "mnist", (12, 6))
    monkeypatch.setitem(images.IDX_SHAPES, "t10k-labels-idx1-ubyte.gz", (7,))
    with pytest.raises(DataError) as exc:
        registry.load_image_set("mnist")
    labels = data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert one_line(exc) == f"{labels}: shape 6, expected 7"


def test_an_idx_label_out_of_range_is_refused(data_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx_set(monkeypatch, data_dir, "mnist", (12, 6))
    raw = idx(np.array([1, 2, 12, 0, 0, 0]))
    (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(raw)
    record_digest(monkeypatch, "mnist", "t10k-labels-idx1-ubyte.gz", raw)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: label 12 at row 2 is not "
                                        r"a class \(0..9\)"):
        registry.load_image_set("mnist")


def test_an_idx_set_is_downloaded_into_its_own_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    arrays = write_idx_set(monkeypatch, staging, "fashion_mnist", (4, 2))
    monkeypatch.setenv("DROPSWEEP_DATA_DIR", str(tmp_path / "empty"))
    served = {registry._FASHION_URL + f: (staging / "fashion_mnist" / f).read_bytes()
              for f in arrays}
    calls = fake_server(monkeypatch, served)
    got = registry.load_image_set("fashion_mnist")
    folder = cache_dir() / "datasets" / "fashion_mnist"
    assert sorted(calls) == sorted(served) and sorted(os.listdir(folder)) == sorted(arrays)
    assert got.source == str(folder) and got.x_train.shape == (4, 5, 4, 1)
    registry.load_image_set("fashion_mnist")
    assert len(calls) == 4


# ----------------------------------------------------------------------------- CIFAR-10

LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
               b"ship", b"truck"]


def serialise(obj: Any, numpy_module: str = "numpy.core.multiarray") -> bytes:
    """As CIFAR's files are: bytes keys and values (protocol 3's BINBYTES, what Python 2
    strings read as with encoding="bytes"), arrays rebuilt by ``<numpy_module>._reconstruct``
    (numpy 1's spelling in the official files; numpy 2 writes ``numpy._core``)."""
    raw = pickle.dumps(obj, protocol=3)
    for spelling in (b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"):
        raw = raw.replace(spelling + b"_reconstruct", numpy_module.encode() + b"\n_reconstruct")
    return raw


def batch(rows: int, seed: int) -> dict[bytes, Any]:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch",
            b"labels": [int(v) for v in rng.integers(0, 10, rows)],
            b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(rows)]}


def cifar_tar(path: Path, members: dict[str, bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path.read_bytes()


@pytest.fixture
def tiny_cifar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "CIFAR_TRAIN_BATCHES", 2)
    monkeypatch.setattr(images, "CIFAR_BATCH_ROWS", 3)


def cifar_members(numpy_module: str = "numpy.core.multiarray") -> dict[str, bytes]:
    return {"batches.meta": serialise({b"label_names": LABEL_NAMES, b"num_cases_per_batch": 3}),
            "data_batch_1": serialise(batch(3, 1), numpy_module),
            "data_batch_2": serialise(batch(3, 2), numpy_module),
            "test_batch": serialise(batch(3, 3), numpy_module),
            "readme.html": b"<html></html>"}


@pytest.mark.parametrize("numpy_module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_cifar_round_trip_puts_each_channel_last(tmp_path: Path, tiny_cifar: None,
                                                 numpy_module: str) -> None:
    path = tmp_path / "cifar-10-python.tar.gz"
    cifar_tar(path, cifar_members(numpy_module))
    x_train, y_train, x_test, y_test, classes = images.read_cifar(path)
    assert classes[0] == "airplane" and classes[9] == "truck" and len(classes) == 10
    assert x_train.shape == (6, 32, 32, 3) and x_test.shape == (3, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    second = batch(3, 2)
    flat = second[b"data"][1]  # the second image of data_batch_2 is row 4 of x_train
    assert x_train[4, 0, 0].tolist() == [flat[0], flat[1024], flat[2048]]  # R, G, B
    assert x_train[4, 5, 7, 2] == flat[2048 + 5 * 32 + 7]  # blue, row 5, column 7
    np.testing.assert_array_equal(x_train[4].transpose(2, 0, 1).reshape(-1), flat)
    assert y_train.tolist() == batch(3, 1)[b"labels"] + second[b"labels"]
    assert y_test.tolist() == batch(3, 3)[b"labels"]


def test_cifar_from_data_dir(data_dir: Path, tiny_cifar: None, no_network: list[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    raw = cifar_tar(data_dir / "cifar-10-python.tar.gz", cifar_members())
    record_digest(monkeypatch, "cifar10", "cifar-10-python.tar.gz", raw)
    got = registry.load_image_set("cifar10")
    assert got.x_train.shape == (6, 32, 32, 3) and got.pixel_max == 255 and got.name == "cifar10"
    assert got.source == str(data_dir / "cifar-10-python.tar.gz") and got.classes[3] == "cat"
    assert not no_network


def _without(name: str) -> dict[str, bytes]:
    members = cifar_members()
    del members[name]
    return members


def _with(name: str, obj: Any) -> dict[str, bytes]:
    return {**cifar_members(), name: serialise(obj)}


def _narrow() -> dict[bytes, Any]:
    b = batch(3, 1)
    b[b"data"] = b[b"data"][:, :1024]
    return b


def _short_labels() -> dict[bytes, Any]:
    b = batch(3, 1)
    b[b"labels"] = b[b"labels"][:2]
    return b


def _big_label() -> dict[bytes, Any]:
    b = batch(3, 1)
    b[b"labels"][1] = 10
    return b


@pytest.mark.parametrize("members, where, message", [
    (_without("data_batch_2"), "", "has no member cifar-10-batches-py/data_batch_2"),
    (_without("batches.meta"), "", "has no member cifar-10-batches-py/batches.meta"),
    (_with("data_batch_1", _narrow()), ":cifar-10-batches-py/data_batch_1",
     "data is uint8 3×1024, expected uint8 3×3072"),
    (_with("data_batch_1", batch(4, 1)), ":cifar-10-batches-py/data_batch_1",
     "data is uint8 4×3072, expected uint8 3×3072"),
    (_with("test_batch", _short_labels()), ":cifar-10-batches-py/test_batch",
     "has 2 labels for 3 images"),
    (_with("data_batch_1", _big_label()), ":cifar-10-batches-py/data_batch_1",
     "label 10 at row 1 is not a class (0..9)"),
    (_with("data_batch_1", [1, 2]), ":cifar-10-batches-py/data_batch_1",
     "holds a list, expected a dict"),
    (_with("batches.meta", {b"label_names": "x"}), ":cifar-10-batches-py/batches.meta",
     "has no list of label_names"),
    ({**cifar_members(), "data_batch_2": b"\x80\x03}q\x00(X"},
     ":cifar-10-batches-py/data_batch_2", "cannot be read"),
])
def test_a_damaged_cifar_archive_is_one_line(tmp_path: Path, tiny_cifar: None,
                                             members: dict[str, bytes], where: str,
                                             message: str) -> None:
    path = tmp_path / "cifar-10-python.tar.gz"
    cifar_tar(path, members)
    with pytest.raises(DataError) as exc:
        images.read_cifar(path)
    text = one_line(exc)
    assert text.startswith(f"{path}{where}: ") and message in text, text


def test_a_cut_off_cifar_archive_is_one_line(tmp_path: Path, tiny_cifar: None) -> None:
    path = tmp_path / "cifar-10-python.tar.gz"
    raw = cifar_tar(path, cifar_members())
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as exc:
        images.read_cifar(path)
    assert one_line(exc).startswith(f"{path}: not a readable tar.gz file")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_the_restricted_unpickler_refuses_a_function_call(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    raw = pickle.dumps({b"data": _Payload(marker)})
    assert b"system" in raw
    with pytest.raises(DataError) as exc:
        images.restricted_load(raw, "evil")
    text = one_line(exc)
    assert text.startswith("evil: cannot be read: it refers to ")
    assert ".system, which dropsweep does not load" in text
    assert not marker.exists()


def test_an_archive_with_a_function_call_is_refused(tmp_path: Path, tiny_cifar: None) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "cifar-10-python.tar.gz"
    cifar_tar(path, {**cifar_members(), "test_batch": pickle.dumps(_Payload(marker))})
    with pytest.raises(DataError) as exc:
        images.read_cifar(path)
    assert one_line(exc).startswith(f"{path}:cifar-10-batches-py/test_batch: cannot be read: "
                                    "it refers to ")
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("numpy", "load"),
                                          ("subprocess", "Popen"), ("__builtin__", "getattr")])
def test_only_plain_data_and_numpy_arrays_are_allowed(module: str, name: str) -> None:
    raw = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"q\x00."
    with pytest.raises(DataError, match=f"refers to {module.replace('__builtin__', 'builtins')}"
                                        f".{name}"):
        images.restricted_load(raw, "x")


# ----------------------------------------------------------------------------- digits and names


def test_digits_are_sklearns_bundled_images(no_network: list[str]) -> None:
    got = registry.load_image_set("digits")
    assert got.x_train.shape == (1797, 8, 8, 1) and got.x_train.dtype == np.uint8
    assert got.x_train.max() == 16 and got.pixel_max == 16
    assert got.classes == tuple("0123456789") and got.n_classes == 10
    assert got.x_test is None and got.y_test is None
    assert got.y_train.dtype == np.int64 and np.bincount(got.y_train).min() > 170
    assert got.source == "scikit-learn (bundled)" and not no_network


def test_an_unknown_set_lists_the_known_ones() -> None:
    with pytest.raises(DataError) as exc:
        registry.load_image_set("svhn")
    assert one_line(exc) == "unknown image set 'svhn'; known: digits, fashion_mnist, mnist, cifar10"


# ----------------------------------------------------------------------------- .npz


def npz(tmp_path: Path, **arrays: Any) -> Path:
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    return path


def test_npz_images_get_a_channel_and_labels_sorted_numerically(tmp_path: Path) -> None:
    x = np.arange(4 * 3 * 2, dtype=np.uint8).reshape(4, 3, 2)
    path = npz(tmp_path, x=x, y=np.array([10, 2, 10, 9]),
               x_test=x[:2], y_test=np.array([9, 2]))
    got = images.load_npz(path)
    assert got.x_train.shape == (4, 3, 2, 1) and got.pixel_max == 255
    np.testing.assert_array_equal(got.x_train[..., 0], x)
    assert got.classes == ("2", "9", "10") and got.y_train.tolist() == [2, 0, 2, 1]
    assert got.y_test.tolist() == [1, 0] and got.x_test.shape == (2, 3, 2, 1)
    assert got.name == "mine.npz" and got.source == str(path)


def test_npz_string_labels_and_a_float_table(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    got = images.load_npz(npz(tmp_path, x=x, y=np.array(["dog", "cat", "ant", "dog", "cat"])))
    assert got.x_train.shape == (5, 7) and got.x_train.dtype == np.float32
    assert got.pixel_max is None and got.x_test is None
    assert got.classes == ("ant", "cat", "dog") and got.y_train.tolist() == [2, 1, 0, 2, 1]


def test_npz_four_dim_floats_keep_their_channels(tmp_path: Path) -> None:
    got = images.load_npz(npz(tmp_path, x=np.zeros((2, 4, 4, 3)), y=np.array([0.0, 1.0])))
    assert got.x_train.shape == (2, 4, 4, 3) and got.pixel_max is None
    assert got.classes == ("0", "1")


X = np.zeros((3, 4, 4), np.uint8)
Y = np.array([0, 1, 0])


def _nan() -> np.ndarray:
    x = np.zeros((3, 2))
    x[1, 1] = np.nan
    return x


@pytest.mark.parametrize("arrays, message", [
    ({"x": X}, "has no array 'y' (it holds: x)"),
    ({"y": Y}, "has no array 'x' (it holds: y)"),
    ({"x": X, "y": Y[:2]}, "array 'y' has 2 labels, but 'x' has 3 rows"),
    ({"x": np.array([["a", "b"]] * 3), "y": Y}, "array 'x' holds <U1 values, not numbers"),
    ({"x": np.zeros((3, 2), complex), "y": Y}, "array 'x' holds complex128 values"),
    ({"x": _nan(), "y": Y}, "array 'x' holds nan at index [1, 1]; every value must be a finite"),
    ({"x": np.full((3, 2), np.inf, np.float32), "y": Y}, "array 'x' holds inf at index [0, 0]"),
    ({"x": np.zeros(3), "y": Y}, "array 'x' has shape 3; expected [n, features]"),
    ({"x": np.zeros((0, 2)), "y": np.array([], int)}, "array 'x' has no rows"),
    ({"x": X, "y": Y[:, None]}, "array 'y' has shape 3×1; labels must be 1-d"),
    ({"x": X, "y": np.array([0.5, 1, 0])}, "array 'y' holds 0.5 at row 0; labels must be"),
    ({"x": X, "y": np.array([{}, 1, 2], dtype=object)},
     "member 'y.npy' holds Python objects, which dropsweep does not load"),
    ({"x": X, "y": Y, "x_test": X}, "has array 'x_test' but no 'y_test'"),
    ({"x": X, "y": Y, "y_test": Y}, "has array 'y_test' but no 'x_test'"),
    ({"x": X, "y": Y, "x_test": X[:2], "y_test": np.array([1, 2])},
     "array 'y_test' holds label '2' (row 1), which 'y' does not have"),
    ({"x": X, "y": Y, "x_test": np.zeros((2, 4, 5)), "y_test": Y[:2]},
     "array 'x_test' has items of shape 4×5×1, but 'x' has 4×4×1"),
    ({"x": X, "y": Y, "x_test": X, "y_test": Y[:1]},
     "array 'y_test' has 1 labels, but 'x_test' has 3 rows"),
    ({"x": X, "y": np.array([4, 4, 4])}, "array 'y' has only one class, '4'"),
    ({"x": X, "y": np.array(["a", " ", "b"])}, "array 'y' has an empty label at row 1"),
])
def test_every_npz_mistake_is_one_line_naming_file_and_array(
        tmp_path: Path, arrays: dict[str, Any], message: str) -> None:
    path = npz(tmp_path, **arrays)
    with pytest.raises(DataError) as exc:
        images.load_npz(path)
    text = one_line(exc)
    assert text.startswith(f"{path}: ") and message in text, text
    assert "data.npz" not in text  # the file once, not the file and the sweep key


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory, not an .npz file"),
    (lambda p: p.write_text("x,y\n1,2\n"), "not an .npz file"),
    (lambda p: p.write_bytes(b""), "not an .npz file"),
    (lambda p: np.save(open(p, "wb"), np.zeros(3)), "is a single .npy array, not an .npz"),
])
def test_npz_that_is_not_one(tmp_path: Path, make: Any, message: str) -> None:
    path = tmp_path / "mine.npz"
    make(path)
    with pytest.raises(DataError) as exc:
        images.load_npz(path)
    text = one_line(exc)
    assert text.startswith(f"{path}: {message}"), text


def test_a_cut_off_npz_is_one_line(tmp_path: Path) -> None:
    path = npz(tmp_path, x=np.zeros((50, 20)), y=np.arange(50) % 2)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as exc:
        images.load_npz(path)
    assert one_line(exc).startswith(f"{path}: ")


# ----------------------------------------------------------------------------- hostile .npz members

from helpers import SUITE  # noqa: E402


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """A .npy header alone (format 1.0): what a file claims before any data."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    """An archive of exactly these members, stored as given."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in members.items():
            archive.writestr(name, raw)
    return path


def _encrypted(path: Path) -> Path:
    """A real npz whose first member says it is encrypted (zipfile writes no such flag: the
    flag bit is set in the member's local header and its central directory entry)."""
    raw = bytearray(_zip(path, {"x.npy": _npy(np.zeros((20, 3))), "y.npy": GOOD_Y}
                         ).read_bytes())
    raw[6] |= 0x1  # general purpose flags of the first local header
    raw[raw.index(b"PK\x01\x02") + 8] |= 0x1  # ... and of its central directory entry
    path.write_bytes(bytes(raw))
    return path


def _crc_damaged(path: Path) -> Path:
    """A real npz with one byte of x's data changed: the zip's CRC no longer matches."""
    raw = bytearray(_zip(path, {"x.npy": _npy(np.arange(60, dtype=np.uint8).reshape(20, 3)),
                                "y.npy": _npy(np.arange(20) % 2)}).read_bytes())
    at = raw.index(_npy(np.arange(60, dtype=np.uint8).reshape(20, 3))[-10:])
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


GOOD_Y = _npy(np.arange(20) % 2)
HOSTILE_MEMBERS = [
    # a raw pickle stored as a member (numpy hands back its bytes: a traceback before)
    ("pickle", lambda p: _zip(p, {"x.npy": pickle.dumps({"x": [1, 2]}), "y.npy": GOOD_Y}),
     "member 'x.npy' is not a .npy array"),
    ("garbage", lambda p: _zip(p, {"x.npy": b"not numpy at all" * 4, "y.npy": GOOD_Y}),
     "member 'x.npy' is not a .npy array"),
    # a header claiming 10^6 x 10^6 doubles (numpy tried to allocate 7 TiB: a traceback)
    ("huge", lambda p: _zip(p, {"x.npy": _header((10**6, 10**6)) + bytes(100),
                                "y.npy": GOOD_Y}),
     "member 'x.npy' declares 1000000×1000000 float64 (8000000000000 bytes) but holds 100"),
    # a shape that could be allocated (800 MB) but that the file does not hold: refused
    # before any memory is given to it
    ("declared", lambda p: _zip(p, {"x.npy": _header((10**4, 10**4)) + bytes(8),
                                    "y.npy": GOOD_Y}),
     "member 'x.npy' declares 10000×10000 float64 (800000000 bytes) but holds 8"),
    ("truncated", lambda p: _zip(p, {"x.npy": _npy(np.zeros((20, 3)))[:-16],
                                     "y.npy": GOOD_Y}),
     "member 'x.npy' declares 20×3 float64 (480 bytes) but holds 464"),
    ("objects", lambda p: _zip(p, {"x.npy": _header((3,), "|O") + pickle.dumps([1, 2, 3]),
                                   "y.npy": GOOD_Y}),
     "member 'x.npy' holds Python objects, which dropsweep does not load"),
    ("not-an-npz", lambda p: _zip(p, {"README.txt": b"hello"}),
     "has no array 'x' (it holds: README.txt)"),
    ("bad-header", lambda p: _zip(p, {"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}  \n",
                                      "y.npy": GOOD_Y}),
     "member 'x.npy' cannot be read"),
    ("encrypted", _encrypted, "member 'x.npy' cannot be read"),
    ("crc", _crc_damaged, "member 'x.npy' cannot be read"),
]


@pytest.mark.parametrize("make, message", [m[1:] for m in HOSTILE_MEMBERS],
                         ids=[m[0] for m in HOSTILE_MEMBERS])
def test_a_hostile_npz_member_is_one_line_naming_file_and_member(
        tmp_path: Path, make: Any, message: str) -> None:
    SUITE["hostile data files"] += 1
    path = make(tmp_path / "mine.npz")
    with pytest.raises(DataError) as exc:
        images.load_npz(path)
    text = one_line(exc)
    assert text.startswith(f"{path}: ") and message in text, text
    assert text.count("mine.npz") == 1, text


def test_a_member_dropsweep_does_not_use_is_not_read(tmp_path: Path) -> None:
    """Only x, y, x_test and y_test are read: a stray member (a pickle, notes) is ignored."""
    path = _zip(tmp_path / "mine.npz", {"x.npy": _npy(np.zeros((4, 3))),
                                        "y.npy": _npy(np.array([0, 1, 0, 1])),
                                        "notes.npy": pickle.dumps(object)})
    assert images.load_npz(path).x_train.shape == (4, 3)
