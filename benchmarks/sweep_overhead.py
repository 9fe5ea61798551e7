"""The time a ``dropsweep search`` spends not training, and how it grows with the study.

Two sweeps of ``sweeps/sonar.yaml`` run here as ``dropsweep search`` commands, each into a
fresh SQLite storage, one after the other in this one run:

(a) 200 trials at the sweep's epochs: the command's wall-clock (start-up included) against
    its training time alone;
(b) 1,000 trials at 10 epochs: the time not training, per trial, in a window of trials
    around trial 100 and in the last window (around trial 1,000), and their ratio.

Training time is measured inside the same command, at the same moment, so the ratios hold
on a shared machine whose speed drifts: the command runs with the MLP engine's ``train_trials``
wrapped in a stopwatch that leaves out the checkpoint callback (its storage writes and
pruning decisions are not training). A batch's cycle runs from the start of its training to
the start of the next batch's; its time not training is the cycle minus its training.

    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/sweep_overhead.py
    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/sweep_overhead.py \\
        --trials 48 --epochs 30 --scale-trials 240 --window 32          # a quick run
    ... --before DIR    # also the dropsweep package in DIR, first, side by side (say, main's)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "sweeps" / "sonar.yaml"

# Run in the command's process: `dropsweep search ARGS`, training timed batch by batch.
DRIVER = """
import json, os, sys, time
import dropsweep.study.runner as runner
try:  # the MLP family's engine (since model families), else the runner's import of it
    import dropsweep.families.mlp.engine as engine
except ImportError:
    engine = runner
real, batches = engine.train_trials, []

def timed(configs, folds, settings, seed, on_checkpoint=None, **kwargs):
    hooked = [0.0]
    def hook(epoch, accuracies):
        start = time.perf_counter()
        try:
            return on_checkpoint(epoch, accuracies)
        finally:
            hooked[0] += time.perf_counter() - start
    start = time.perf_counter()
    try:
        return real(configs, folds, settings, seed, **kwargs,
                    on_checkpoint=None if on_checkpoint is None else hook)
    finally:
        batches.append((start, time.perf_counter() - start - hooked[0], len(configs)))

engine.train_trials = timed

# The sampler's own computation (TPE's ask), timed where it is called.
import optuna
sampled = []
def stopwatch(real):
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            sampled.append((start, time.perf_counter() - start))
    return call
for name in ("infer_relative_search_space", "sample_relative", "sample_independent"):
    setattr(optuna.samplers.TPESampler, name,
            stopwatch(getattr(optuna.samplers.TPESampler, name)))
from dropsweep.cli import main
try:
    main(sys.argv[2:], prog_name="dropsweep")
finally:
    with open(sys.argv[1], "w") as out:
        json.dump({"batches": batches, "sampled": sampled, "end": time.perf_counter()}, out)
