"""Seconds per Brownlee Sonar trial: the plain per-fold PyTorch loop against dropsweep.

The plain loop is the code a user would write (one ``nn.Sequential`` per fold, ``torch.optim.SGD``,
one fold after the other); dropsweep trains all folds as one batched model. Both run here side
by side, in one process, so their ratio is meaningful on a shared machine.

    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/trial_speed.py --epochs 300 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from dropsweep.config import TrialConfig
from dropsweep.data import load_sonar, standardize, stratified_folds
from dropsweep.trainer import TrainSettings, make_folds, train_trials

BASELINE = TrialConfig("none", 0.0, 0.0, 0.01, 0.8, None)


def plain_loop(X: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> float:
    """Brownlee's baseline the obvious way: one model per fold, one fold at a time."""
    torch.manual_seed(seed)
    accs = []
    for train_idx, test_idx in stratified_folds(y, 10, 7):
        x_tr, x_te = (torch.from_numpy(a) for a in standardize(X[train_idx], X[test_idx]))
        y_tr = torch.from_numpy(y[train_idx]).float()
        y_te = torch.from_numpy(y[test_idx])
        model = nn.Sequential(nn.Linear(60, 60), nn.ReLU(), nn.Linear(60, 30), nn.ReLU(),
                              nn.Linear(30, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.8)
        loss_fn = nn.BCEWithLogitsLoss()
        for _ in range(epochs):
            perm = torch.randperm(len(x_tr))
            for i in range(0, len(x_tr), 16):
                rows = perm[i:i + 16]
                opt.zero_grad()
                loss_fn(model(x_tr[rows]).squeeze(-1), y_tr[rows]).backward()
                opt.step()
        with torch.no_grad():
            accs.append(float(((model(x_te).squeeze(-1) > 0).long() == y_te).float().mean()))
    return float(np.mean(accs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    data = load_sonar()
    X, y = data.X, data.y
    folds = make_folds(X, y, 10, 7)
    settings = TrainSettings(epochs=args.epochs)
    times: dict[str, list[float]] = {"plain per-fold loop": [], "dropsweep (folds batched)": []}
    for r in range(args.repeats):
        start = time.perf_counter()
        plain_loop(X, y, args.epochs, r)
        times["plain per-fold loop"].append(time.perf_counter() - start)
        start = time.perf_counter()
        train_trials([BASELINE], folds, settings, seed=r)
        times["dropsweep (folds batched)"].append(time.perf_counter() - start)

    plain = statistics.median(times["plain per-fold loop"])
    print(f"Brownlee baseline, 10 folds x {args.epochs} epochs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'path':28} {'s/trial':>8} {'vs plain':>9}")
    for name, values in times.items():
        t = statistics.median(values)
        print(f"{name:28} {t:8.2f} {plain / t:8.1f}x")


if __name__ == "__main__":
    main()
