"""The generic sections of a sweep (``data``, ``train``, ``cv``, ``eval``, ``search``):
frozen dataclasses and their defaults, each with the reason for it.

They live apart from :mod:`dropsweep.sweep.config` (which validates them and assembles the
whole :class:`~dropsweep.sweep.config.Sweep`) so that what reads one section — the data
readers, a family's engine — imports the section, never the sweep.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataConfig:
    """Where the rows come from: a built-in set (Sonar, or an image set), any numeric CSV, or
    the user's own arrays (``.npz``)."""

    dataset: str | None = "sonar"  # Brownlee's experiment
    csv: str | None = None  # a path; relative paths are resolved against the sweep file
    target: str | int | None = None  # column name or index; None = last column
    npz: str | None = None  # arrays x, y (and x_test, y_test); relative like csv
    # unit: pixels / their maximum (255 for 8-bit images), the articles' way; standard: each
    # feature to mean 0, sd 1 with the training rows' statistics only; none. None: the data's
    # own default, unit for images and standard for tables
    scale: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 300  # Brownlee
    batch_size: int = 16  # Brownlee
    eval_every: int = 10  # epochs between held-out checkpoints: pruning and learning curves


@dataclass(frozen=True)
class CVConfig:
    folds: int = 10  # Brownlee: 10-fold stratified
    seed: int = 7  # Brownlee's seed; the fold split depends only on it


@dataclass(frozen=True)
class EvalConfig:
    """How a trial is scored. kfold: the ``cv`` section (Brownlee's 10-fold). holdout: one
    stratified validation split of the training rows (seeded by ``cv.seed``): k-fold of
    60,000 images is ten times the work for an answer that size does not need."""

    protocol: str = "kfold"
    validation: float = 0.1  # holdout: the fraction of the training rows that scores a trial
    # the rows no search, confirmation or pruner sees: "official" (the data set's own test
    # split), a fraction held back (stratified, seeded), or "none"; None: official where the
    # data has one, else none
    test: str | float | None = None


PROTOCOLS = ("kfold", "holdout")


@dataclass(frozen=True)
class SearchConfig:
    trials: int = 100  # total finished trials in the study, baseline included
    sampler: str = "tpe"  # multivariate TPE handles the conditional space
    seed: int = 0
    pruner: str = "median"
    # "placement": every placement an equal share of the trials, each searched on its own
    # (dropsweep.study.balance); "none": the sampler spends them where it likes
    balance: str = "none"


SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("median", "none")
BALANCES = ("none", "placement")
