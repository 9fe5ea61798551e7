"""What the rows' fingerprint costs a command: once per search, resume, confirm, test or export.

A study records a SHA-256 of the rows it searched (data.rows_record) and every later command
hashes the rows it loaded again to compare. This times that hash beside the load it follows,
on scikit-learn's digits (the bundled set) and on a CIFAR-10-sized array (50,000 x 32x32x3
uint8, random pixels) read from an .npz through dropsweep's own reader; both in one process,
so the ratio is meaningful on a shared machine.

    python benchmarks/row_fingerprint.py [--repeats 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dropsweep.sweep.config import build_sweep
from dropsweep.data.dataset import load_dataset, rows_record
from dropsweep.sweep.file import RawSweep


def best_of(repeats: int, run: Callable[[], object]) -> tuple[float, object]:
    """The fastest of ``repeats`` runs (the others met a busier machine), and its result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(label: str, data: dict, repeats: int) -> None:
    sweep = build_sweep(RawSweep(data={"data": data, "eval": {"protocol": "holdout",
                                                               "test": "none"}}, file=""))
    load, dataset = best_of(repeats, lambda: load_dataset(sweep))
    hashed, _ = best_of(repeats, lambda: rows_record(dataset))
    size = dataset.X.nbytes + dataset.y.nbytes
    print(f"{label:<34} {size / 2**20:8.1f} MiB   load {load * 1e3:9.1f} ms   "
          f"fingerprint {hashed * 1e3:8.1f} ms   ({hashed / load:.1%} of the load; "
          f"{size / hashed / 2**20:6.0f} MiB/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the CIFAR-sized .npz is written")
    args = parser.parse_args()
    measure("digits (1,797 x 8x8)", {"dataset": "digits"}, args.repeats)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "cifar-sized.npz"
        rng = np.random.default_rng(0)
        np.savez(path, x=rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8),
                 y=rng.integers(0, 10, 50_000))
        measure("CIFAR-10-sized .npz (50,000 x 3,072)", {"npz": str(path)}, args.repeats)


if __name__ == "__main__":
    main()
