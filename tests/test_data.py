"""dropsweep.data.dataset: finding Sonar (local, cached, downloaded), reading CSVs, folds, scaling."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dropsweep.data import dataset as data
from dropsweep.data import fetch, readers, registry
from dropsweep.sweep.config import Sweep, build_sweep
from dropsweep.data.dataset import (
    Dataset,
    check_folds,
    load_dataset,
    cache_dir,
    standardize,
    stratified_folds,
)
from dropsweep.errors import DataError, SweepError
from dropsweep.sweep.file import parse_sweep_text
from helpers import SUITE


def make_sweep(directory: Path, text: str) -> Sweep:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sweep.yaml"
    path.write_text(text)
    return build_sweep(parse_sweep_text(text, str(path)))


def csv_sweep(tmp_path: Path, content: str, target: object = None, folds: int = 2) -> Sweep:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "data.csv").write_text(content)
    target_line = ("" if target is None else f'  target: "{target}"\n' if isinstance(target, str)
                   else f"  target: {target}\n")
    return make_sweep(tmp_path, f"data:\n  csv: data.csv\n{target_line}cv:\n  folds: {folds}\n")


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.fixture
def sonar_bytes(sonar_dir: Path) -> bytes:
    return (sonar_dir / "sonar.csv").read_bytes()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail the test if anything tries to download; returns the list of attempted URLs."""
    calls: list[str] = []

    def refuse(url: str, out: object, timeout: float, progress: object) -> None:
        calls.append(url)
        raise AssertionError("unexpected download")

    monkeypatch.setattr(fetch, "_stream", refuse)
    return calls


def serve(monkeypatch: pytest.MonkeyPatch, answer) -> list[tuple[str, float]]:
    """Replace the network: ``answer(url)`` is the bytes served (or raises)."""
    calls: list[tuple[str, float]] = []

    def stream(url: str, out, timeout: float, progress: object) -> None:
        calls.append((url, timeout))
        out.write(answer(url))

    monkeypatch.setattr(fetch, "_stream", stream)
    return calls


SONAR_URL = registry.SONAR.url
CACHED = ("datasets", "sonar.csv")  # Sonar's place in the cache, as every set's files


def empty_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DROPSWEEP_DATA_DIR", str(empty))
    return empty


# ----------------------------------------------------------------------------- Sonar


def test_sonar_from_data_dir(sonar_dir: Path, no_network: list[str], tmp_path: Path) -> None:
    ds = load_dataset(make_sweep(tmp_path, "data: {dataset: sonar}\n"))
    assert ds.X.shape == (208, 60) and ds.X.dtype == np.float32
    assert ds.y.dtype == np.int64 and set(np.unique(ds.y)) == {0, 1}
    assert ds.classes == ("M", "R") and ds.n_classes == 2 and ds.n_features == 60
    assert ds.class_counts == {"M": 111, "R": 97}
    assert ds.name == "sonar" and ds.source == str(sonar_dir / "sonar.csv")
    assert len(ds.feature_names) == 60
    assert ds.X[0, 0] == pytest.approx(0.02) and ds.classes[ds.y[0]] == "R"
    assert ds.classes[ds.y[-1]] == "M"
    assert not no_network


def test_sonar_all_data_name(sonar_bytes: bytes, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch, no_network: list[str]) -> None:
    d = empty_data_dir(tmp_path, monkeypatch)
    (d / "sonar.all-data").write_bytes(sonar_bytes)
    ds = data.load_sonar()
    assert ds.source == str(d / "sonar.all-data") and ds.class_counts == {"M": 111, "R": 97}


@pytest.mark.parametrize("unset", [False, True])
def test_sonar_falls_back_to_cache(sonar_bytes: bytes, tmp_path: Path, unset: bool,
                                   monkeypatch: pytest.MonkeyPatch, no_network: list[str]) -> None:
    if unset:
        monkeypatch.delenv("DROPSWEEP_DATA_DIR")
    else:
        empty_data_dir(tmp_path, monkeypatch)
    cached = cache_dir().joinpath(*CACHED)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(sonar_bytes)
    ds = data.load_sonar()
    assert ds.source == str(cached) and ds.X.shape == (208, 60)
    assert not no_network


