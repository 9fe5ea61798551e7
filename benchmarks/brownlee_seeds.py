"""Brownlee's three configurations over many search seeds: the reproduction with its noise.

One 10-fold run of a configuration depends on the seed (initial weights, dropout masks, row
order) by about as much as the differences the article reports, so one run at one seed says
little beside the article's single numbers. This trains ``sweeps/brownlee.yaml`` once per
seed, exactly as

    dropsweep search sweeps/brownlee.yaml --set search.seed=S

does (``run_search`` itself, a fresh study per seed in a temporary SQLite file; the folds
depend only on ``cv.seed``, so every seed sees the same ones), and prints per configuration
the article's number beside the mean ± SD over seeds, the range and where one seed falls,
then every seed's value so that the figures can be checked.

    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/brownlee_seeds.py
    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/brownlee_seeds.py --engine torch --seeds 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dropsweep.sweep.space import Config

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "brownlee.yaml"

# Brownlee, "Dropout Regularization in Deep Learning Models With Keras": one run of each
# configuration, 10-fold stratified CV, percent.
ARTICLE = {
    ("none", 0.0, 0.0, 0.01, 0.8, None): 86.04,
    ("input", 0.2, 0.0, 0.1, 0.9, 3.0): 83.52,
    ("hidden", 0.0, 0.2, 0.1, 0.9, 3.0): 83.59,
}


@dataclass
class Row:
    """One configuration: its 10-fold mean (percent) and fold SD at each seed."""

    label: str
    placement: str
    article: float | None
    means: list[float | None] = field(default_factory=list)
    fold_sds: list[float | None] = field(default_factory=list)

    def values(self) -> list[float]:
        return [v for v in self.means if v is not None]


def label(c: Config, baseline: bool) -> str:
    """The README's names: 'hidden dropout 0.2, max-norm 3, lr 0.1, momentum 0.9'."""
    parts = {"none": ["no dropout"],
             "input": [f"input (visible) dropout {c['input_rate']:g}"],
             "hidden": [f"hidden dropout {c['hidden_rate']:g}"],
             "both": [f"input dropout {c['input_rate']:g}", f"hidden dropout {c['hidden_rate']:g}"],
             }[c["placement"]]
    if c["max_norm"] is not None:
        parts.append(f"max-norm {c['max_norm']:g}")
    parts += [f"lr {c['learning_rate']:g}", f"momentum {c['momentum']:g}"]
    return ("baseline: " if baseline else "") + ", ".join(parts)


def rank(values: list[float | None], i: int) -> str:
    """Where seed number i falls among all seeds: 1 is the highest."""
    v = values[i]
    if v is None:
        return "failed"
    others = [w for w in values if w is not None]
    above = sum(w > v for w in others)
    ties = sum(w == v for w in others) - 1
    tied = f", tied with {ties}" if ties else ""
    where = (", the highest" if above == 0 else ", the lowest"
             if above + ties + 1 == len(others) else "")
    return f"rank {above + 1} of {len(others)}{tied}{where}"


