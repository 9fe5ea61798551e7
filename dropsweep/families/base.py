"""The family interface: what every model family is (:class:`Family`, :class:`EngineFamily`)
and the sections it receives (:class:`Sections`). Apart from the registry in
:mod:`dropsweep.families`, so a family's package imports this and the registry imports the
families, with no loop between them. No torch here: an engine is imported when it trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from dropsweep.families.common import words
from dropsweep.sweep.space import Config, Dimension, Space, value_of
from dropsweep.train.hooks import NO_HOOKS, TrainHooks

if TYPE_CHECKING:
    import torch

    from dropsweep.sweep.checks import Checker
    from dropsweep.data.dataset import Dataset
    from dropsweep.sweep.sections import TrainConfig
    from dropsweep.train.memory import Need
    from dropsweep.train.loop import TrialResult
    from dropsweep.data.protocols import Folds


def nowhere(key: str) -> dict[str, Any]:
    """Where a key was written when no sweep file says: the key alone."""
    return {"key": key}


@dataclass(frozen=True)
class Sections:
    """What a family reads of a sweep, and all it reads: its own ``model`` section, the
    ``train`` section, the baseline and the space searched (a listed sweep's: the choices
    its list spans), and ``where`` a key was written (a one-line error's file and line).
    ``Sweep.sections`` makes it."""

    model: Any
    train: TrainConfig
    baseline: Config
    searched: Space
    where: Callable[[str], dict[str, Any]] = field(default=nowhere, compare=False)


class Family:
    """The interface every family implements (the MLP is the first: :mod:`.mlp`)."""

    name: str
    dimensions: tuple[Dimension, ...]
    # The categorical dimension whose values the report compares ("which placement is
    # best"); its first choice is the baseline's ("none": no dropout).
    group: str
    baseline_words: str  # what the baseline is, for messages: "the no-dropout baseline"
    model_keys: tuple[str, ...]  # the keys of the ``model`` section besides ``family``

    def parse_model(self, check: Checker, raw: Mapping[str, Any]) -> Any:
        """The ``model`` section, validated: a frozen value with ``to_dict()``."""
        raise NotImplementedError

    def resolve_model(self, check: Checker, model: Any, data: Callable[[], Dataset]) -> Any:
        """The parsed ``model`` section checked against the sweep's data, where it depends
        on it (the custom family builds the user's network for the data's shape), every
        mistake one line naming its key; ``data()`` reads the data (only when called). The
        built-in families' sections do not: they are returned as they are."""
        return model

    def default_model(self) -> Any:
        raise NotImplementedError

    def bound(self, model: Any) -> Family:
        """This family for one ``model`` section: a family whose dimensions depend on the
        sweep (the custom family's rate per site group) returns a copy that knows them; the
        built-in families' tables are fixed, so they are themselves."""
        return self

    def bound_stored(self, model: Mapping[str, Any]) -> Family:
        """:meth:`bound` for a stored ``model`` section (plain data, as ``to_dict()`` wrote
        it): reading a stored study must never import or run the user's code."""
        return self

    def describe(self, config: Mapping[str, Any]) -> str:
        """The configuration's dropout in words: "input dropout 0.2", "no dropout"."""
        raise NotImplementedError

    def notices(self, model: Any) -> tuple[str, ...]:
        """What validating this ``model`` section found that is not a mistake but changes
        what the sweep means (the search says each in a ``note:`` line)."""
        return ()

    def notice(self, device: torch.device) -> str | None:
        """What a run that trains this family on ``device`` should say before it starts,
        not a mistake (the search says it in a ``note:`` line): the MLP's, that its fast CPU
        kernel is not used and what that costs. None: nothing to say."""
        return None

    def describe_against(self, config: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
        """Its dropout in words and whatever else differs from ``reference``: a candidate
        without dropout still differs from the baseline (learning rate, ...), and a verdict
        must say how."""
        differs = [f"{d.label} {words(config.get(d.name))}" for d in self.dimensions
                   if d.in_baseline and config.get(d.name) != reference.get(d.name)]
        return self.describe(config) + (f" with {', '.join(differs)}" if differs else "")

    def is_reference(self, config: Mapping[str, Any]) -> bool:
        """Whether the configuration's group is the baseline's (no dropout at all)."""
        return config.get(self.group) == self.group_values[0]

    @property
    def group_values(self) -> tuple[str, ...]:
        return next(d.choices for d in self.dimensions if d.name == self.group)

    def batch_key(self, config: Mapping[str, Any]) -> Any:
        """What trials must share to train in one batch: their optimizer, where the family
        has one (a batch mixing update rules runs both on every model); the runner trains
        each key's trials as a batch of their own."""
        dim = next((d for d in self.dimensions if d.name == "optimizer"), None)
        return None if dim is None else value_of(dim, config)

    def batches(self, configs: Sequence[Mapping[str, Any]]) -> list[list[int]]:
        """The positions of ``configs`` as the batches they train in: one per
        :meth:`batch_key`, in order of first appearance."""
        groups: dict[Any, list[int]] = {}
        for i, config in enumerate(configs):
            groups.setdefault(self.batch_key(config), []).append(i)
        return list(groups.values())

    def train(self, configs: Sequence[Config], folds: Folds, sections: Sections, seed: int,
              hooks: TrainHooks = NO_HOOKS) -> list[TrialResult]:
        """Train every split of every configuration together, one result per configuration
        (the shared epoch loop of :mod:`dropsweep.train.loop` driving this family's engine);
        ``hooks`` (:class:`~dropsweep.train.hooks.TrainHooks`) say how: pruning, stop,
        progress, checkpoints, the engine, where a notice goes."""
        raise NotImplementedError

    def check_resume(self, configs: Sequence[Config], folds: Folds, sections: Sections, seed: int,
                     hooks: TrainHooks) -> None:
        """Refuse (:class:`~dropsweep.train.checkpoints.Unusable`, one line) the checkpointed
        state ``hooks.resume`` when :meth:`train` with these arguments could not go on from
        it, before any trial is made for it (:func:`dropsweep.train.loop.check_resume`); a
        family whose engine can be built without training checks its engine state too."""
        from dropsweep.train.loop import check_resume

        check_resume(hooks.resume, len(configs), folds.k, sections.train.epochs)

    def train_on_all(self, sections: Sections, dataset: Dataset, config: Config, seed: int,
                     device: torch.device) -> dict[str, Any]:
        """The configuration trained once on every row, as plain tensors and numbers that
        ``torch.load(..., weights_only=True)`` reads (``dropsweep export --model``)."""
        raise NotImplementedError

    def need(self, sections: Sections, dataset: Dataset, models: int) -> Need:
        """Memory ``models`` models of this sweep's network need to train on ``dataset``
        (all its rows: a bound)."""
        raise NotImplementedError


class EngineFamily(Family):
    """A family whose training lives in one engine module (``engine``: its import path,
    imported only when something trains) with ``train_trials``, ``train_on_all`` and
    ``need``; its configurations' words name everything a trial may change."""

    engine: str

    def describe_against(self, config: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
        return self.describe(config)  # it already names everything a trial may change

    def train(self, configs: Sequence[Config], folds: Folds, sections: Sections, seed: int,
              hooks: TrainHooks = NO_HOOKS) -> list[TrialResult]:
        return import_module(self.engine).train_trials(configs, folds, sections, seed, hooks)

    def check_resume(self, configs: Sequence[Config], folds: Folds, sections: Sections, seed: int,
                     hooks: TrainHooks) -> None:
        from dropsweep.train.loop import check_resume

        module = import_module(self.engine)
        check_resume(hooks.resume, len(configs), folds.k, sections.train.epochs,
                     lambda: module.batch_engine(configs, folds, sections, seed, hooks))

    def train_on_all(self, sections: Sections, dataset: Dataset, config: Config, seed: int,
                     device: torch.device) -> dict[str, Any]:
        return import_module(self.engine).train_on_all(sections, dataset, config, seed, device)

    def need(self, sections: Sections, dataset: Dataset, models: int) -> Need:
        return import_module(self.engine).need(sections, dataset, models)