def test_sonar_download_is_cached_once(sonar_bytes: bytes, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    empty_data_dir(tmp_path, monkeypatch)
    calls = serve(monkeypatch, lambda url: sonar_bytes)
    first = data.load_sonar()
    cached = cache_dir().joinpath(*CACHED)
    assert calls == [(SONAR_URL, fetch.DOWNLOAD_TIMEOUT)]
    assert cached.read_bytes() == sonar_bytes
    assert os.listdir(cached.parent) == ["sonar.csv"]  # no temp file left behind
    assert first.source == str(cached) and first.class_counts == {"M": 111, "R": 97}
    second = data.load_sonar()
    assert len(calls) == 1
    np.testing.assert_array_equal(first.X, second.X)
    np.testing.assert_array_equal(first.y, second.y)


def test_sonar_record_is_the_shipped_file(sonar_dir: Path) -> None:
    """The record's digest and size are the real file's: a copy is checked like any set's."""
    assert registry.SONAR.sha256 == fetch.sha256_of(sonar_dir / "sonar.csv")
    assert registry.SONAR.size == (sonar_dir / "sonar.csv").stat().st_size


def _drop_last_row(text: str) -> str:
    return "\n".join(text.strip().splitlines()[:-1]) + "\n"


def _value_too_big(text: str) -> str:
    lines = text.splitlines()
    lines[4] = "1.5" + lines[4][lines[4].index(","):]
    return "\n".join(lines)


def _relabel_one_mine(text: str) -> str:
    lines = text.splitlines()
    i = max(k for k, line in enumerate(lines) if line.endswith(",M"))
    lines[i] = lines[i][:-1] + "R"
    return "\n".join(lines)


CORRUPTIONS = [
    (_drop_last_row, "has 207 rows, expected 208"),
    (_value_too_big, "row 5, column 1: 1.5 is outside [0, 1]"),
    (_relabel_one_mine, "has labels 110 M, 98 R, expected 111 M, 97 R"),
    (lambda text: "<html><body>Moved</body></html>\n",
     "is the only column, so there are no features"),
    (lambda text: text.replace(",", ";"), "no features"),
]


@pytest.mark.parametrize("corrupt, expected", CORRUPTIONS)
def test_corrupt_download_is_refused_and_not_cached(
        sonar_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        corrupt, expected: str) -> None:
    d = empty_data_dir(tmp_path, monkeypatch)
    bad = corrupt(sonar_bytes.decode()).encode()
    serve(monkeypatch, lambda url: bad)
    with pytest.raises(DataError) as exc:
        data.load_sonar()
    text = one_line(exc)
    assert text.startswith(SONAR_URL + ": the download is not the published sonar.csv: its "
                           "SHA-256 is ")
    assert f"save {SONAR_URL} as {d / 'sonar.csv'}" in text  # says where to put a good copy
    assert os.listdir(cache_dir().joinpath(*CACHED[:-1])) == []  # no half file kept


@pytest.mark.parametrize("corrupt, expected", CORRUPTIONS)
def test_sonars_reader_checks_the_published_shape(sonar_bytes: bytes, tmp_path: Path,
                                                  corrupt, expected: str) -> None:
    """Behind the digest, the reader still checks what it parses (as the image readers do)."""
    path = tmp_path / "sonar.csv"
    path.write_bytes(corrupt(sonar_bytes.decode()).encode())
    with pytest.raises(DataError) as exc:
        readers.read_sonar(registry.DATASETS["sonar"], (path,))
    text = one_line(exc)
    assert text.startswith(f"{path}: ") and expected in text
    assert text.endswith(f"; replace it with {SONAR_URL}")


@pytest.mark.parametrize("name", ["sonar.csv", "sonar.all-data"])
def test_corrupt_local_copy_is_refused(sonar_bytes: bytes, tmp_path: Path, name: str,
                                       monkeypatch: pytest.MonkeyPatch,
                                       no_network: list[str]) -> None:
    d = empty_data_dir(tmp_path, monkeypatch)
    (d / name).write_text(_value_too_big(sonar_bytes.decode()))
    with pytest.raises(DataError) as exc:
        data.load_sonar()
    text = one_line(exc)
    assert text.startswith(f"{d / name}: not the published sonar.csv: its SHA-256 is ")
    assert text.endswith(f"expected {registry.SONAR.sha256[:12]}...; replace it with {SONAR_URL}")
    assert not no_network  # a bad local copy is an error, not a reason to download


def test_corrupt_cache_says_delete_it(sonar_bytes: bytes, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    empty_data_dir(tmp_path, monkeypatch)
    cached = cache_dir().joinpath(*CACHED)
    cached.parent.mkdir(parents=True)
    cached.write_text(_drop_last_row(sonar_bytes.decode()))
    with pytest.raises(DataError, match="SHA-256.*delete it to download again"):
        data.load_sonar()


@pytest.mark.parametrize("error, reason", [
    (urllib.error.URLError("no route to host"), "no route to host"),
    (TimeoutError("timed out"), "no answer within"),
    (ConnectionResetError("reset"), "reset"),
])
def test_offline_says_where_to_put_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            error: Exception, reason: str) -> None:
    d = empty_data_dir(tmp_path, monkeypatch)

    def offline(url: str) -> bytes:
        raise error

    serve(monkeypatch, offline)
    with pytest.raises(DataError) as exc:
        data.load_sonar()
    text = one_line(exc)
    assert text.startswith("sonar: sonar.csv is not in $DROPSWEEP_DATA_DIR")
    assert str(d) in text and reason in text
    assert text.endswith(f"save {SONAR_URL} as {d / 'sonar.csv'}")
    assert not cache_dir().joinpath(*CACHED).exists()


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPSWEEP_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("DROPSWEEP_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "dropsweep"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "dropsweep"


# ----------------------------------------------------------------------------- CSV

TABLE = "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n"


def test_csv_with_header(tmp_path: Path) -> None:
    ds = load_dataset(csv_sweep(tmp_path, TABLE))
    assert ds.feature_names == ("a", "b") and ds.classes == ("x", "y")
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4], [5, 6], [7, 8]])
    assert ds.X.dtype == np.float32 and ds.y.tolist() == [0, 1, 0, 1]
    assert ds.name == "data.csv" and ds.source == str(tmp_path / "data.csv")
    assert ds.target == "column 'label'"


