"""Model families: what a network is, what of it is searched, and how a batch of it trains.

A family declares its search space as a table of dimensions (:mod:`dropsweep.sweep.space`), reads
its own ``model`` section, says a configuration in words for reports, and trains a batch of
models — every split of several trials — through an engine that the shared epoch loop
(:mod:`dropsweep.train.loop`) drives. Everything outside a family treats a configuration as plain
data; only the family knows what its values mean. A new family is one module here,
registered in :data:`FAMILIES`, plus its tests.

This package imports no torch: a family's engine is imported when it trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from dropsweep.families.base import Family, Sections
from dropsweep.train.hooks import TrainHooks

if TYPE_CHECKING:
    from dropsweep.sweep.space import Config
    from dropsweep.train.loop import TrialResult
    from dropsweep.data.protocols import Folds


DEFAULT_FAMILY = "mlp"  # Brownlee's network; every study before families existed is one
_REGISTERED: dict[str, Family] = {}


def register(fam: Family) -> Family:
    """Make ``fam`` available as ``model.family: <its name>``."""
    _REGISTERED[fam.name] = fam
    return fam


def _builtin() -> None:
    if DEFAULT_FAMILY not in _REGISTERED:
        from dropsweep.families.cnn import CNN
        from dropsweep.families.custom import CUSTOM
        from dropsweep.families.mlp import MLP

        register(MLP)
        register(CNN)
        register(CUSTOM)



def family_names() -> tuple[str, ...]:
    _builtin()
    return tuple(_REGISTERED)


def family(name: str) -> Family:
    """The family registered as ``name`` (config validation has checked it exists)."""
    _builtin()
    return _REGISTERED[name]


def family_of_study(user_attrs: Mapping[str, Any]) -> Family:
    """The family of a stored study: its sweep's ``model.family``, the MLP for a study made
    before families existed (or any study dropsweep did not make: its table still orders
    the columns sensibly)."""
    from dropsweep import records

    sweep = user_attrs.get(records.STUDY_SWEEP)
    model = sweep.get("model") if isinstance(sweep, dict) else None
    name = model.get("family", DEFAULT_FAMILY) if isinstance(model, dict) else DEFAULT_FAMILY
    return bound_family(name if name in family_names() else DEFAULT_FAMILY, model)


def stored_model(user_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """A stored study's ``model`` section as plain data (None if it has none)."""
    from dropsweep import records

    sweep = user_attrs.get(records.STUDY_SWEEP)
    model = sweep.get("model") if isinstance(sweep, dict) else None
    return dict(model) if isinstance(model, dict) else None


def bound_family(name: Family | str, model: Mapping[str, Any] | None = None) -> Family:
    """The family a report's or confirmation's rows were made by: ``name`` bound to the
    study's stored ``model`` section (a Family is returned as it is)."""
    if isinstance(name, Family):
        return name
    fam = family(name)
    return fam.bound_stored(model) if isinstance(model, Mapping) else fam


def family_of_rows(rows: Any) -> Family:
    """The bound family of a report or confirmation (its ``family`` name and, where it has
    one, its stored ``model`` section)."""
    return bound_family(rows.family, getattr(rows, "model", None))


def train_apart(fam: Family, sections: Sections, configs: Sequence[Config], folds: Folds,
                seed: int, *, should_stop: Callable[[], bool] | None = None
                ) -> list[TrialResult]:
    """``configs`` trained in the batches their family asks for (one per optimizer: a
    batch mixing update rules runs both on every model), the results in their order."""
    results: dict[int, TrialResult] = {}
    for group in fam.batches(configs):
        trained = fam.train([configs[i] for i in group], folds, sections, seed,
                            TrainHooks(should_stop=should_stop))
        results.update(zip(group, trained))
    return [results[i] for i in range(len(configs))]
