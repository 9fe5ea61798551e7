"""A study's stored experiment: what it was made with, read back through today's code.

A study records its sweep (:data:`records.STUDY_SWEEP`) and the schema it was written in
(:data:`records.STUDY_SCHEMA`). A sweep stored by an older dropsweep lacks keys added
since (a model ``family``, ...); rebuilt through today's defaults it is the experiment
today's code would run, so comparisons on resume are between *normalised* sweeps and an old
study resumes and reports exactly as before.
"""

from __future__ import annotations

from typing import Any, Mapping

from dropsweep import records
from dropsweep.config import Sweep, build_sweep
from dropsweep.errors import StorageError, SweepError
from dropsweep.sweepfile import RawSweep

# The sections that define the experiment: a change in any refuses a resume. ``name`` and
# ``search`` may change (``--trials``, a new seed for the next sampler).
EXPERIMENT_SECTIONS = ("data", "model", "train", "cv", "baseline", "space")


def stored_sweep(study: Any) -> Sweep:
    """The sweep a dropsweep study (an ``optuna.Study``) was made with, rebuilt through
    today's defaults."""
    name, user_attrs = study.study_name, study.user_attrs
    data = user_attrs.get(records.STUDY_SWEEP)
    if data is None:
        raise StorageError(f"study '{name}' was not made by dropsweep")
    check_schema(name, user_attrs)
    return build_sweep(RawSweep(data=data, file=user_attrs.get(records.STUDY_SWEEP_FILE)
                                or f"study {name}"))


def check_schema(name: str, user_attrs: Mapping[str, Any]) -> int:
    """The study's schema version (1 for a study made before versions were recorded); a
    study written by a newer dropsweep is refused rather than misread."""
    version = user_attrs.get(records.STUDY_SCHEMA, 1)
    if not isinstance(version, int) or version > records.SCHEMA_VERSION:
        raise StorageError(f"study '{name}' was written by a newer dropsweep (schema "
                           f"{version}, this one reads up to {records.SCHEMA_VERSION}); "
                           "upgrade dropsweep to use it")
    return version


def normalised(data: Mapping[str, Any]) -> dict[str, Any]:
    """A stored sweep as today's code would store it; as stored if it no longer validates
    (the comparison then names what differs)."""
    try:
        return build_sweep(RawSweep(data=dict(data), file="stored sweep")).to_dict()
    except SweepError:
        return dict(data)


def sweep_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys of the experiment sections that differ, with old -> new values; the old
    sweep is normalised first, so keys added since it was stored do not count as changes."""
    out: list[str] = []
    old = normalised(old)

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in list(dict.fromkeys([*a, *b])):
                walk(a.get(k), b.get(k), f"{key}.{k}")
        elif a != b:
            out.append(f"{key} {a!r} -> {b!r}")

    for section in EXPERIMENT_SECTIONS:
        walk(old.get(section), new.get(section), section)
    return out