def test_csv_without_header(tmp_path: Path) -> None:
    ds = load_dataset(csv_sweep(tmp_path, "1,2,x\n3,4,y\n\n5,6,x\n"))
    assert len(ds.X) == 3 and ds.feature_names == ("column 1", "column 2")
    assert ds.y.tolist() == [0, 1, 0] and ds.target == "column 3"


def test_csv_header_with_missing_cell_in_first_data_row_is_not_a_header(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"row 1, column 2: missing value"):
        load_dataset(csv_sweep(tmp_path, "1,NA,x\n3,4,y\n"))


@pytest.mark.parametrize("target, features, labels", [
    ("label", ("a", "b"), ["x", "y", "x", "y"]),
    ("a", ("b", "label"), ["1", "3", "5", "7"]),
    (0, ("b", "label"), ["1", "3", "5", "7"]),
    (1, ("a", "label"), ["2", "4", "6", "8"]),
    (-2, ("a", "label"), ["2", "4", "6", "8"]),
    (-1, ("a", "b"), ["x", "y", "x", "y"]),
])
def test_csv_target_choice(tmp_path: Path, target: object, features: tuple[str, ...],
                           labels: list[str]) -> None:
    table = "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n".replace("x\n", "0\n").replace("y\n", "9\n")
    if target in ("label", -1):
        table = TABLE
    ds = load_dataset(csv_sweep(tmp_path, table, target))
    assert ds.feature_names == features
    assert [ds.classes[i] for i in ds.y] == labels


