"""``dropsweep export``: one trial out of a study, as a sweep file and as trained weights.

The sweep file fixes every value (the trial's configuration as a one-entry list, with the
study's data, model, training and CV sections), so ``dropsweep search`` re-runs exactly
that configuration — beside the baseline, which every dropsweep study runs first. The
weights are the configuration trained once on all the data, saved as a plain dict of
tensors and numbers that ``torch.load(..., weights_only=True)`` reads and that loads into
the obvious ``nn.Sequential`` (Linear, ReLU, ..., Linear).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState

import dropsweep
from dropsweep import records
from dropsweep.config import Sweep, TrialConfig
from dropsweep.data import Dataset, standardize
from dropsweep.errors import DropsweepError
from dropsweep.trainer import Folds, TrainSettings, resolve_device, train_trials


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """Trial ``number``, or the best complete one; it must hold a configuration."""
    trials = study.get_trials(deepcopy=False)
    if number is None:
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if not complete:
            raise DropsweepError(f"study '{study.study_name}' has no complete trial to export")
        return max(complete, key=lambda t: (t.value, -t.number))
    found = next((t for t in trials if t.number == number), None)
    if found is None or records.CONFIG not in found.user_attrs:
        raise DropsweepError(f"--trial {number}: study '{study.study_name}' has no such trial "
                             f"with a configuration (trials 0..{len(trials) - 1})")
    return found


def sweep_text(sweep: Sweep, trial: FrozenTrial, study_name: str) -> str:
    """A sweep file that runs exactly this trial's configuration, with a header saying whence."""
    data = sweep.to_dict()
    config = TrialConfig(**trial.user_attrs[records.CONFIG])
    entry: dict[str, Any] = {"placement": config.placement}
    if config.uses_input:
        entry["input_rate"] = config.input_rate
    if config.uses_hidden:
        entry["hidden_rate"] = config.hidden_rate
    entry.update(learning_rate=config.learning_rate, momentum=config.momentum,
                 max_norm="off" if config.max_norm is None else config.max_norm)
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
    return header + yaml.safe_dump(data, sort_keys=False)


def train_on_all(sweep: Sweep, dataset: Dataset, config: TrialConfig, seed: int,
                 device: str = "cpu") -> dict[str, Any]:
    """The configuration trained on every row (standardised on all of them), as a dict that
    ``torch.load(..., weights_only=True)`` reads: an ``nn.Sequential`` state dict, the
    scaling, the classes and the configuration."""
    dev = resolve_device(device)
    x, _ = standardize(dataset.X, dataset.X)
    rows = torch.from_numpy(x).to(dev)[None]
    labels = torch.from_numpy(dataset.y.astype(np.int64)).to(dev)[None]
    n = torch.tensor([x.shape[0]], device=dev)
    folds = Folds(rows, labels, n, rows, labels, n, dataset.n_classes)
    settings = replace(TrainSettings.of(sweep), eval_every=sweep.train.epochs)  # no checkpoints
    result = train_trials([config], folds, settings, seed)[0]
    if result.model is None:
        raise DropsweepError(f"training on all the data failed: {result.failure}")
    state: dict[str, torch.Tensor] = {}
    for i, (w, b) in enumerate(zip(result.model.weights, result.model.biases)):
        state[f"{2 * i}.weight"] = w[0].T.contiguous().cpu()  # nn.Linear keeps [out, in]
        state[f"{2 * i}.bias"] = b[0, 0].contiguous().cpu()
    mean = dataset.X.astype(np.float64).mean(0)
    scale = dataset.X.astype(np.float64).std(0)
    scale[scale == 0] = 1.0
    return {"state_dict": state, "mean": torch.tensor(mean, dtype=torch.float32),
            "scale": torch.tensor(scale, dtype=torch.float32), "classes": list(dataset.classes),
            "features": list(dataset.feature_names), "hidden": list(sweep.model.hidden),
            "config": config.to_dict(), "train_accuracy": result.train_accuracy,
            "dropsweep_version": dropsweep.__version__}


def write_atomically(path: Path, write: Any) -> None:
    """Write via a temporary file and a rename: never a half-written export."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        tmp.replace(path)
    except OSError as exc:
        raise DropsweepError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