"""


def run_sweep(code: Path, tmp: Path, trials: int, overrides: list[str], extra: list[str]
              ) -> tuple[float, list[tuple[float, float, int]], float, list[tuple[float, float]]]:
    """``dropsweep search`` with ``code`` on the path: its wall-clock, and per batch (start,
    seconds training, trials), when it ended (the batches' clock), and each call of the TPE
    sampler's (start, seconds)."""
    env = dict(os.environ, PYTHONPATH=str(code))
    if "DROPSWEEP_DATA_DIR" in env:  # the command runs in `tmp`: a relative path would move
        env["DROPSWEEP_DATA_DIR"] = str(Path(env["DROPSWEEP_DATA_DIR"]).resolve())
    sets = [arg for value in overrides for arg in ("--set", value)]
    timing = tmp / "timing.json"
    # The same experiment in words older code reads too: `model.family` came with families
    # (mlp is what a sweep without it means).
    sweep = tmp / SWEEP.name
    sweep.write_text("".join(line for line in SWEEP.read_text().splitlines(keepends=True)
                             if line.strip() != "family: mlp"))
    cmd = [sys.executable, "-c", DRIVER, str(timing), "search", str(sweep), "--trials",
           str(trials), "--storage", f"sqlite:///{tmp}/bench.db", "--quiet", *sets, *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env, cwd=tmp)
    wall = time.perf_counter() - start
    data = json.loads(timing.read_text())
    return (wall, [tuple(b) for b in data["batches"]], data["end"],
            [tuple(c) for c in data["sampled"]])


def window(batches: list[tuple[float, float, int]], end: float, lo: int, hi: int,
           sampled: list[tuple[float, float]]) -> tuple[int, int, float, float, float]:
    """Over the batches whose first trial is in [lo, hi): (first trial, trials, seconds per
    trial in all, of which not training, of which the sampler's computation). Trial numbers
    follow the batches (one worker); a batch's cycle runs from the start of its training to
    the next's, so it holds the next batch's asks."""
    first, picked = 0, []
    for i, (start, train, n) in enumerate(batches):
        if lo <= first < hi:
            stop = batches[i + 1][0] if i + 1 < len(batches) else end
            sampler = sum(dt for at, dt in sampled if start <= at < stop)
            picked.append((first, n, stop - start, train, sampler))
        first += n
    trials = sum(p[1] for p in picked)
    cycle = sum(p[2] for p in picked)
    return (picked[0][0], trials, cycle / trials, (cycle - sum(p[3] for p in picked)) / trials,
            sum(p[4] for p in picked) / trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="(a): trials")
    parser.add_argument("--epochs", type=int, help="(a): epochs (default: the sweep's)")
    parser.add_argument("--scale-trials", type=int, default=1000, help="(b): trials")
    parser.add_argument("--scale-epochs", type=int, default=10, help="(b): epochs")
    parser.add_argument("--window", type=int, default=64,
                        help="(b): trials per window, around trial N/10 and at the end")
    parser.add_argument("--parts", default="a,b", help="a, b or a,b")
    parser.add_argument("--before", type=Path, action="append", default=[],
                        help="also run the package in this directory, first; repeatable")
    args, extra = parser.parse_known_args()
    parts = set(args.parts.split(","))
    a_over = [] if args.epochs is None else [f"train.epochs={args.epochs}"]
    b_over = [f"train.epochs={args.scale_epochs}"]

    print(f"dropsweep search {SWEEP.name} on {os.cpu_count()} cores"
          f"{', ' + ' '.join(extra) if extra else ''}")
    for code in [*args.before, REPO]:
        name = "this tree" if code == REPO else str(code)
        if "a" in parts:
            with tempfile.TemporaryDirectory() as tmp:
                wall, batches, _, _ = run_sweep(code, Path(tmp), args.trials, a_over, extra)
            train = sum(b[1] for b in batches)
            print(f"[{name}] (a) {args.trials} trials, {args.epochs or 'default'} epochs: "
                  f"wall-clock {wall:.1f} s, training {train:.1f} s: {wall / train:.2f}x "
                  f"(not training: {(wall - train) / args.trials * 1e3:.0f} ms/trial)")
        if "b" in parts:
            with tempfile.TemporaryDirectory() as tmp:
                wall, batches, end, sampled = run_sweep(code, Path(tmp), args.scale_trials,
                                                        b_over, extra)
            n, half = args.scale_trials, args.window // 2
            f1, n1, s1, o1, t1 = window(batches, end, n // 10 - half, n // 10 + half, sampled)
            f2, n2, s2, o2, t2 = window(batches, end, n - 2 * half, n, sampled)
            train = sum(b[1] for b in batches)
            print(f"[{name}] (b) {n} trials, {args.scale_epochs} epochs (wall-clock "
                  f"{wall:.1f} s, training {train:.1f} s): not training "
                  f"{o1 * 1e3:.1f} ms/trial at trials {f1}-{f1 + n1 - 1} (of "
                  f"{s1 * 1e3:.1f} ms/trial), {o2 * 1e3:.1f} ms/trial at {f2}-{f2 + n2 - 1} "
                  f"(of {s2 * 1e3:.1f}): {o2 / o1:.2f}x; of which TPE's own computation "
                  f"{t1 * 1e3:.1f} and {t2 * 1e3:.1f} ms/trial; the rest {(o1 - t1) * 1e3:.1f} "
                  f"and {(o2 - t2) * 1e3:.1f}: {(o2 - t2) / (o1 - t1):.2f}x")
    print("command: " + " ".join(["python", "benchmarks/sweep_overhead.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