def test_csv_target_as_numeric_string_without_header(tmp_path: Path) -> None:
    sweep = csv_sweep(tmp_path, "x,1,2\ny,3,4\nx,5,6\n", "0")
    ds = load_dataset(sweep)
    assert ds.classes == ("x", "y") and ds.feature_names == ("column 2", "column 3")
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4], [5, 6]])


def test_csv_target_name_in_first_row_means_header(tmp_path: Path) -> None:
    ds = load_dataset(csv_sweep(tmp_path, "1,2,cls\n1,2,0\n3,4,1\n", "cls"))
    assert len(ds.X) == 2 and ds.feature_names == ("1", "2")


def test_integer_labels_sort_numerically(tmp_path: Path) -> None:
    ds = load_dataset(csv_sweep(tmp_path, "1,10\n2,2\n3,3\n4,10\n5,2.5\n"))
    assert ds.classes == ("2", "2.5", "3", "10")
    assert ds.y.tolist() == [3, 0, 2, 3, 1]
    assert ds.class_counts == {"2": 1, "2.5": 1, "3": 1, "10": 2}


def test_three_string_classes(tmp_path: Path) -> None:
    ds = load_dataset(csv_sweep(tmp_path, "f,kind\n1,cat\n2,dog\n3,ant\n4,dog\n"))
    assert ds.classes == ("ant", "cat", "dog") and ds.n_classes == 3
    assert ds.y.tolist() == [1, 2, 0, 2] and ds.X.shape == (4, 1)


def test_csv_path_is_relative_to_the_sweep_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = csv_sweep(tmp_path / "project", TABLE)
    monkeypatch.chdir(tmp_path)
    assert load_dataset(sweep).source == str(tmp_path / "project" / "data.csv")


