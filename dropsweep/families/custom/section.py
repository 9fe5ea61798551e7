"""The custom family's ``model`` section: read and checked (:func:`parse_model`), then
resolved against the user's code and the sweep's data (:func:`resolve_section`, given the
data where the sweep is validated), so that every mistake is one line naming its key at
validation time.

A section read back from a stored study carries ``sources`` (the SHA-256 of the code it
ran) and explicit ``sites``: it is taken as recorded, without importing anything; whether
today's code is still that code is checked when it trains (:mod:`.engine`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from dropsweep.sweep.checks import describe
from dropsweep.families.common import MAX_NORM_AXES, in_shape
from dropsweep.families.common import TRAINING
from dropsweep.families.custom.model import _GROUP_NAME, MAX_GROUPS, CustomModel

if TYPE_CHECKING:
    from dropsweep.sweep.checks import Checker
    from dropsweep.data.dataset import Dataset


def input_shape_of(dataset: Dataset) -> tuple[int, ...]:
    """``(features,)`` for a table, ``(channels, height, width)`` for images."""
    return in_shape(dataset.image_shape) or (dataset.n_features,)


def parse_model(check: Checker, raw: Mapping[str, Any]) -> CustomModel:
    if raw.get("module") is None:
        raise check.fail("model.module", "the custom family needs the function that builds "
                                         "the network: 'package.module:build' or "
                                         "'path/to/file.py:build'")
    module = check.string("model.module", raw["module"]).strip()
    args = raw.get("args") if raw.get("args") is not None else {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise check.fail("model.args", f"must be a mapping of keyword arguments for the "
                                       f"build function, got {describe(args)}")
    sites = _sites(check, raw.get("sites"))
    patterns = raw.get("max_norm") if raw.get("max_norm") is not None else []
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise check.fail("model.max_norm", f"must be a list of name patterns of Linear/Conv "
                                           f"layers, got {describe(patterns)}")
    axis = check.string("model.max_norm_axis", raw.get("max_norm_axis", "keras"),
                        MAX_NORM_AXES)
    base = str(Path(check.raw.file).parent) if check.raw.file else ""
    model = CustomModel(module=module, args=dict(args), sites=tuple((sites or {}).items()),
                        max_norm=tuple(patterns), max_norm_axis=axis, base=base)
    recorded = raw.get("sources")
    if recorded is not None:  # a stored section: as it was recorded, nothing imported
        if not isinstance(recorded, dict) or not sites:
            raise check.fail("model.sources", "is written by dropsweep in a stored study, "
                                              "with model.sites; leave it out")
        return _replace(model, sources=tuple((str(k), str(v)) for k, v in recorded.items()),
                        stored=True)
    return model  # resolved against the data next (resolve_section)


def _sites(check: Checker, raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise check.fail("model.sites", f"must be a mapping of group names to name patterns "
                                        f"(drop_in: \"drop_in\"), got {describe(raw)}")
    if len(raw) > MAX_GROUPS:
        raise check.fail("model.sites", f"{len(raw)} groups make {2 ** len(raw)} placements; "
                                        f"at most {MAX_GROUPS}: group sites by pattern")
    taken = {d.name for d in TRAINING} | {"placement"}
    for group, pattern in raw.items():
        key = f"model.sites.{group}"
        if not isinstance(group, str) or not _GROUP_NAME.match(group) or group == "none":
            raise check.fail("model.sites", f"a group name must be letters, digits and _ "
                                            f"(and not none), got {describe(group)}")
        if f"{group}_rate" in taken:
            raise check.fail(key, f"its rate would be named {group}_rate, which is already "
                                  "a dimension: rename the group")
        if not isinstance(pattern, str) or not pattern:
            raise check.fail(key, f"must be a name pattern (fnmatch over the module's "
                                  f"named_modules()), got {describe(pattern)}")
    return {str(g): str(p) for g, p in raw.items()}


def _replace(model: CustomModel, **changes: Any) -> CustomModel:
    from dataclasses import replace

    return replace(model, **changes)


def resolve_section(check: Checker, model: CustomModel, data: Callable[[], Dataset]
                    ) -> CustomModel:
    """Import the entry point, hash its source, build the network for this sweep's data
    (``data()`` reads it, once the entry point is found) and find its sites and max-norm
    layers: every failure one line naming its key. A stored section (its ``sources``
    recorded) is taken as it is: nothing imported, no data read."""
    from dropsweep.families.custom import resolve

    if model.stored:
        return model
    try:
        fn, sources = resolve.entry_point(model.module, model.base)
        dataset = data()
        shape = input_shape_of(dataset)
        net = resolve.build(fn, model.module, shape, dataset.n_classes, model.args, seed=0)
        resolve.check_parameters(net, model.module)
        sites = dict(model.sites) or resolve.default_sites(net, model.module)
        if len(sites) > MAX_GROUPS:
            raise resolve.ModelError("model.module", f"the module has {len(sites)} Dropout "
                                     f"modules, more than {MAX_GROUPS} groups: group them "
                                     "with model.sites")
        members = resolve.site_members(net, tuple(sites.items()))
        resolve.constrained_layers(net, model.max_norm)
        resolve.check_output(net, model.module, shape, dataset.n_classes)
    except resolve.ModelError as exc:
        raise check.fail(exc.key, str(exc)) from None
    return _replace(model, sites=tuple(sites.items()), sources=tuple(sources.items()),
                    fixed=resolve.unmatched(net, members))
