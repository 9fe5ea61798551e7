"""How rows are split into what trains and what scores: k-fold cross-validation, or one
stratified hold-out (validation) split for data too large for k-fold.

The rows sit on the device once; a split is two index tensors into them, padded to a common
length, so a family's engine can train all splits of several trials as one batch (a
hold-out split is a batch of one split) and gathers each minibatch as it uses it: no split
copies the rows. 8-bit images stay uint8 until gathered (a quarter of float32's memory) and
are divided by their pixel maximum then; rows standardised per training split hold one
scaled table per split, since each split's statistics differ (fitted on its training rows
alone, so nothing of its held-out rows leaks in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from dropsweep.data.dataset import Dataset, scale_like, stratified_folds, stratified_split

if TYPE_CHECKING:
    from dropsweep.data.dataset import SweepData


@dataclass(frozen=True)
class Folds:
    """Every split as row indices into one copy of the rows on one device.

    Split ``f`` trains on rows ``train_idx[f, :n_train[f]]`` and scores on
    ``test_idx[f, :n_test[f]]``, read from table ``table_of[f]`` of ``rows``; positions past
    ``n_train``/``n_test`` are padding (index 0, never trained on or scored).
    """

    rows: torch.Tensor  # [tables, n, features]: float32 scaled, or uint8 pixels (divisor)
    labels: torch.Tensor  # [n] int64
    train_idx: torch.Tensor  # [folds, max_train] int64
    n_train: torch.Tensor  # [folds] int64
    test_idx: torch.Tensor  # [folds, max_test] int64
    n_test: torch.Tensor  # [folds] int64
    n_classes: int
    table_of: torch.Tensor  # [folds] int64: the table of rows each split reads
    divisor: float | None = None  # uint8 rows are divided by it (float32) as they are gathered
    image_shape: tuple[int, ...] | None = None  # (height, width[, channels]) of image rows

    @property
    def k(self) -> int:
        return int(self.n_train.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.rows.shape[2])

    @property
    def max_train(self) -> int:
        return int(self.train_idx.shape[1])

    @property
    def max_test(self) -> int:
        return int(self.test_idx.shape[1])

    def gather(self, split_of: torch.Tensor, positions: torch.Tensor, held_out: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model ``m``'s rows at ``positions[m]`` of its split ``split_of[m]`` (training or
        held-out), scaled, as float32 ``[models, rows, features]``, with their labels."""
        idx = (self.test_idx if held_out else self.train_idx)[split_of[:, None], positions]
        x = self.rows[self.table_of[split_of][:, None], idx]
        if self.divisor is not None:  # a true float32 division, on any device
            x = x.to(torch.float32) / torch.tensor(self.divisor, dtype=torch.float32,
                                                  device=x.device)
        return x, self.labels[idx]

    def padded(self, held_out: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Every split's rows and labels as ``[folds, max_rows, ...]`` copies, padding zero:
        what a reference implementation trains on (tests, small data); engines gather."""
        n = self.n_test if held_out else self.n_train
        width = self.max_test if held_out else self.max_train
        splits = torch.arange(self.k, device=n.device)
        positions = torch.arange(width, device=n.device).expand(self.k, -1)
        x, y = self.gather(splits, positions, held_out)
        real = positions < n[:, None]
        return x * real[..., None], y * real

    @property
    def x_train(self) -> torch.Tensor:
        return self.padded()[0]

    @property
    def y_train(self) -> torch.Tensor:
        return self.padded()[1]

    @property
    def x_test(self) -> torch.Tensor:
        return self.padded(held_out=True)[0]

    @property
    def y_test(self) -> torch.Tensor:
        return self.padded(held_out=True)[1]


def _pad(arrays: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(arrays), length), dtype=np.int64)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def make_folds(
    X: np.ndarray, y: np.ndarray, folds: int, seed: int, device: torch.device | str = "cpu",
    n_classes: int | None = None, scale: str = "standard", pixel_max: float | None = None,
    image_shape: tuple[int, ...] | None = None,
) -> Folds:
    """Split stratified with shuffling (seeded), scale per training fold (``data.scale``)."""
    return _stack(stratified_folds(y, folds, seed), X, y, device, n_classes, scale, pixel_max,
                  image_shape)


def _stack(splits: Sequence[tuple[np.ndarray, np.ndarray]], X: np.ndarray, y: np.ndarray,
           device: torch.device | str, n_classes: int | None, scale: str,
           pixel_max: float | None, image_shape: tuple[int, ...] | None = None) -> Folds:
    """The rows on ``device`` once (one scaled table per split where the scaling is fitted
    per split), each split as padded index tensors."""
    dev = torch.device(device)
    divisor = None
    if scale == "standard":  # each split's own statistics: one table per split
        tables = np.stack([scale_like(X[train], X, scale) for train, _ in splits])
        table_of = np.arange(len(splits))
    elif X.dtype == np.uint8:  # pixels stay 8-bit until gathered
        tables = X[None]
        divisor = float(pixel_max) if scale == "unit" else 1.0
        table_of = np.zeros(len(splits), dtype=np.int64)
    else:
        tables = scale_like(X, X, scale, pixel_max)[None]
        table_of = np.zeros(len(splits), dtype=np.int64)
    train = [s[0] for s in splits]
    test = [s[1] for s in splits]

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

    return Folds(
        rows=t(tables), labels=t(np.asarray(y, dtype=np.int64)),
        train_idx=t(_pad(train, max(len(a) for a in train))),
        n_train=t(np.array([len(a) for a in train], dtype=np.int64)),
        test_idx=t(_pad(test, max(len(a) for a in test))),
        n_test=t(np.array([len(a) for a in test], dtype=np.int64)),
        n_classes=int(n_classes if n_classes is not None else int(np.max(y)) + 1),
        table_of=t(np.asarray(table_of, dtype=np.int64)), divisor=divisor,
        image_shape=image_shape)


def make_holdout(
    X: np.ndarray, y: np.ndarray, validation: float, seed: int,
    device: torch.device | str = "cpu", n_classes: int | None = None, scale: str = "standard",
    pixel_max: float | None = None, image_shape: tuple[int, ...] | None = None,
) -> Folds:
    """One stratified train/validation split (seeded), scaled from its training rows, as a
    :class:`Folds` of one: the engines train it like any fold."""
    return _stack([stratified_split(y, validation, seed)], X, y, device, n_classes, scale,
                  pixel_max, image_shape)


def folds_of(dataset: Dataset, sweep: SweepData, seed: int, device: torch.device | str = "cpu"
             ) -> Folds:
    """The splits a trial of ``sweep`` is scored on, seeded by ``seed`` (the search's cv.seed,
    or a confirmation repeat's): k folds, or one hold-out split; the test rows
    (``dataset.X_test``) are never among them."""
    common = dict(n_classes=dataset.n_classes, scale=dataset.scale, pixel_max=dataset.pixel_max,
                  image_shape=dataset.image_shape)
    if sweep.eval.protocol == "holdout":
        return make_holdout(dataset.X, dataset.y, sweep.eval.validation, seed, device, **common)
    return make_folds(dataset.X, dataset.y, sweep.cv.folds, seed, device, **common)


def one_split(dataset: Dataset, device: torch.device | str = "cpu", *,
              score_on_test: bool) -> Folds:
    """Every training row to train on (scaled by their own statistics), scored on the test
    rows (``dropsweep test``) or on the training rows themselves (training on all the data):
    a :class:`Folds` of one split."""
    n = len(dataset.y)
    if score_on_test:
        X = np.concatenate([dataset.X, np.asarray(dataset.X_test)])
        y = np.concatenate([dataset.y, np.asarray(dataset.y_test)])
        split = (np.arange(n), np.arange(n, len(y)))
    else:
        X, y, split = dataset.X, dataset.y, (np.arange(n), np.arange(n))
    return _stack([split], X, y, device, dataset.n_classes, dataset.scale, dataset.pixel_max,
                  dataset.image_shape)


def split_ratio(folds: Folds) -> float:
    """n_test / n_train of the splits, for the Nadeau-Bengio correction: k-fold's 1/(k-1)
    (its definition; the folds' sizes differ by a row), a hold-out split's as measured."""
    if folds.k >= 2:
        return 1.0 / (folds.k - 1)
    return float(folds.n_test[0]) / float(folds.n_train[0])
