"""A whole Sonar search against the plain per-fold loop, per trial, side by side (issue 27).

dropsweep: ``dropsweep search sweeps/sonar.yaml`` for 64 trials with the random sampler (300
epochs, 10-fold CV, the sweep's own pruning and batching), timed as a whole process from
start to exit — imports, data, Optuna, storage and training all in — into a fresh SQLite
file. The plain loop: Brownlee's baseline written as a user would (one ``nn.Sequential``
per fold, ``torch.optim.SGD``, one fold after another, 300 epochs, 1 thread;
``benchmarks/trial_speed.py``'s ``plain_loop``), timed in this process. The two alternate
``--rounds`` times and the best of each is kept (load elsewhere on a shared machine only
ever slows a run); the ratio is the plain loop's seconds per trial over dropsweep's.

    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/sonar_end_to_end.py
    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/sonar_end_to_end.py --trials 8 --epochs 30

``--against DIR`` times the same search of another checkout's code (``git worktree add DIR
REV``) in the same alternation, as the paired baseline of a change. ``--ceiling`` adds what
the target asks of training: the epochs the search trained, their FLOPs at this machine's
FLOP bound (its 2048x2048 matmul), the time 100x the plain loop leaves the whole search, and
how close to the bound torch's own batched products of the network's shapes come.
"""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from trial_speed import matmul_gflops, plain_loop, trial_flops  # noqa: E402

from dropsweep.data.dataset import load_sonar  # noqa: E402

SWEEP = ROOT / "sweeps" / "sonar.yaml"


TRAINED: list[int] = []  # epochs trained by the last search timed (its trials' ``epochs``)


def search_seconds(trials: int, epochs: int, extra: list[str], code: Path | None = None
                   ) -> float:
    """Wall seconds of one whole ``dropsweep search`` process into a fresh storage (of the
    checkout ``code``, else of the installed dropsweep); the epochs its trials trained go to
    ``TRAINED``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "dropsweep", "search", str(SWEEP), "--trials", str(trials),
               "--set", "search.sampler=random", "--set", f"train.epochs={epochs}", "--quiet",
               "--storage", f"sqlite:///{tmp}/e2e.db", *extra]
        env = dict(os.environ)
        if env.get("DROPSWEEP_DATA_DIR"):  # relative to where the benchmark was started
            env["DROPSWEEP_DATA_DIR"] = str(Path(env["DROPSWEEP_DATA_DIR"]).resolve())
        if code is not None:
            env["PYTHONPATH"] = str(code.resolve())
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=tmp, env=env)
        seconds = time.perf_counter() - start
        with sqlite3.connect(f"{tmp}/e2e.db") as con:
            TRAINED[:] = [int(v) for (v,) in con.execute(
                "select value_json from trial_user_attributes where key = 'epochs'")]
        return seconds


def plain_seconds(epochs: int) -> float:
    """Seconds of one plain-loop trial (10 folds), on one thread as a user's script runs."""
    data = load_sonar()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        plain_loop(data.X, data.y, epochs, 0)
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def products_gflops(m: int, k: int, n: int, models: int = 160, seconds: float = 0.5) -> float:
    """torch's own batched product (``torch.bmm``) of ``models`` [m, k] @ [k, n] at once:
    the rate the network's shapes allow a library, with nothing else to do."""
    a, b = torch.randn(models, m, k), torch.randn(models, k, n)
    torch.bmm(a, b)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.bmm(a, b)
        done += 1
    return 2 * models * m * k * n * done / (time.perf_counter() - start) / 1e9


def ceiling(plain: float, trials: int, epochs: int) -> None:
    """What 100x the plain loop asks of the search's training, against the FLOP bound."""
    data = load_sonar()
    rows = len(data.y) * 9 / 10  # training rows of a fold, 10-fold CV
    sizes = [data.X.shape[1], 60, 30, 1]
    per_epoch = trial_flops(rows, 10, 1, sizes)
    trained = sum(TRAINED)
    gflops = matmul_gflops()
    bound = trained * per_epoch / (gflops * 1e9)
    budget = plain * trials / 100
    print(f"ceiling: {trained} trial-epochs trained (of {trials * epochs}) x "
          f"{per_epoch / 1e6:.1f} MFLOP = {trained * per_epoch / 1e12:.2f} TFLOP; at the "
          f"2048x2048 matmul's {gflops:.0f} GFLOP/s that is {bound:.2f} s (the FLOP bound)")
    print(f"  100x the plain loop leaves the whole search {budget:.2f} s = "
          f"{budget / bound:.2f}x the FLOP bound of its training, start-up and Optuna included")
    for m, k, n in ((16, 60, 64), (16, 64, 32), (60, 16, 64)):
        rate = products_gflops(m, k, n)
        print(f"  torch.bmm of 160 [{m}, {k}] @ [{k}, {n}] at once: {rate:.0f} GFLOP/s = "
              f"{gflops / rate:.2f}x the bound")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="alternate this often, best kept")
    parser.add_argument("--against", type=Path, default=None, metavar="DIR",
                        help="another checkout's code, timed in the same alternation")
    parser.add_argument("--ceiling", action="store_true",
                        help="also what 100x asks of training, against the FLOP bound")
    args, extra = parser.parse_known_args(argv)
    plain, search, before = math.inf, math.inf, math.inf
    for _ in range(args.rounds):
        plain = min(plain, plain_seconds(args.epochs))
        search = min(search, search_seconds(args.trials, args.epochs, extra))
        trained = list(TRAINED)
        if args.against is not None:
            before = min(before, search_seconds(args.trials, args.epochs, extra, args.against))
    per_trial = search / args.trials
    print(f"Sonar, {args.epochs} epochs, 10-fold CV; best of {args.rounds} alternating rounds, "
          f"{os.cpu_count()} cores")
    print(f"plain per-fold loop (1 thread): {plain:.2f} s a trial")
    print(f"dropsweep search, {args.trials} trials, random sampler, whole process: "
          f"{search:.1f} s = {per_trial:.3f} s a trial")
    print(f"ratio: {plain / per_trial:.1f}x the plain loop's trials per hour")
    figures = {"plain": plain, "search": search, "ratio": plain / per_trial}
    if args.against is not None:
        print(f"the same search, code of {args.against}: {before:.1f} s = "
              f"{plain / (before / args.trials):.1f}x the plain loop; this code "
              f"{before / search:.2f}x as fast")
        figures["against"] = before
    if args.ceiling:
        TRAINED[:] = trained  # this code's search's
        ceiling(plain, args.trials, args.epochs)
    return figures


if __name__ == "__main__":
    main()