def test_csv_path_without_sweep_file_is_relative_to_cwd(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.csv").write_text(TABLE)
    monkeypatch.chdir(tmp_path)
    sweep = build_sweep(parse_sweep_text("data: {csv: t.csv}\n", ""))
    assert load_dataset(sweep).class_counts == {"x": 2, "y": 2}


def test_a_fingerprint_covers_values_labels_dtype_and_shape() -> None:
    """One function fingerprints a study's searched rows and a test study's test rows; the
    bytes alone do not decide (the same bytes as another dtype or shape are other rows), and
    a test study stored before (hashed from a copy of each array's bytes) still matches."""
    import hashlib

    X = np.arange(12, dtype=np.uint8).reshape(4, 3)
    y = np.array([0, 1, 0, 1])
    mark = data.fingerprint(X, y)
    assert mark == data.fingerprint(X.copy(), y.copy())
    changed = X.copy()
    changed[3, 2] += 1
    others = [data.fingerprint(changed, y), data.fingerprint(X, 1 - y),
              data.fingerprint(X.view(np.int8), y), data.fingerprint(X.reshape(3, 4), y),
              data.fingerprint(X[:, ::-1], y), data.fingerprint(X[:0], y[:0])]
    assert len({mark, *others}) == 7
    before = hashlib.sha256()
    for a in (X, y):
        before.update(f"{a.dtype.str}{a.shape}".encode())
        before.update(a.tobytes())
    assert mark == before.hexdigest()


def test_a_bad_npz_beside_a_relative_sweep_is_named_once(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep given as a relative path names its file relatively ("data.npz"); the message
    read "data.npz: data.npz: ..." (the file, then the sweep key) and names it once now."""
    (tmp_path / "data.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "s.yaml").write_text("data: {npz: data.npz}\n")
    monkeypatch.chdir(tmp_path)
    sweep = build_sweep(parse_sweep_text((tmp_path / "s.yaml").read_text(), "s.yaml"))
    with pytest.raises(DataError) as exc:
        load_dataset(sweep)
    assert one_line(exc).startswith("data.npz: not an .npz file"), str(exc.value)


@pytest.mark.parametrize("content, message", [
    ("a,b,band3,label\n1,2,3,x\n4,5,abc,y\n", "row 3, column 3 ('band3'): 'abc' is not a number"),
    ("1,2,3,x\n4,5,abc,y\n", "row 2, column 3: 'abc' is not a number"),
    ("a,b,label\n1,2,x\n\n3,,y\n", "row 4, column 2 ('b'): missing value"),
    ("a,b,label\n1,NA,x\n", "row 2, column 2 ('b'): missing value"),
    ("a,b,label\n1,inf,x\n", "row 2, column 2 ('b'): 'inf' is not a finite number"),
    ("a,b,label\n1,2,x\n3,4\n", "row 3: has 2 cells, but row 1 has 3"),
    ("a,b,label\n1,2,x\n3,4,y,5\n", "row 3: has 4 cells, but row 1 has 3"),
    ("a,b,label\n1,2,\n", "row 2, column 3 ('label'): missing value (the class label)"),
    ("a,b,label\n1,2,x\n3,4,x\n",
     "column 'label' (the target) has only one class, 'x'; a classifier needs at least two"),
    ("1,2,7\n3,4,7\n",
     "column 3 (the target) has only one class, '7'; a classifier needs at least two"),
    ("", "the file is empty"),
    ("\n\n", "the file is empty"),
    ("a,b,label\n", "has a header row but no data rows"),
    ("label\nx\ny\n", "column 1 is the only column, so there are no features "
                       "(is the file comma-separated?)"),
])
def test_csv_errors_name_file_row_and_column(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(DataError) as exc:
        load_dataset(csv_sweep(tmp_path, content))
    assert one_line(exc) == f"{tmp_path / 'data.csv'}: {message}"


def test_unknown_target_lists_columns(tmp_path: Path) -> None:
    with pytest.raises(SweepError) as exc:
        load_dataset(csv_sweep(tmp_path, TABLE, "lable"))
    text = one_line(exc)
    assert text.startswith(f"{tmp_path / 'sweep.yaml'}: line 3: data.target: no column named "
                           "'lable'")
    assert "columns: a, b, label" in text


def test_unknown_target_name_without_header(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="data.target: .*no header row"):
        load_dataset(csv_sweep(tmp_path, "1,2,x\n3,4,y\n", "label"))


@pytest.mark.parametrize("target", [3, -4, "7"])
def test_target_index_out_of_range(tmp_path: Path, target: object) -> None:
    with pytest.raises(SweepError) as exc:
        load_dataset(csv_sweep(tmp_path, TABLE, target))
    assert "data.target: column index" in one_line(exc) and "has 3 columns" in str(exc.value)


def test_missing_csv_file(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, "name: x\ndata:\n  csv: nope.csv\n")
    with pytest.raises(DataError) as exc:
        load_dataset(sweep)
    assert one_line(exc) == (f"{tmp_path / 'sweep.yaml'}: line 3: data.csv: "
                             f"no such file: {tmp_path / 'nope.csv'}")


@pytest.mark.parametrize("key", ["csv", "npz"])
def test_a_data_file_that_is_a_device_is_one_line_not_read_without_end(tmp_path: Path,
                                                                      key: str) -> None:
    """A link to /dev/zero: a CSV would be read until memory ran out, an npz said 'no such
    file'."""
    SUITE["hostile data files"] += 1
    (tmp_path / f"zero.{key}").symlink_to("/dev/zero")
    sweep = make_sweep(tmp_path, f"name: x\ndata:\n  {key}: zero.{key}\n")
    with pytest.raises(DataError) as exc:
        load_dataset(sweep)
    assert f"data.{key}: is not a regular file (a device, pipe or socket)" in one_line(exc)

def test_csv_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match="data.csv: is a directory"):
        load_dataset(make_sweep(tmp_path, "data: {csv: dir.csv}\n"))


def test_csv_with_bom_and_crlf(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_bytes(b"\xef\xbb\xbfa,label\r\n1,x\r\n2,y\r\n")
    ds = load_dataset(make_sweep(tmp_path, "data: {csv: data.csv}\n"))
    assert ds.feature_names == ("a",) and ds.classes == ("x", "y")


# ----------------------------------------------------------------------------- check_folds


def test_check_folds(tmp_path: Path) -> None:
    rows = "f,label\n" + "".join(f"{i},{'x' if i < 4 else 'y'}\n" for i in range(14))
    ds = load_dataset(csv_sweep(tmp_path, rows, folds=5))
    with pytest.raises(SweepError) as exc:
        check_folds(ds, csv_sweep(tmp_path, rows, folds=5))
    assert one_line(exc) == (
        f"{tmp_path / 'sweep.yaml'}: line 4: cv.folds: 5 folds need at least 5 rows of every "
        "class, but class 'x' has 4 (data: data.csv, column 'label')")
    check_folds(ds, csv_sweep(tmp_path, rows, folds=4))  # exactly enough is fine


# ----------------------------------------------------------------------------- folds


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def test_folds_deterministic_per_seed() -> None:
    y = _labels([111, 97])
    a, b, c = (stratified_folds(y, 10, s) for s in (7, 7, 8))
    for (tr1, te1), (tr2, te2) in zip(a, b):
        np.testing.assert_array_equal(tr1, tr2)
        np.testing.assert_array_equal(te1, te2)
    assert any(not np.array_equal(t1, t2) for (_, t1), (_, t2) in zip(a, c))


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(2, 30), min_size=2, max_size=4), seed=st.integers(0, 2**31),
       data_=st.data())
