"""Seconds per Brownlee Sonar trial: the plain per-fold PyTorch loop against dropsweep.

The plain loop is the code a user would write (one ``nn.Sequential`` per fold,
``torch.optim.SGD``, one fold after the other); dropsweep trains all folds of a trial, and
then several trials, as one batched model, with either engine: batched torch ops (any
device) or the compiled CPU kernel (the default on a CPU). Everything runs here side by side
in one process, so the ratios are meaningful on a shared machine; the FLOP bound is what the
arithmetic alone would take at this machine's large-matmul speed.

    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/trial_speed.py
    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/trial_speed.py --quick   # 30 epochs
    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/trial_speed.py --quick --repeats 3  # best of 3
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from dropsweep.families.mlp import config as mlp_config
from dropsweep.sweep.space import Config
from dropsweep.data.dataset import load_sonar, standardize, stratified_folds
from dropsweep.study.runner import AUTO_BATCH
from dropsweep.families.mlp import kernel
from dropsweep.families.mlp.engine import TrainSettings, train_trials
from dropsweep.data.protocols import make_folds

PLACEMENTS = ("none", "input", "hidden", "both")


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


def sweep_like(n: int, seed: int = 0) -> list[Config]:
    """Configurations as a sweep draws them: every placement, max-norm on and off."""
    rng = np.random.default_rng(seed)
    return [mlp_config(PLACEMENTS[i % 4], float(rng.uniform(0.05, 0.5)),
                        float(rng.uniform(0.1, 0.7)), float(10 ** rng.uniform(-3, -0.5)),
                        float(rng.uniform(0.5, 0.99)), [None, 3.0][(i // 4) % 2])
            for i in range(n)]


def per_trial(run: Callable[[], object], trials: int, repeats: int = 1) -> float:
    """Seconds a trial, the best of ``repeats`` runs (load elsewhere only ever slows one)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / trials


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def print_ratios(rows: list[tuple[str, float]], bound: float, unit: str = "s/trial",
                 width: int = 40, digits: int = 1) -> None:
    """Each path's seconds, against the first row (the plain loop) and the FLOP bound."""
    plain = rows[0][1]
    print(f"\n{'path':{width}} {unit:>8} {'vs plain':>9} {'vs FLOP bound':>14}")
    for name, seconds in rows:
        print(f"{name:{width}} {seconds:8.3f} {plain / seconds:8.{digits}f}x "
              f"{seconds / bound:13.1f}x")


def trial_flops(rows_per_fold: float, folds: int, epochs: int, sizes: list[int]) -> float:
    """Forward, weight gradients and input gradients (none for the first layer)."""
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    per_row = 2 * (2 * sum(macs) + sum(macs[1:]))
    return per_row * rows_per_fold * folds * epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="30 epochs, smaller batches")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=1,
                        help="time every row of the table (and the matmul) this often, best kept")
    args = parser.parse_args()
    epochs = 30 if args.quick else args.epochs
    torch.set_num_threads(args.threads)

    data = load_sonar()
    X, y = data.X, data.y
    folds = make_folds(X, y, 10, 7)
    settings = TrainSettings(epochs=epochs)
    baseline = mlp_config("none", 0.0, 0.0, 0.01, 0.8, None)
    print(f"Brownlee Sonar trials: 10 folds x {epochs} epochs, batch 16, torch "
          f"{torch.__version__}, {args.threads} thread(s)")

    def batched(b: int, engine: str, threads: int = args.threads,
                configs: list[Config] | None = None) -> float:
        torch.set_num_threads(threads)
        try:
            s = dataclasses.replace(settings, engine=engine)
            return per_trial(lambda: train_trials(configs or sweep_like(b), folds, s, 0), b,
                             args.repeats)
        finally:
            torch.set_num_threads(args.threads)

    train_trials(sweep_like(1), folds, TrainSettings(epochs=1), 0)  # build the kernel first
    rows: list[tuple[str, float]] = []
    rows.append(("plain per-fold PyTorch loop (baseline)",
                 per_trial(lambda: plain_loop(X, y, epochs, 0), 1, args.repeats)))
    for engine in ("torch", "c"):
        rows.append((f"{engine}: batch 1, baseline (folds batched)",
                     batched(1, engine, configs=[baseline])))
        rows.append((f"{engine}: batch 1, sweep-like trial", batched(1, engine)))
        for b in (8, 16, 32, 64) if not args.quick else (8, 32):
            auto = " (automatic)" if b == AUTO_BATCH else ""
            rows.append((f"{engine}: {b} trials batched{auto}", batched(b, engine)))
    if args.threads != 1:
        rows.append((f"c: {AUTO_BATCH} trials batched, 1 thread", batched(AUTO_BATCH, "c", 1)))
    chosen = kernel.tile_choices()  # by timing, in the rows above
    for plan in kernel.tile_plans():  # each of the kernel's tile plans, forced
        kernel.use_tiles(plan)
        rows.append((f"c: {AUTO_BATCH} trials batched, {plan} tiles",
                     batched(AUTO_BATCH, "c")))
    kernel.use_tiles(None)

    gflops = max(matmul_gflops() for _ in range(args.repeats))
    flops = trial_flops(float(folds.n_train.float().mean()), 10, epochs, [60, 60, 30, 1])
    bound = flops / (gflops * 1e9)
    print_ratios(rows, bound)
    print("\nTile plans chosen (by timing, or remembered from an earlier run; layer sizes, "
          "minibatch, threads, 8-bit): "
          + (", ".join(f"{key}: {plan}" for key, plan in chosen.items()) or "none yet"))
    print(f"\nFLOP bound: {flops / 1e9:.2f} GFLOP per trial at {gflops:.0f} GFLOP/s "
          f"(2048x2048 fp32 matmul here) = {bound:.3f} s/trial")

    print("\nScaling (default engine, trial batch 8, sweep-like, s/trial):")
    short = TrainSettings(epochs=max(epochs // 10, 5))
    for e in (short.epochs, short.epochs * 2, short.epochs * 4):
        t = per_trial(lambda e=e: train_trials(sweep_like(8), folds, TrainSettings(epochs=e),
                                               0), 8)
        print(f"  epochs {e:6d}: {t:.3f}")
    rng = np.random.default_rng(1)
    for n in (200, 2000, 20000):
        Xs = rng.random((n, 60), dtype=np.float32)
        ys = (Xs[:, :5].sum(1) > 2.5).astype(np.int64)
        f = make_folds(Xs, ys, 10, 7)
        t = per_trial(lambda f=f: train_trials(sweep_like(8), f, TrainSettings(epochs=3), 0), 8)
        print(f"  rows {n:8d} (3 epochs): {t:.3f}")
    for width in (30, 60, 120, 240):
        s = TrainSettings(hidden=(width, width // 2), epochs=short.epochs)
        t = per_trial(lambda s=s: train_trials(sweep_like(8), folds, s, 0), 8)
        print(f"  hidden [{width}, {width // 2}] ({short.epochs} epochs): {t:.3f}")


if __name__ == "__main__":
    main()
