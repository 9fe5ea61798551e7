"""Wall-clock time of a whole ``dropsweep search`` for several worker/thread layouts.

Each layout runs the same sweep into a fresh SQLite storage, one after another in this one
run, so the ratios are comparable on a shared machine. The fastest layout on this machine
sets the defaults (README, "Speed").

    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/sweep_speed.py
    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/sweep_speed.py --trials 60 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "sonar.yaml"


def run(workers: int, threads: int, trials: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "dropsweep", "search", str(SWEEP), "--trials", str(trials),
               "--workers", str(workers), "--threads", str(threads), "--quiet",
               "--storage", f"sqlite:///{tmp}/bench.db", *extra]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=os.environ)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the layouts this often")
    parser.add_argument("--layouts", default="1x2,2x1,1x1,4x1",
                        help="workers x threads, comma-separated")
    args, extra = parser.parse_known_args()
    layouts = [tuple(int(v) for v in item.split("x")) for item in args.layouts.split(",")]
    times: dict[tuple[int, ...], list[float]] = {layout: [] for layout in layouts}
    for _ in range(args.rounds):
        for workers, threads in layouts:
            times[(workers, threads)].append(run(workers, threads, args.trials, extra))
    first = min(times[layouts[0]])
    print(f"dropsweep search {SWEEP.name}, {args.trials} trials, best of {args.rounds} "
          f"(alternating), on {os.cpu_count()} cores")
    print(f"{'workers x threads':>18} {'wall s':>8} {'vs ' + args.layouts.split(',')[0]:>10}")
    for (workers, threads), values in times.items():
        best = min(values)
        print(f"{workers:>8} x {threads:<7} {best:8.1f} {first / best:9.2f}x")


if __name__ == "__main__":
    main()