def test_folds_partition_and_stratify(counts: list[int], seed: int, data_: st.DataObject) -> None:
    folds = data_.draw(st.integers(2, min(counts)))
    rng = np.random.default_rng(seed)
    y = rng.permutation(_labels(counts))
    splits = stratified_folds(y, folds, seed)
    assert len(splits) == folds
    tests = np.concatenate([te for _, te in splits])
    assert sorted(tests.tolist()) == list(range(len(y)))  # every row in exactly one test fold
    for train, test in splits:
        assert train.dtype == np.int64 and test.dtype == np.int64
        assert set(train.tolist()).isdisjoint(test.tolist())
        assert len(train) + len(test) == len(y)
        for cls, n in enumerate(counts):
            assert abs(int(np.sum(y[test] == cls)) - n / folds) <= 1


# ----------------------------------------------------------------------------- scaling


def test_standardize_train_columns(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs
    train, test = standardize(X[:60] * 5 + 3, X[60:])
    assert train.dtype == np.float32 and test.dtype == np.float32
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-5)


def test_standardize_uses_training_statistics_only(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs
    X_train, X_test = X[:60], X[60:].copy()
    train_a, test_a = standardize(X_train, X_test)
    mean = X_train.astype(np.float64).mean(axis=0)
    std = X_train.astype(np.float64).std(axis=0)
    np.testing.assert_allclose(test_a, (X_test - mean) / std, rtol=1e-5, atol=1e-5)

    wild = X_test.copy()
    wild[:5] = 1e6  # a wildly different held-out fold
    train_b, test_b = standardize(X_train, wild)
    np.testing.assert_array_equal(train_a, train_b)
    np.testing.assert_array_equal(test_a[5:], test_b[5:])
    assert not np.allclose(test_b[:5], test_a[:5])


def test_standardize_constant_column_does_not_divide_by_zero() -> None:
    X_train = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    train, test = standardize(X_train, np.array([[2.0, 6.0]], dtype=np.float32))
    assert np.isfinite(train).all() and test.tolist() == [[0.0, 1.0]]


def test_dataset_class_counts_include_empty_classes() -> None:
    ds = Dataset(X=np.zeros((2, 1), np.float32), y=np.array([0, 0]), classes=("a", "b"),
                 name="n", source="s", feature_names=("f",))
    assert ds.class_counts == {"a": 2, "b": 0}


# ----------------------------------------------------------------------------- CSV fuzzing

from hypothesis import HealthCheck  # noqa: E402
from click.testing import CliRunner  # noqa: E402


_CELLS = st.sampled_from(["1", "2.5", "-3e2", "", "NA", "nan", "inf", "x", "y", "label", " ",
                          "0x1F", "1,5", '"q"', "é", "\x00", "1e999", "--", "TRUE"])


@st.composite
def mutated_csvs(draw: st.DrawFn) -> bytes:
    """A small valid table, then random damage: cells replaced, rows cut or repeated,
    separators changed, a BOM, CRLF, undecodable bytes, or plain garbage."""
    rows = [["a", "b", "c", "label"]] + [[str(i), str(i * 2), str(i % 3), "xy"[i % 2]]
                                         for i in range(draw(st.integers(0, 12)))]
    for _ in range(draw(st.integers(0, 6))):
        if len(rows) > 0 and draw(st.booleans()):
            r = draw(st.integers(0, len(rows) - 1))
            if rows[r]:
                rows[r][draw(st.integers(0, len(rows[r]) - 1))] = draw(_CELLS)
        elif rows and draw(st.booleans()):
            rows.pop(draw(st.integers(0, len(rows) - 1)))
        elif rows:
            r = draw(st.integers(0, len(rows) - 1))
            rows.insert(r, rows[r][: draw(st.integers(0, len(rows[r]) + 1))])
    sep = draw(st.sampled_from([",", ",", ",", ";", "\t"]))
    text = draw(st.sampled_from(["\n", "\r\n"])).join(sep.join(r) for r in rows)
    raw = text.encode("utf-8")
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=200))
    elif draw(st.integers(0, 9)) == 0:
        raw += b"\xff\xfe\x80"
    return raw


