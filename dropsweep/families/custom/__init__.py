"""The custom family (``family: custom``): the user's own ``nn.Module``, its dropout swept.

``model.module`` names a function (``"pkg.mod:build"``, or ``"path/to/file.py:build"``
relative to the sweep file) that ``build(input_shape, n_classes, **args)`` returns a module
mapping ``[n, *input_shape]`` to logits ``[n, n_classes]``. Its ``nn.Dropout``/``1d``/``2d``/
``3d`` modules are the dropout *sites*, gathered into groups by name pattern
(``model.sites``; by default one group per Dropout module); the space searches a rate per
group, placements as the combinations of groups, Keras's SGD or Adam, and max-norm on the
``Linear``/``Conv*`` layers ``model.max_norm`` selects.

The dimensions depend on the groups, so the registered family is a template and
:meth:`_Custom.bound` makes the family of one model section. Importing the user's module
runs its code: that happens only when a sweep file's model is resolved (``validate``,
``search``, training), never when a stored study is read back or reported — the stored
section already carries its groups and the SHA-256 of the module's source.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from dropsweep.families import EngineFamily, Family
from dropsweep.families.common import TRAINING, dropout_words, rate, training_words, words
from dropsweep.sweep.space import Choices, Dimension, Range

if TYPE_CHECKING:
    from dropsweep.data.dataset import Dataset
    from dropsweep.sweep.checks import Checker

# The training dimensions (common.TRAINING) are the conv nets': Adam (the baseline) or SGD,
# a log learning rate, momentum for SGD only, max-norm off unless the sweep turns it on.
# Placements grow as 2^groups: past this the space is too large to search or to balance.
MAX_GROUPS = 6
_GROUP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class CustomModel:
    """The ``model`` section, resolved: every key explicit, so the stored section is the
    experiment (the entry point, its arguments, its groups, its source's hash)."""

    module: str = ""  # "pkg.mod:build" or "path/to/file.py:build"
    args: dict[str, Any] = field(default_factory=dict, hash=False)  # keyword args of build
    sites: tuple[tuple[str, str], ...] = ()  # (group, glob pattern over module names)
    max_norm: tuple[str, ...] = ()  # patterns of the Linear/Conv layers max-norm applies to
    max_norm_axis: str = "keras"
    # (source file, SHA-256) of the code that builds the network: a change refuses a resume
    sources: tuple[tuple[str, str], ...] = ()
    family: str = "custom"
    base: str = field(default="", compare=False)  # directory a file path is relative to
    # Dropout modules no site group covers, with their own rate (found at validation, not
    # stored: the recorded source is the experiment): they drop in every trial alike
    fixed: tuple[tuple[str, float], ...] = field(default=(), compare=False)
    # read back from a stored study (its sources recorded): taken as recorded, never resolved
    stored: bool = field(default=False, compare=False, repr=False)

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(g for g, _ in self.sites)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "module": self.module, "args": dict(self.args),
                "sites": dict(self.sites), "max_norm": list(self.max_norm),
                "max_norm_axis": self.max_norm_axis, "sources": dict(self.sources)}


def placements_of(groups: Sequence[str]) -> tuple[str, ...]:
    """``none``, each group alone, then each combination (``a+b``): fewer groups first,
    earlier groups first within a size — also the 1-SE simplicity order."""
    out = ["none"]
    for size in range(1, len(groups) + 1):
        out += ["+".join(c) for c in itertools.combinations(groups, size)]
    return tuple(out)


def groups_of(placement: str) -> tuple[str, ...]:
    return () if placement == "none" else tuple(placement.split("+"))


def dimensions_of(groups: Sequence[str]) -> tuple[Dimension, ...]:
    """The search space of a module with these site groups."""
    placements = placements_of(groups)
    dims = [Dimension("placement", Choices(placements), baseline="none", choices=placements,
                      simplicity="order", label="placement")]
    for g in groups:
        dims.append(Dimension(f"{g}_rate", Range(0.0, 0.7), baseline=0.0, rule=rate,
                              when=("placement", tuple(p for p in placements
                                                      if g in groups_of(p))),
                              unused=0.0, simplicity="sum", label=f"{g} rate"))
    return (*dims, *TRAINING)


def dropout_rates(config: Mapping[str, Any], groups: Sequence[str]) -> dict[str, float]:
    """Each group's rate as training applies it: 0 where the placement does not drop."""
    on = groups_of(str(config.get("placement", "none")))
    return {g: float(config.get(f"{g}_rate", 0.0)) if g in on else 0.0 for g in groups}


class _Custom(EngineFamily):
    name = "custom"
    engine = "dropsweep.families.custom.engine"
    group = "placement"
    baseline_words = "the no-dropout baseline"
    model_keys = ("module", "args", "sites", "max_norm", "max_norm_axis", "sources")

    def __init__(self, groups: tuple[str, ...] = ()) -> None:
        self.groups = groups
        self.dimensions = dimensions_of(groups)

    def bound(self, model: Any) -> Family:
        groups = tuple(getattr(model, "groups", ()))
        return self if groups == self.groups else _Custom(groups)

    def bound_stored(self, model: Mapping[str, Any]) -> Family:
        sites = model.get("sites")
        groups = tuple(str(g) for g in sites) if isinstance(sites, dict) else ()
        return self if groups == self.groups else _Custom(groups)

    def parse_model(self, check: Checker, raw: Mapping[str, Any]) -> CustomModel:
        from dropsweep.families.custom.section import parse_model

        return parse_model(check, raw)

    def resolve_model(self, check: Checker, model: Any, data: Callable[[], Dataset]) -> Any:
        from dropsweep.families.custom.section import resolve_section

        return resolve_section(check, model, data)

    def default_model(self) -> CustomModel:
        return CustomModel()

    def notices(self, model: Any) -> tuple[str, ...]:
        """The Dropout modules ``sites`` leaves out: the search cannot turn them off, not
        even for the baseline, which is then no longer a network without dropout."""
        fixed = tuple(getattr(model, "fixed", ()))
        if not fixed:
            return ()
        names = ", ".join(f"{name} (p {p:g})" for name, p in fixed)
        one = len(fixed) == 1
        return (f"model.sites: {names} {'is' if one else 'are'} in no site group, so "
                f"{'it keeps its' if one else 'they keep their'} own rate in every trial, "
                f"the no-dropout baseline included",)

    def describe(self, config: Mapping[str, Any]) -> str:
        """"drop_in dropout 0.2, hidden 0.5, Adam lr 0.001": the dropout, then the training."""
        placement = str(config.get("placement", "none"))
        parts = [(g, words(config.get(f"{g}_rate"))) for g in groups_of(placement)]
        return f"{dropout_words(parts)}, {training_words(config)}"



CUSTOM = _Custom()
