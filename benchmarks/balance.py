"""Balanced against unbalanced placement budgets (``search.balance``), over search seeds.

Two experiments, each running the same Sonar sweep once per seed with ``search.balance: none``
and once with ``placement``, into one SQLite file (kept with ``--storage`` to report on):

``bias``: every placement has the same true accuracy: the dropout rates are fixed at 0, so
the placements differ only in name (100 trials of 100 epochs; each seed its own fold
splits, ``cv.seed`` = 7 + seed). Is the best-of table's top
placement simply the one the sampler gave most trials? And does balanced search plus
``confirm --per-placement`` (3 x 10-fold on new splits, Holm over the pairs) still single a
placement out?

``default``: the real ``sweeps/sonar.yaml`` (200 trials): which finds the better overall best,
confirmed on new splits (``confirm --top 1``, 5 x 10-fold, the same splits for both)? It
decides whether the example sweep balances by default.

    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/balance.py bias --seeds 0-9
    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/balance.py default --seeds 0-4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dropsweep.sweep.config import build_sweep
from dropsweep.study.confirm import run_confirm
from dropsweep.data.dataset import load_dataset
from dropsweep.answers.report import build_report
from dropsweep.study.runner import run_search
from dropsweep.storage.open import heartbeat_seconds, load_study, open_storage
from dropsweep.sweep.file import apply_overrides, load_sweep
from dropsweep.answers.verdict import build_confirmation

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "sonar.yaml"
MODES = ("none", "placement")
EXPERIMENTS = {
    # placements that differ only in name: dropout at rate 0 wherever it is placed
    "bias": ["search.trials=100", "train.epochs=100", "space.input_rate=0",
             "space.hidden_rate=0"],
    "default": [],
}


@dataclass
class Run:
    """One study of one seed and mode, read back."""

    seed: int
    mode: str
    budgets: dict[str, tuple[int, int]]  # placement -> (complete, pruned)
    best_of: list[tuple[str, float]]  # (placement, its best search value), best first
    best_number: int
    best_placement: str
    best_value: float
    confirmed_best: float | None = None  # `default`: the overall best, confirmed
    confirmed: list[tuple[str, float]] | None = None  # `bias`: each placement's best, confirmed
    significant: list[str] | None = None  # `bias`: pairs significant after Holm
    seconds: float = 0.0


def run_one(url: str, experiment: str, seed: int, mode: str, extra: list[str]) -> Run:
    name = f"{experiment}-seed{seed}-{mode}"
    # `bias`: each seed its own fold splits too (cv.seed), so that the seeds' confirmations,
    # which split by cv.seed, are independent replications; `default` keeps sonar.yaml's
    splits = [f"cv.seed={7 + seed}"] if experiment == "bias" else []
    sweep = build_sweep(apply_overrides(load_sweep(str(SWEEP)), [
        *EXPERIMENTS[experiment], *splits, f"search.seed={seed}", f"search.balance={mode}",
        f"name={name}", *extra]))
    dataset = load_dataset(sweep)
    start = time.perf_counter()
    run_search(sweep, dataset, storage_url=url, device="cpu", batch=16)
    store = open_storage(url, heartbeat=heartbeat_seconds())
    study = load_study(store, name, url)
    report = build_report(study)
    top = report.best
    run = Run(seed, mode, budgets=budgets(study),
              best_of=sorted(((p.placement, p.best.value) for p in report.placements
                              if p.best is not None), key=lambda pv: -pv[1]),
              best_number=top.number, best_placement=str(top.params["placement"]),
              best_value=top.value)
    if experiment == "default":
        summary = run_confirm(study, dataset, top=1, repeats=5, device="cpu")
        conf = build_confirmation(load_study(store, summary.study_name, url), sweep.cv.folds)
        row = next(r for r in conf.rows if r.source_trial == top.number)
        run.confirmed_best = row.accuracy.mean
    else:
        summary = run_confirm(study, dataset, repeats=3, device="cpu", per_placement=True)
        conf = build_confirmation(load_study(store, summary.study_name, url), sweep.cv.folds)
        per = conf.per_placement
        assert per is not None
        run.confirmed = sorted(((p, r.accuracy.mean) for p, r in per.placements.items()),
                               key=lambda pv: -pv[1])
        run.significant = [f"{pair.ahead.placement}>{pair.behind.placement}"
                           for pair in per.pairs if pair.significant]
    run.seconds = time.perf_counter() - start
    return run


def budgets(study) -> dict[str, tuple[int, int]]:
    """Complete and pruned trials of each placement."""
    out: dict[str, list[int]] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state.name in ("COMPLETE", "PRUNED"):
            row = out.setdefault(t.params["placement"], [0, 0])
            row[t.state.name == "PRUNED"] += 1
    return {p: (c, x) for p, (c, x) in out.items()}


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


PLACEMENTS = ("none", "input", "hidden", "both")


def head(run: Run | None) -> str:
    """The first columns of a row (the header's, without a run): seed, mode, budgets."""
    if run is None:
        return f"{'seed':>4} {'balance':>9}  {'complete (pruned) ' + '/'.join(PLACEMENTS):<44}"
    budgets = " / ".join(f"{run.budgets.get(p, (0, 0))[0]} ({run.budgets.get(p, (0, 0))[1]})"
                         for p in PLACEMENTS)
    return f"{run.seed:>4} {run.mode:>9}  {budgets:<44}"


def show_bias(runs: list[Run]) -> None:
    print(f"{head(None)} {'best-of order':<34} {'confirmed order':<34} significant")
    for r in runs:
        order = " ".join(f"{p}:{v * 100:.1f}" for p, v in r.best_of)
        confirmed = " ".join(f"{p}:{v * 100:.1f}" for p, v in r.confirmed or [])
        print(f"{head(r)} {order:<34} {confirmed:<34} "
              f"{', '.join(r.significant or []) or '-'}")
    print()
    for mode in MODES:
        of = [r for r in runs if r.mode == mode]
        most = sum(all(r.budgets[r.best_of[0][0]][0] > c for p, (c, _) in r.budgets.items()
                       if p != r.best_of[0][0]) for r in of)  # strictly the most
        share = statistics.mean(r.budgets[r.best_of[0][0]][0] / sum(c for c, _ in r.budgets.values())
                                for r in of)
        tops = {p: sum(r.best_of[0][0] == p for r in of) for p in PLACEMENTS}
        ctops = {p: sum(r.confirmed[0][0] == p for r in of) for p in tops}
        sig = sum(bool(r.significant) for r in of)
        print(f"balance {mode}: the best-of table's top placement had strictly the most complete trials "
              f"in {most} of {len(of)} seeds; it held {share:.0%} of the complete trials on "
              f"average; tops {tops}; confirmed tops {ctops}; a significant difference "
              f"(Holm, 5%) in {sig} of {len(of)} seeds")


def show_default(runs: list[Run]) -> None:
    print(f"{head(None)} {'best':>6} {'placement':>9} {'search':>7} {'confirmed':>9}")
    for r in runs:
        print(f"{head(r)} {'#' + str(r.best_number):>6} "
              f"{r.best_placement:>9} {r.best_value * 100:6.2f}% {r.confirmed_best * 100:8.2f}%")
    print()
    by = {(r.seed, r.mode): r for r in runs}
    seeds = sorted({r.seed for r in runs})
    diffs = [by[s, "placement"].confirmed_best - by[s, "none"].confirmed_best for s in seeds]
    for mode in MODES:
        values = [by[s, mode].confirmed_best for s in seeds]
        print(f"balance {mode}: confirmed overall best, mean {statistics.mean(values) * 100:.2f}% "
              f"(min {min(values) * 100:.2f}, max {max(values) * 100:.2f}) over {len(seeds)} seeds")
    print(f"balanced - unbalanced, seed by seed: "
          + ", ".join(f"{d * 100:+.2f}" for d in diffs)
          + f" points; mean {statistics.mean(diffs) * 100:+.2f}; balanced ahead in "
          f"{sum(d > 0 for d in diffs)} of {len(diffs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=tuple(EXPERIMENTS))
    parser.add_argument("--seeds", default="0-4", help="e.g. 0-9 or 0,3,5")
    parser.add_argument("--storage", help="SQLite URL to keep the studies (default: temporary)")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="another sweep override, e.g. search.trials=60")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        url = args.storage or f"sqlite:///{tmp}/balance.db"
        runs = []
        for seed in seeds_of(args.seeds):
            for mode in MODES:
                runs.append(run_one(url, args.experiment, seed, mode, args.extra))
                r = runs[-1]
                print(f"seed {seed} balance {mode}: {r.seconds:.0f} s", file=sys.stderr,
                      flush=True)
        print(f"{args.experiment}: {SWEEP.name} {' '.join(EXPERIMENTS[args.experiment] + args.extra)}"
              f"; seeds {args.seeds}")
        (show_bias if args.experiment == "bias" else show_default)(runs)


if __name__ == "__main__":
    main()
