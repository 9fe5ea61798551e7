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
REV``) in the same alternation, as the paired baseline of a change.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from trial_speed import plain_loop  # noqa: E402

from dropsweep.data.dataset import load_sonar  # noqa: E402

SWEEP = ROOT / "sweeps" / "sonar.yaml"


def search_seconds(trials: int, epochs: int, extra: list[str], code: Path | None = None
                   ) -> float:
    """Wall seconds of one whole ``dropsweep search`` process into a fresh storage (of the
    checkout ``code``, else of the installed dropsweep)."""
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
        return time.perf_counter() - start


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


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="alternate this often, best kept")
    parser.add_argument("--against", type=Path, default=None, metavar="DIR",
                        help="another checkout's code, timed in the same alternation")
    args, extra = parser.parse_known_args(argv)
    plain, search, before = math.inf, math.inf, math.inf
    for _ in range(args.rounds):
        plain = min(plain, plain_seconds(args.epochs))
        search = min(search, search_seconds(args.trials, args.epochs, extra))
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
    return figures


if __name__ == "__main__":
    main()
