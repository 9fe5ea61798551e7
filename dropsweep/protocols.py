"""How rows are split into what trains and what scores: k-fold cross-validation.

Every split's rows sit on one device, padded to a common length, so a family's engine can
train all splits of several trials as one batch. (The hold-out protocol of the image data
sets joins k-fold here.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from dropsweep.data import standardize, stratified_folds


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
    n_classes: int | None = None,
) -> Folds:
    """Split stratified with shuffling (seeded), standardise per training fold, pad and stack."""
    splits = stratified_folds(y, folds, seed)
    xs_tr, ys_tr, xs_te, ys_te = [], [], [], []
    for train_idx, test_idx in splits:
        x_tr, x_te = standardize(X[train_idx], X[test_idx])
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


