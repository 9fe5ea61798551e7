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

import re
from typing import TYPE_CHECKING, Any, Callable, Mapping

from dropsweep.families.base import EngineFamily, Family
from dropsweep.families.common import dropout_words, rate, training_words, words

if TYPE_CHECKING:
    from dropsweep.data.dataset import Dataset
    from dropsweep.sweep.checks import Checker

from dropsweep.families.custom.model import (CustomModel, dimensions_of,  # noqa: F401 (tests)
                                            dropout_rates, groups_of, placements_of)


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
