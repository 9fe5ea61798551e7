"""How rows are split into what trains and what scores: k-fold cross-validation, or one
stratified hold-out (validation) split for data too large for k-fold.

Every split's rows sit on one device, padded to a common length, so a family's engine can
train all splits of several trials as one batch; a hold-out split is a batch of one split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from dropsweep.data import Dataset, scale_rows, stratified_folds, stratified_split

if TYPE_CHECKING:
    from dropsweep.config import Sweep


@dataclass(frozen=True)
class Folds:
    """Every fold's standardised rows, padded to a common length, on one device.

    Standardisation is fitted on each training fold alone, so no test-fold statistic leaks in.
    """

    x_train: torch.Tensor  # [folds, max_train, features]
    y_train: torch.Tensor  # [folds, max_train] int64, padding = 0
    n_train: torch.Tensor  # [folds] int64
    x_test: torch.Tensor  # [folds, max_test, features]
    y_test: torch.Tensor  # [folds, max_test]
    n_test: torch.Tensor  # [folds]
    n_classes: int

    @property
    def k(self) -> int:
        return int(self.n_train.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[2])


def _pad(arrays: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(arrays), length) + arrays[0].shape[1:], dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def make_folds(
    X: np.ndarray, y: np.ndarray, folds: int, seed: int, device: torch.device | str = "cpu",
    n_classes: int | None = None, scale: str = "standard", pixel_max: float | None = None,
) -> Folds:
    """Split stratified with shuffling (seeded), scale per training fold (``data.scale``),
    pad and stack."""
    return _stack(stratified_folds(y, folds, seed), X, y, device, n_classes, scale, pixel_max)


def _stack(splits: Sequence[tuple[np.ndarray, np.ndarray]], X: np.ndarray, y: np.ndarray,
           device: torch.device | str, n_classes: int | None, scale: str,
           pixel_max: float | None) -> Folds:
    """Each split's rows scaled from its own training rows, padded and stacked on ``device``."""
    xs_tr, ys_tr, xs_te, ys_te = [], [], [], []
    for train_idx, test_idx in splits:
        x_tr, x_te = scale_rows(X[train_idx], X[test_idx], scale, pixel_max)
        xs_tr.append(x_tr)
        xs_te.append(x_te)
        ys_tr.append(y[train_idx].astype(np.int64))
        ys_te.append(y[test_idx].astype(np.int64))
    max_tr = max(len(a) for a in xs_tr)
    max_te = max(len(a) for a in xs_te)
    dev = torch.device(device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(dev)

    return Folds(
        x_train=t(_pad(xs_tr, max_tr).astype(np.float32)),
        y_train=t(_pad(ys_tr, max_tr)),
        n_train=t(np.array([len(a) for a in xs_tr], dtype=np.int64)),
        x_test=t(_pad(xs_te, max_te).astype(np.float32)),
        y_test=t(_pad(ys_te, max_te)),
        n_test=t(np.array([len(a) for a in xs_te], dtype=np.int64)),
        n_classes=int(n_classes if n_classes is not None else int(y.max()) + 1),
    )


def make_holdout(
    X: np.ndarray, y: np.ndarray, validation: float, seed: int,
    device: torch.device | str = "cpu", n_classes: int | None = None, scale: str = "standard",
    pixel_max: float | None = None,
) -> Folds:
    """One stratified train/validation split (seeded), scaled from its training rows, as a
    :class:`Folds` of one: the engines train it like any fold."""
    return _stack([stratified_split(y, validation, seed)], X, y, device, n_classes, scale,
                  pixel_max)


def folds_of(dataset: Dataset, sweep: Sweep, seed: int, device: torch.device | str = "cpu"
             ) -> Folds:
    """The splits a trial of ``sweep`` is scored on, seeded by ``seed`` (the search's cv.seed,
    or a confirmation repeat's): k folds, or one hold-out split; the test rows
    (``dataset.X_test``) are never among them."""
    common = dict(n_classes=dataset.n_classes, scale=dataset.scale, pixel_max=dataset.pixel_max)
    if sweep.eval.protocol == "holdout":
        return make_holdout(dataset.X, dataset.y, sweep.eval.validation, seed, device, **common)
    return make_folds(dataset.X, dataset.y, sweep.cv.folds, seed, device, **common)


def one_split(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
              y_test: np.ndarray, n_classes: int, device: torch.device | str = "cpu") -> Folds:
    """Rows already scaled as a :class:`Folds` of one split (nothing to pad); test rows that
    are the training rows themselves are put on the device once."""
    dev = torch.device(device)

    def t(a: np.ndarray, dtype: type) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype)).to(dev)[None]

    x_tr, y_tr = t(x_train, np.float32), t(y_train, np.int64)
    same = x_test is x_train and y_test is y_train
    x_te, y_te = (x_tr, y_tr) if same else (t(x_test, np.float32), t(y_test, np.int64))
    return Folds(x_tr, y_tr, torch.tensor([len(y_train)], device=dev), x_te, y_te,
                 torch.tensor([len(y_test)], device=dev), n_classes)


def split_ratio(folds: Folds) -> float:
    """n_test / n_train of the splits, for the Nadeau-Bengio correction: k-fold's 1/(k-1)
    (its definition; the folds' sizes differ by a row), a hold-out split's as measured."""
    if folds.k >= 2:
        return 1.0 / (folds.k - 1)
    return float(folds.n_test[0]) / float(folds.n_train[0])
