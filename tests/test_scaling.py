"""``data.scale``: unit (pixels / their maximum), standard (per feature, training rows only)
or none; the default follows what the data is; and the sweep keys of the new data sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dropsweep.sweep.config import build_sweep
from dropsweep.data.dataset import Dataset, scale_like, standardize, with_scale
from dropsweep.errors import SweepError
from dropsweep.data.protocols import make_folds
from dropsweep.sweep.file import parse_sweep_text


def sweep(text: str, file: str = "s.yaml"):
    return build_sweep(parse_sweep_text(text, file))


def rows(pixel_max: float | None = None, dtype=np.float32) -> Dataset:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(40, 6)).astype(dtype)
    y = np.repeat([0, 1], 20)
    return Dataset(X=X, y=y, classes=("a", "b"), name="d", source="memory",
                   feature_names=tuple(f"f{i}" for i in range(6)), pixel_max=pixel_max)


def test_the_default_scale_follows_the_data():
    assert with_scale(rows(), sweep("name: s\n")).scale == "standard"  # a table
    assert with_scale(rows(255.0), sweep("name: s\n")).scale == "unit"  # 8-bit images
    assert with_scale(rows(255.0), sweep("data: {scale: standard}\n")).scale == "standard"
    assert with_scale(rows(), sweep("data: {scale: none}\n")).scale == "none"


def test_unit_needs_a_pixel_maximum_and_says_so_at_the_key():
    with pytest.raises(SweepError) as err:
        with_scale(rows(), sweep("name: s\ndata:\n  scale: unit\n"))
    text = str(err.value)
    assert "s.yaml: line 3: data.scale: unit divides pixels by their maximum" in text
    assert "\n" not in text


def test_each_scale_as_written():
    X = rows(255.0, np.uint8).X
    train, test = (scale_like(X[:30], part, "unit", 255.0) for part in (X[:30], X[30:]))
    assert train.dtype == np.float32 and np.array_equal(train, X[:30].astype(np.float32) / 255)
    assert test.max() <= 1.0 and np.array_equal(test, X[30:].astype(np.float32) / 255)
    train, test = (scale_like(X[:30], part, "none") for part in (X[:30], X[30:]))
    assert np.array_equal(train, X[:30].astype(np.float32))
    a, b = (scale_like(X[:30], part, "standard") for part in (X[:30], X[30:]))
    c, d = standardize(X[:30], X[30:])
    assert np.array_equal(a, c) and np.array_equal(b, d)
    # and as scikit-learn's own transform computes it, to the bit
    from sklearn.preprocessing import StandardScaler

    fitted = StandardScaler().fit(X[:30].astype(np.float64))
    assert np.array_equal(b, fitted.transform(X[30:].astype(np.float64)).astype(np.float32))


def test_a_constant_pixel_is_centred_not_divided_under_standard():
    """A border pixel that is 0 in every image (8x8 digits have several) has sd 0: it becomes
    0 rather than NaN."""
    X = rows().X
    X[:, 2] = 7.0
    train, test = (scale_like(X[:30], part, "standard") for part in (X[:30], X[30:]))
    assert np.isfinite(train).all() and (train[:, 2] == 0).all() and (test[:, 2] == 0).all()


def test_folds_are_scaled_per_the_sweep():
    d = rows(255.0, np.uint8)
    folds = make_folds(d.X, d.y, 4, seed=0, scale="unit", pixel_max=255.0)
    n = int(folds.n_train[0])
    assert 0.0 <= float(folds.x_train[0, :n].min()) and float(folds.x_train[0, :n].max()) <= 1.0
    values = set(np.round(folds.x_train[0, :n].numpy().ravel() * 255).astype(int).tolist())
    assert values <= set(d.X.ravel().tolist())  # every value is a pixel / 255


@pytest.mark.parametrize("text,key,words", [
    ("data: {csv: a.csv, npz: b.npz}\n", "data.npz", "give one of data.dataset, data.csv or data.npz"),
    ("data: {dataset: digits, npz: b.npz}\n", "data.dataset", "give either data.dataset or data.npz"),
    ("data: {npz: b.npz, target: 3}\n", "data.target", "only a data.csv file takes a target"),
    ("data: {npz: ''}\n", "data.npz", "must be a path to an NPZ file"),
    ("data: {scale: unti}\n", "data.scale", "did you mean 'unit'"),
    ("data: {dataset: fashion}\n", "data.dataset", "sonar, digits, fashion_mnist, mnist, cifar10"),
])
def test_data_keys_are_validated(text, key, words):
    with pytest.raises(SweepError) as err:
        sweep(text)
    assert f"{key}: " in str(err.value) and words in str(err.value)


def test_an_npz_path_is_relative_to_the_sweep_file(tmp_path: Path):
    from dropsweep.data.dataset import load_dataset
    from dropsweep.errors import DataError

    s = sweep("data: {npz: arrays/mine.npz}\n", str(tmp_path / "sub" / "s.yaml"))
    with pytest.raises(DataError, match=r"no such file: .*sub/arrays/mine\.npz"):
        load_dataset(s)
