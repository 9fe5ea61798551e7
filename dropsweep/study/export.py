"""``dropsweep export``: one trial out of a study, as a sweep file and as trained weights.

The sweep file fixes every value (the trial's configuration as a one-entry list, with the
study's data, model, training and CV sections), so ``dropsweep search`` re-runs exactly
that configuration — beside the baseline, which every dropsweep study runs first. The
weights are the configuration trained once on all the data, saved as a plain dict of
tensors and numbers that ``torch.load(..., weights_only=True)`` reads and that loads into
the obvious ``nn.Sequential`` (Linear, ReLU, ..., Linear).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

import dropsweep
from dropsweep import records
from dropsweep.sweep.file import dump
from dropsweep.sweep.config import Sweep
from dropsweep.data.dataset import Dataset
from dropsweep.answers.rows import best_first
from dropsweep.sweep.space import Config, written
from dropsweep.errors import DropsweepError
from dropsweep.train.devices import resolve_device
from dropsweep.data.fetch import replace_atomically


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """Trial ``number``, or the best complete one; it must hold a configuration."""
    trials = study.get_trials(deepcopy=False)
    if number is None:
        ranked = best_first(trials, study.direction)
        if not ranked:
            raise DropsweepError(f"study '{study.study_name}' has no complete trial to export")
        return ranked[0]
    found = next((t for t in trials if t.number == number), None)
    if found is None or records.CONFIG not in found.user_attrs:
        raise DropsweepError(f"--trial {number}: study '{study.study_name}' has no such trial "
                             f"with a configuration (trials 0..{len(trials) - 1})")
    return found


def sweep_text(sweep: Sweep, trial: FrozenTrial, study_name: str) -> str:
    """A sweep file that runs exactly this trial's configuration, with a header saying whence."""
    data = sweep.to_dict()
    config = Config(trial.user_attrs[records.CONFIG])
    entry = written(config, sweep.dimensions)
    data["name"] = f"{study_name}-trial-{trial.number}"
    data["space"] = [entry]
    data["search"] = {**data.get("search", {}), "trials": 1 if config == sweep.baseline else 2}
    csv = (data.get("data") or {}).get("csv")
    if csv and not Path(csv).is_absolute() and sweep.file:  # the export may live elsewhere
        data["data"]["csv"] = str((Path(sweep.file).parent / csv).resolve())
    score = "" if trial.value is None else f", accuracy {trial.value:.4f}"
    header = (f"# Exported by dropsweep {dropsweep.__version__} from study '{study_name}', "
              f"trial {trial.number} ({trial.state.name}{score}).\n"
              "# Every value is fixed: `dropsweep search` runs this configuration (and the "
              "baseline, as every study does).\n")
    return header + dump(data)


def train_on_all(sweep: Sweep, dataset: Dataset, config: Config, seed: int,
                 device: str = "cpu") -> dict[str, Any]:
    """The configuration trained on every row, as a dict that ``torch.load(...,
    weights_only=True)`` reads (each family says what its weights are)."""
    saved = sweep.family.train_on_all(sweep.sections, dataset, config, seed,
                                      resolve_device(device))
    return {**saved, "config": config.to_dict(), "dropsweep_version": dropsweep.__version__}


def write_atomically(path: Path, write: Any) -> None:
    """``write(file)`` (a binary file) via a temporary file and a rename: never a
    half-written export; a failure is one line."""
    try:
        replace_atomically(path, write, prefix=f".{path.name}-", suffix=".tmp")
    except OSError as exc:
        raise DropsweepError(f"cannot write {path}: {exc.strerror or exc}") from None