FUZZ = {"deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}


@pytest.mark.slow
@settings(max_examples=150, **FUZZ)
@given(raw=mutated_csvs(), folds=st.integers(2, 4),
       target=st.none() | st.integers(-5, 5) | st.sampled_from(["label", "a", "zz"]))
def test_a_mutated_csv_is_a_dataset_or_one_data_error(tmp_path: Path, raw: bytes, target: object,
                                                      folds: int) -> None:
    SUITE["fuzzed inputs"] += 1
    path = tmp_path / "data.csv"
    try:
        sweep = csv_sweep(tmp_path, "", target=target, folds=folds)
        path.write_bytes(raw)  # csv_sweep wrote its own content
        ds = load_dataset(sweep)
        check_folds(ds, sweep)
    except (DataError, SweepError) as exc:
        text = str(exc)
        assert text and "\n" not in text, text
        assert str(path) in text or str(tmp_path / "sweep.yaml") in text, text
    else:
        assert ds.X.shape[0] == ds.y.shape[0] >= 2 and np.isfinite(ds.X).all()
        assert len(set(ds.y.tolist())) >= 2


@settings(max_examples=40, **FUZZ)
@given(raw=mutated_csvs())
def test_validate_on_a_mutated_csv_exits_0_or_2_with_one_line(tmp_path: Path, raw: bytes) -> None:
    """End to end through the command: never a traceback, never another exit status."""
    from dropsweep.cli import main

    SUITE["fuzzed inputs"] += 1
    (tmp_path / "data.csv").write_bytes(raw)
    (tmp_path / "s.yaml").write_text("data: {csv: data.csv}\ncv: {folds: 2}\n")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr


def test_a_data_file_read_again_unchanged_is_parsed_once(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A custom family's sweep is read to check its module against the data, then searched:
    the same unchanged file gives the same rows without being parsed again; any change to its
    bytes (here one of the same size, written at once) is read afresh."""
    parsed: list[str] = []
    real = data._read_text

    def counting(path: Path) -> str:
        parsed.append(str(path))
        return real(path)

    monkeypatch.setattr(data, "_read_text", counting)
    sweep = csv_sweep(tmp_path, "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n")
    first, again = load_dataset(sweep), load_dataset(sweep)
    assert len(parsed) == 1 and np.array_equal(first.X, again.X)
    (tmp_path / "data.csv").write_text("a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,9,y\n")  # same size
    changed = load_dataset(sweep)
    assert len(parsed) == 2 and changed.X[3, 1] == 9.0
    load_dataset(csv_sweep(tmp_path, "a,b,label\n1,2,3\n3,4,4\n5,6,3\n7,9,4\n", "a"))
    load_dataset(csv_sweep(tmp_path, "a,b,label\n1,2,3\n3,4,4\n5,6,3\n7,9,4\n", "label"))
    assert len(parsed) == 4  # another target column: read again
