"""Reading a sweep file: safe YAML with line numbers, and ``--set`` overrides.

Validation needs to say *where* a mistake is, so besides the plain data we keep, for every
dotted key, the line it was written on (or the ``--set`` that last changed it). Only
``yaml.SafeLoader`` is ever used: a sweep file cannot construct Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dropsweep.errors import SweepError


@dataclass
class RawSweep:
    """A sweep as written: plain data plus where each dotted key came from."""

    data: dict[str, Any]
    file: str
    lines: dict[str, int] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)  # dotted key -> "--set k=v"

    def where(self, key: str) -> dict[str, Any]:
        """Keyword arguments for an error about ``key``: the file and line, or the --set."""
        for prefix in _prefixes(key):
            if prefix in self.overrides:
                return {"file": f"--set {self.overrides[prefix]}", "line": None, "key": key}
        for prefix in _prefixes(key):
            if prefix in self.lines:
                return {"file": self.file, "line": self.lines[prefix], "key": key}
        return {"file": self.file, "line": None, "key": key}


def _prefixes(key: str) -> list[str]:
    """``a.b.c`` -> ``[a.b.c, a.b, a]``: the nearest written ancestor names the line."""
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _record_lines(node: yaml.Node, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _record_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}.{i}"
            lines.setdefault(key, item.start_mark.line + 1)
            _record_lines(item, key, lines)


def parse_sweep_text(text: str, file: str) -> RawSweep:
    """Parse YAML text into a :class:`RawSweep`; a syntax error names its line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise SweepError(f"invalid YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise SweepError(f"invalid YAML: {exc}", file=file) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SweepError("a sweep file must be a mapping of sections (name, data, model, ...)",
                         file=file, line=1)
    lines: dict[str, int] = {}
    if node is not None:
        _record_lines(node, "", lines)
    return RawSweep(data=data, file=file, lines=lines)


def load_sweep(path: str | Path) -> RawSweep:
    """Read a sweep file; a missing or unreadable file is a one-line user error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError("no such sweep file", file=path) from None
    except IsADirectoryError:
        raise SweepError("is a directory, not a sweep file", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SweepError(f"cannot read: {reason}", file=path) from None
    return parse_sweep_text(text, str(path))


def apply_overrides(raw: RawSweep, assignments: list[str] | tuple[str, ...]) -> RawSweep:
    """Apply ``--set section.key=value`` (value parsed as YAML) on top of the file."""
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SweepError("expected section.key=value", file=f"--set {assignment}")
        parts = key.split(".")
        if any(not p for p in parts):
            raise SweepError("expected section.key=value", file=f"--set {assignment}")
        try:
            value = yaml.load(text, Loader=yaml.SafeLoader) if text.strip() else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise SweepError(f"invalid YAML value: {problem}", file=f"--set {assignment}",
                             key=key) from None
        target = raw.data
        for i, part in enumerate(parts[:-1]):
            child = target.get(part)
            if child is None:
                child = target[part] = {}
            if not isinstance(child, dict):
                raise SweepError(f"{'.'.join(parts[: i + 1])} is not a section",
                                 file=f"--set {assignment}", key=key)
            target = child
        target[parts[-1]] = value
        raw.overrides[key] = assignment
    return raw
