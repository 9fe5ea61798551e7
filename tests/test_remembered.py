"""scikit-learn's splits and scaling statistics, kept on disk (dropsweep.data.remembered): read
back they are exactly what scikit-learn answers, a damaged or unwritable cache changes no
answer, and a search whose answers are kept does not import scikit-learn at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from dropsweep.data import remembered
from dropsweep.data.dataset import scaling, stratified_folds, stratified_split

ROOT = Path(__file__).resolve().parents[1]


def labels(n: int = 97, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, size=n)


def kept() -> list[Path]:
    return sorted((remembered.cache_dir() / remembered.DIRECTORY).glob("*.npz"))


def sklearn_folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(y), 1)), y))


def same_folds(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
                                    for x, y in zip(a, b))


def test_folds_asked_and_read_back_are_scikit_learns():
    y = labels()
    first = stratified_folds(y, 5, 7)
    assert len(kept()) == 1
    again = stratified_folds(y, 5, 7)
    assert len(kept()) == 1  # read back, not stored twice
    assert same_folds(first, sklearn_folds(y, 5, 7)) and same_folds(again, first)
    assert all(t.dtype == np.int64 for pair in again for t in pair)
    # another seed, fold count or label vector is another answer
    assert same_folds(stratified_folds(y, 5, 8), sklearn_folds(y, 5, 8))
    assert same_folds(stratified_folds(y, 4, 7), sklearn_folds(y, 4, 7))
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 3
    assert same_folds(stratified_folds(y2, 5, 7), sklearn_folds(y2, 5, 7))
    assert len(kept()) == 4


def test_a_hold_out_split_read_back_is_scikit_learns():
    y = labels(120, 1)
    want_kept, want_held = train_test_split(np.arange(120), test_size=0.25, stratify=y,
                                            random_state=3)
    for _ in range(2):
        kept_rows, held = stratified_split(y, 0.25, 3)
        assert np.array_equal(kept_rows, np.sort(want_kept))
        assert np.array_equal(held, np.sort(want_held))
    assert len(kept()) == 1


def test_scaling_statistics_read_back_are_standard_scalers_to_the_bit():
    rng = np.random.default_rng(2)
    X = rng.normal(3.0, 2.0, size=(50, 6)).astype(np.float32)
    X[:, 4] = 1.5  # a constant feature: centred, not divided
    fitted = StandardScaler().fit(X.astype(np.float64))
    for _ in range(2):
        shift, divisor = scaling(X)
        assert shift.tobytes() == fitted.mean_.tobytes()
        assert divisor.tobytes() == fitted.scale_.tobytes()
    assert divisor[4] == 1.0
    assert len(kept()) == 1


def test_a_damaged_answer_is_asked_again_and_replaced():
    y = labels(60, 3)
    want = stratified_folds(y, 3, 0)
    (path,) = kept()
    for damage in ("not a zip file", "a lone array"):
        if damage == "a lone array":
            with open(path, "wb") as f:
                np.save(f, np.arange(3))
        else:
            path.write_bytes(damage.encode())
        assert same_folds(stratified_folds(y, 3, 0), want)
        assert same_folds(stratified_folds(y, 3, 0), want)
        assert path.read_bytes()[:2] == b"PK"  # written again, whole


def test_a_cache_that_cannot_be_written_changes_no_answer(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache directory would be")
    monkeypatch.setenv("DROPSWEEP_CACHE_DIR", str(blocked / "cache"))  # (root may write anywhere)
    y = labels(40, 4)
    assert same_folds(stratified_folds(y, 4, 1), sklearn_folds(y, 4, 1))


def test_another_scikit_learn_or_numpy_version_is_another_answer(monkeypatch):
    y = labels(50, 5)
    stratified_folds(y, 5, 0)
    monkeypatch.setattr(remembered, "_versions", lambda: "0.0-other")
    stratified_folds(y, 5, 0)
    assert len(kept()) == 2


@pytest.mark.slow
def test_a_search_whose_answers_are_kept_does_not_import_scikit_learn(tmp_path):
    """The second search of the same data (a resumed study, another worker) reads its folds
    and scaling back: scikit-learn, 1.2 s of start-up, is never imported."""
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text((ROOT / "sweeps" / "sonar.yaml").read_text())
    probe = (  # the command line itself, which ends its process at once: asked at exit
        "import atexit, sys, runpy\n"
        "atexit.register(lambda: print('sklearn' in sys.modules))\n"
        "sys.argv = ['dropsweep', 'search', sys.argv[1], '--trials', '1', '--quiet',\n"
        "            '--set', 'train.epochs=1', '--storage', sys.argv[2]]\n"
        "runpy.run_module('dropsweep', run_name='__main__')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seen = []
    for name in ("a", "b"):
        out = subprocess.run([sys.executable, "-c", probe, str(sweep),
                              f"sqlite:///{tmp_path / name}.db"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
        seen.append(out.stdout.strip().splitlines()[-1])
    assert seen == ["True", "False"]
