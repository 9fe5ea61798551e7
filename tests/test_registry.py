"""dropsweep.data.registry: every built-in data set is one record, and the record is all there
is to it (config's names, load_dataset's dispatch, the files fetch.py checks)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from dropsweep.data import fetch, registry
from dropsweep.data.dataset import load_dataset
from dropsweep.data.readers import Dataset
from dropsweep.data.registry import DATASETS, KINDS, DataSet
from dropsweep.errors import DataError, SweepError
from dropsweep.sweep import config
from dropsweep.sweep.config import build_sweep
from dropsweep.sweep.file import parse_sweep_text

HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_record_is_complete(name: str) -> None:
    record = DATASETS[name]
    assert record.name == name and record.kind in KINDS and callable(record.reader)
    assert (record.image_shape is not None) == (record.kind == "image")
    assert record.about
    for remote in record.files:
        assert isinstance(remote, fetch.RemoteFile)
        assert re.fullmatch(r"https?://\S+", remote.url), remote.url
        assert HEX64.fullmatch(remote.sha256), remote.sha256
        assert remote.size is None or remote.size > 0
    names = [remote.name for remote in record.files]
    assert len(names) == len(set(names))


def test_no_two_sets_share_a_file_name() -> None:
    """Every file has its own place in $DROPSWEEP_DATA_DIR and the cache."""
    names = [n for r in DATASETS.values() for f in r.files for n in (f.name, *f.also)]
    assert len(names) == len(set(names))


def test_sonar_is_a_record_like_the_others() -> None:
    sonar = DATASETS["sonar"]
    assert sonar.kind == "table" and sonar.files == (registry.SONAR,)
    assert sonar.files[0].also == ("sonar.all-data",)


def test_config_accepts_exactly_the_registrys_names() -> None:
    assert config.DATASETS == tuple(DATASETS)
    for name in DATASETS:
        assert build_sweep(parse_sweep_text(f"data: {{dataset: {name}}}\n", "s.yaml")
                           ).data.dataset == name
    with pytest.raises(SweepError) as exc:
        build_sweep(parse_sweep_text("data: {dataset: sonr}\n", "s.yaml"))
    assert str(exc.value) == ("s.yaml: line 1: data.dataset: must be one of "
                              f"{', '.join(DATASETS)}, got 'sonr'; did you mean 'sonar'?")


def test_the_digits_record_says_what_its_reader_gives() -> None:
    record = DATASETS["digits"]
    rows = registry.load_built_in(record)
    assert rows.image_shape == record.image_shape and rows.classes == record.classes
    assert (rows.X_test is not None) == record.official_test


def _fake_reader(record: DataSet, paths: tuple[Path, ...]) -> Dataset:
    (path,) = paths
    values = np.frombuffer(path.read_bytes(), dtype=np.uint8).astype(np.float32)
    X = values.reshape(-1, 2)
    y = (np.arange(len(X)) % 2).astype(np.int64)
    return Dataset(X, y, record.classes, record.name, str(path), ("a", "b"))


def test_adding_a_record_is_the_only_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new table set, registered and nothing else: a sweep names it, load_dataset reads it
    through fetch.py's checked path."""
    raw = bytes(range(40))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "fake.bin").write_bytes(raw)
    monkeypatch.setenv("DROPSWEEP_DATA_DIR", str(data_dir))
    remote = fetch.RemoteFile("fake.bin", "https://example.org/fake.bin",
                              hashlib.sha256(raw).hexdigest(), len(raw))
    monkeypatch.setitem(DATASETS, "fake", DataSet("fake", "table", (remote,), _fake_reader,
                                                  ("even", "odd"), about="a test's table"))
    sweep = build_sweep(parse_sweep_text("data: {dataset: fake}\ncv: {folds: 2}\n",
                                         str(tmp_path / "s.yaml")))
    rows = load_dataset(sweep)
    assert rows.name == "fake" and rows.X.shape == (20, 2) and rows.classes == ("even", "odd")
    assert rows.source == str(data_dir / "fake.bin") and rows.scale == "standard"
    (data_dir / "fake.bin").write_bytes(raw[::-1])  # the checksum holds for a new set too
    with pytest.raises(DataError, match="not the published fake.bin"):
        load_dataset(sweep)