def command(sweep_arg: str, overrides: list[str], seed: int | str) -> str:
    sets = "".join(f" --set {o}" for o in overrides)
    return f"dropsweep search {sweep_arg}{sets} --set search.seed={seed}"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=30, metavar="N",
                        help="how many search seeds: FIRST .. FIRST+N-1 (default 30)")
    parser.add_argument("--first-seed", type=int, default=0, metavar="FIRST")
    parser.add_argument("--epochs", type=int, help="train.epochs (default: the sweep's, 300)")
    parser.add_argument("--folds", type=int, help="cv.folds (default: the sweep's, 10)")
    parser.add_argument("--engine", choices=("auto", "c", "torch"), default="auto",
                        help="c: the CPU kernel; torch: as DROPSWEEP_KERNEL=torch; auto: "
                             "what dropsweep search picks (the kernel where it builds)")
    parser.add_argument("--batch", type=int, help="as dropsweep search --batch (default: auto)")
    parser.add_argument("--sweep", default=str(SWEEP), help="default: sweeps/brownlee.yaml")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    if args.engine == "torch":
        os.environ["DROPSWEEP_KERNEL"] = "torch"  # before anything loads the kernel
    import optuna
    import torch

    from dropsweep import records
    from dropsweep.sweep.config import build_sweep
    from dropsweep.data.dataset import check_folds, load_dataset
    from dropsweep.train.devices import resolve_device
    from dropsweep.families.mlp import kernel
    from dropsweep.families.mlp.engine import use_kernel
    from dropsweep.study.runner import AUTO_BATCH, run_search
    from dropsweep.sweep.space import planned_configs
    from dropsweep.sweep.file import apply_overrides, load_sweep

    overrides = []
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.folds is not None:
        overrides.append(f"cv.folds={args.folds}")
    base = build_sweep(apply_overrides(load_sweep(args.sweep), overrides))
    dataset = load_dataset(base)
    check_folds(dataset, base)
    device = resolve_device("auto")  # as dropsweep search's default --device
    uses_kernel = kernel.applies(device)
    if args.engine == "c" and not uses_kernel:
        try:
            use_kernel("c", device)  # says why it cannot
        except RuntimeError as exc:
            sys.exit(str(exc))
    engine = "c" if uses_kernel else f"torch ({device.type})"

    configs: list[Config] = planned_configs(base)
    # the article's numbers only beside the article's set-up
    articles = (base.cv.folds, base.train.epochs, base.train.batch_size,
                tuple(base.model.hidden)) == (10, 300, 16, (60, 30))
    rows = [Row(label(c, c == base.baseline), c["placement"],
                ARTICLE.get((c["placement"], c["input_rate"], c["hidden_rate"], c["learning_rate"],
                             c["momentum"], c["max_norm"])) if articles else None)
            for c in configs]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    try:
        sweep_arg = str(Path(args.sweep).resolve().relative_to(Path.cwd()))
    except ValueError:
        sweep_arg = args.sweep

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/seeds.db"
        for seed in seeds:
            sweep = build_sweep(apply_overrides(load_sweep(args.sweep),
                                                [*overrides, f"search.seed={seed}"]))
            name = f"{sweep.name}-seed{seed}"
            run_search(sweep, dataset, storage_url=url, study_name=name, device="auto",
                       batch=args.batch or AUTO_BATCH)
            by_config = {json.dumps(t.user_attrs.get(records.CONFIG), sort_keys=True): t
                         for t in optuna.load_study(study_name=name, storage=url).trials}
            for config, row in zip(configs, rows):
                t = by_config.get(json.dumps(config.to_dict(), sort_keys=True))
                done = t is not None and t.state == optuna.trial.TrialState.COMPLETE
                row.means.append(100 * t.user_attrs[records.ACCURACY_MEAN] if done else None)
                row.fold_sds.append(100 * t.user_attrs[records.ACCURACY_STD] if done else None)
    elapsed = time.perf_counter() - start

    first = seeds[0]
    summary = []
    for row in rows:
        vals = row.values()
        sds = [s for s in row.fold_sds if s is not None]
        summary.append({
            "configuration": row.label, "placement": row.placement, "article": row.article,
            "seeds": len(vals), "failed": len(row.means) - len(vals),
            "mean": statistics.fmean(vals) if vals else None,
            "sd": statistics.stdev(vals) if len(vals) > 1 else None,
            "min": min(vals) if vals else None, "max": max(vals) if vals else None,
            "mean_fold_sd": statistics.fmean(sds) if sds else None,
            "first_seed": row.means[0], "first_seed_rank": rank(row.means, 0),
            "per_seed": row.means,
        })

    setup = (f"{sweep_arg}: {base.cv.folds}-fold CV (cv.seed {base.cv.seed}: the same folds "
             f"at every seed) x {base.train.epochs} epochs, engine {engine}, torch "
             f"{torch.__version__}, {torch.get_num_threads()} thread(s)")
    if args.format == "json":
        print(json.dumps({"setup": setup, "seeds": seeds, "engine": engine,
                          "command": command(sweep_arg, overrides, "S"),
                          "seconds": round(elapsed, 1), "configurations": summary}, indent=2))
        return

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f}%"

    print(f"Brownlee's configurations at {len(seeds)} search seeds ({seeds[0]}..{seeds[-1]}), "
          f"{setup}; {elapsed:.0f} s.")
    print(f"Seed S is what `{command(sweep_arg, overrides, 'S')}` trains.\n")
    print(f"| configuration | article (Keras, one run) | dropsweep, mean ± SD over seeds "
          f"| range | seeds | seed {first}: one draw | fold-to-fold SD |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        spread = ("—" if s["mean"] is None else f"{s['mean']:.2f}% ± {s['sd']:.2f}"
                  if s["sd"] is not None else f"{s['mean']:.2f}%")
        span = "—" if s["min"] is None else f"{s['min']:.2f}–{s['max']:.2f}%"
        failed = f" ({s['failed']} failed)" if s["failed"] else ""
        print(f"| {s['configuration']} | {pct(s['article'])} | {spread} | {span} "
              f"| {s['seeds']}{failed} | {pct(s['first_seed'])} ({s['first_seed_rank']}) "
              f"| {pct(s['mean_fold_sd'])} |")
    print("\nAccuracy: each seed's mean over the folds. SD over seeds: sample SD (ddof = 1) of "
          "those means. Fold-to-fold SD: ddof = 0 over the folds (as Brownlee), averaged over "
          "seeds. Rank 1 is the highest of the seeds.")

    base_vals = rows[0].means
    if len(rows) > 1 and len(seeds) > 1:
        print("\nAgainst the baseline, seed by seed (same seed, same folds):\n")
        print("| configuration | mean difference ± SD (points) | seeds above the baseline |")
        print("|---|---:|---:|")
        for row in rows[1:]:
            diffs = [v - b for v, b in zip(row.means, base_vals)
                     if v is not None and b is not None]
            if len(diffs) > 1:
                print(f"| {row.label} | {statistics.fmean(diffs):+.2f} ± "
                      f"{statistics.stdev(diffs):.2f} | {sum(d > 0 for d in diffs)} of "
                      f"{len(diffs)} |")

    print("\nEach seed (percent):\n")
    print("| seed | " + " | ".join(r.placement for r in rows) + " |")
    print("|---:|" + "---:|" * len(rows))
    for i, seed in enumerate(seeds):
        print(f"| {seed} | " + " | ".join("—" if r.means[i] is None else f"{r.means[i]:.2f}"
                                         for r in rows) + " |")


if __name__ == "__main__":
    main()
