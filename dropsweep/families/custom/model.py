"""Your own network's ``model`` section as stored (:class:`CustomModel`) and the search space
its site groups make (a rate per group, placements as their combinations). Apart from the
family (:mod:`dropsweep.families.custom`), so the section reader and the engines use them
without importing the family that imports them."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dropsweep.families.common import TRAINING, rate
from dropsweep.sweep.space import Choices, Dimension, Range

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
