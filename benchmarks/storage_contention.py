"""Many processes writing one study: SQLite (WAL, busy timeout: dropsweep's default) against
Optuna's JournalStorage with a file backend.

Each worker process runs the storage side of dropsweep trials as fast as it can — ask, the
user attributes a trial records, its checkpoints, tell — with no training in between, the
worst case for contention. Prints the wall time, the trials per second, and how many
operations failed (e.g. "database is locked").

    python benchmarks/storage_contention.py
    python benchmarks/storage_contention.py --workers 8 --trials 100
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
import warnings
from pathlib import Path

import optuna


def storage_for(kind: str, where: Path) -> object:
    if kind == "sqlite":
        from dropsweep.storage.open import open_storage

        return open_storage(f"sqlite:///{where}/study.db")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(where / "study.log")))


def worker(kind: str, where: str, trials: int, failures: mp.Value) -> None:
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="bench", storage=storage_for(kind, Path(where)),
                              sampler=optuna.samplers.RandomSampler())
    for _ in range(trials):
        try:
            trial = study.ask()
            trial.suggest_float("input_rate", 0.0, 0.5)
            trial.suggest_float("learning_rate", 1e-3, 0.3, log=True)
            for key in ("role", "config", "seed", "epochs", "wall_time", "fold_accuracies"):
                trial.set_user_attr(key, [0.5] * 10 if key == "fold_accuracies" else 1)
            for step in (10, 20, 30):
                trial.report(0.8, step)
            study.tell(trial, 0.85)
        except Exception:  # noqa: BLE001 - counted, not fatal: that is the measurement
            with failures.get_lock():
                failures.value += 1


def run(kind: str, workers: int, trials: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        optuna.create_study(study_name="bench", storage=storage_for(kind, Path(tmp)),
                            direction="maximize")
        failures = mp.Value("i", 0)
        procs = [mp.Process(target=worker, args=(kind, tmp, trials, failures))
                 for _ in range(workers)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        return time.perf_counter() - start, failures.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=50, help="per worker")
    args = parser.parse_args()
    total = args.workers * args.trials
    print(f"{args.workers} processes x {args.trials} trials (storage work only)")
    print(f"{'storage':<28} {'wall s':>7} {'trials/s':>9} {'failed':>7}")
    kinds = (("sqlite", "SQLite, WAL + busy timeout"), ("journal", "JournalStorage, file"))
    for kind, name in kinds:
        seconds, failed = run(kind, args.workers, args.trials)
        print(f"{name:<28} {seconds:7.1f} {total / seconds:9.1f} {failed:7d}")


if __name__ == "__main__":
    main()
