"""Reading a sweep file: safe YAML with line numbers, and ``--set`` overrides.

Validation needs to say *where* a mistake is, so besides the plain data we keep, for every
dotted key, the line it was written on (or the ``--set`` that last changed it). Only
``yaml.SafeLoader`` is ever used: a sweep file cannot construct Python objects.

A sweep file is small, so it is read only within bounds: its size in bytes, and the number
of YAML nodes it stands for once its aliases are expanded. Aliases are cheap to build (one
shared object), but everything that walks the data after that (the line recorder here,
validation, the sweep stored as JSON in the study) walks every copy: nine levels of 9-way
aliases ("billion laughs") are 387 million nodes, and used to end in a MemoryError after a
minute and ~4 GB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from dropsweep.errors import SweepError


@dataclass
class RawSweep:
    """A sweep as written: plain data plus where each dotted key came from."""

    data: dict[str, Any]
    file: str
    lines: dict[str, int] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)  # dotted key -> "k=v" of its --set
    # Mappings no one wrote: made by a --set path through them (``space.learning_rate`` for
    # ``--set space.learning_rate.low=0.05``); validation completes them from the defaults.
    created: set[str] = field(default_factory=set)

    def where(self, key: str) -> dict[str, Any]:
        """Keyword arguments for an error about ``key``: the file and line, or the --set."""
        return locate(key, self.file, self.lines, self.overrides)


def locate(key: str, file: str, lines: dict[str, int], overrides: dict[str, str]) -> dict[str, Any]:
    """Where ``key`` was last written, walking up from the key to its section.

    A ``--set`` of the key or an ancestor names that ``--set``; so does a ``--set`` inside
    the key (``--set space.learning_rate.low=...`` for low > high on ``space.learning_rate``)
    or inside an ancestor the file never wrote (``--set space.max_norm.low=2`` for the
    missing ``space.max_norm.high``). Otherwise the file line of the nearest written
    ancestor.
    """
    for prefix in _prefixes(key):  # first: the file's lines under a replaced section are stale
        if prefix in overrides:
            return {"file": f"--set {overrides[prefix]}", "line": None, "key": key}
    for prefix in _prefixes(key):
        inside = [k for k in overrides if k.startswith(prefix + ".")]
        if inside and (prefix == key or prefix not in lines):
            # ``overrides`` is kept in the order the --set options were applied
            return {"file": f"--set {overrides[inside[-1]]}", "line": None, "key": key}
        if prefix in lines:
            return {"file": file, "line": lines[prefix], "key": key}
    return {"file": file, "line": None, "key": key}


def _prefixes(key: str) -> list[str]:
    """``a.b.c`` -> ``[a.b.c, a.b, a]``: the nearest written ancestor names the line."""
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


_MERGE_TAG = "tag:yaml.org,2002:merge"

# Real sweep files are a few KB and a few hundred nodes; the limits are far above any
# legitimate one (a list of several thousand fixed configurations still fits), yet refuse a
# hostile file within seconds: pure-Python PyYAML composes ~30,000 nodes a second, so
# reading MAX_NODES nodes takes ~3 s and MAX_BYTES of long scalars about as much.
MAX_BYTES = 1024 * 1024
MAX_NODES = 100_000


class _TooLarge(yaml.YAMLError):
    """More than MAX_NODES nodes; ``line`` is where the expansion that crossed it is written."""

    def __init__(self, line: int | None) -> None:
        super().__init__(f"too large: more than {MAX_NODES:,} YAML nodes with its aliases "
                         "expanded (the limit for a sweep file)")
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader whose bad tagged scalars (``!!int abc``, ``!!bool maybe``) fail as YAML
    errors with their line, instead of escaping as ValueError/KeyError; and which stops
    composing after MAX_NODES nodes (each alias counted once here, expanded by
    :func:`_check_expanded_size`), so a huge file fails without being composed whole."""

    composed = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self.composed += 1
        if self.composed > MAX_NODES:
            raise _TooLarge(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
            tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
            text = node.value if isinstance(node.value, str) else ""
            shown = f" '{text}'" if text and len(text) <= 40 else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"not a valid {tag} value{shown}", node.start_mark) from exc


class Dumper(yaml.SafeDumper):
    """How dropsweep writes a sweep (``export``, ``validate``): SafeDumper, quoting a string
    that :class:`_Loader` would read back as a number (``'1e-3'``)."""


# YAML 1.1 (PyYAML) reads ``1e-3`` as a string, wanting ``1.0e-3``; learning rates are written
# the first way everywhere else (Python, Keras, Optuna's docs), so a sweep file reads it as
# YAML 1.2 does: a number, written with or without a dot. The writer knows it too, so a
# string that looks so (a study named 1e-3) is quoted and reads back as the string it was.
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


def reads_exponents(yaml_class: type) -> None:
    """Teach a PyYAML loader or dumper YAML 1.2's exponent floats (``1e-3``)."""
    yaml_class.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT,
                                     list("-+0123456789"))


reads_exponents(_Loader)
reads_exponents(Dumper)


def dump(data: Any) -> str:
    """``data`` as sweep-file YAML, in its own key order, read back as written."""
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True)


def _yaml_error(exc: Exception, what: str = "invalid YAML", **where: Any) -> SweepError:
    """One SweepError for anything PyYAML raises (or Python, nesting too deep)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "cannot parse"
        if exc.context and exc.problem and exc.problem.startswith("but "):
            problem = f"{exc.context}, {exc.problem}"  # "expected a single document ..., but"
        if "'\\t' that cannot start any token" in problem:  # PyYAML's words for a tab
            column = f" (column {mark.column + 1})" if mark is not None else ""
            problem = f"a tab{column}: indent with spaces, not tabs"
        return SweepError(f"{what}: {problem}", line=line, **where)
    if isinstance(exc, _TooLarge):
        return SweepError(str(exc), line=exc.line, **where)
    if isinstance(exc, RecursionError):
        return SweepError(f"{what}: nested too deeply", **where)
    return SweepError(f"{what}: {exc}", **where)


def _load_yaml(text: str, file: str | None = None,
               lines: dict[str, int] | None = None) -> tuple[yaml.Node | None, Any]:
    """Compose once and construct from that node: the lines and the data cannot disagree.

    Lines are recorded before constructing, which flattens ``<<`` merges into the node. The
    size is checked first: the recorder (and later whoever reads the data) walks every copy
    an alias makes, and flattening copies merged keys.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expanded_size(node)
        if lines is not None:
            _record_lines(node, "", lines, file or "")
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expanded_size(root: yaml.Node) -> None:
    """Raise :class:`_TooLarge` if walking ``root`` with every alias expanded, as
    :func:`_record_lines` and the data's consumers do, would visit more than MAX_NODES nodes.

    The count is exactly that walk's: an alias back to a node being walked (``&a [*a]``)
    stops there and counts one. A node whose walk met no such alias is acyclic below, so
    its size is the same from every path and is memoized: shared aliases cost one step.
    Every step adds at least one to the count, so the count itself stops within MAX_NODES
    steps however large the expansion (387 million for nine levels of 9-way aliases).
    Iterative: as deep as the composer went, without a Python frame a level.
    """
    limit = MAX_NODES
    memo: dict[int, int] = {}  # id(node) -> its expanded size, for acyclic nodes
    on_path: set[int] = set()
    total = 0
    stack: list[list[Any]] = []  # [node, its children, the total before it, met a cycle]

    def children(node: yaml.Node) -> Iterator[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                yield key
                yield value
        elif isinstance(node, yaml.SequenceNode):
            yield from node.value

    def enter(node: yaml.Node) -> None:
        nonlocal total
        total += 1
        on_path.add(id(node))
        stack.append([node, children(node), total - 1, False])

    enter(root)
    while stack:
        frame = stack[-1]
        child = next(frame[1], None)
        if child is None:
            stack.pop()
            on_path.discard(id(frame[0]))
            if not frame[3]:
                memo[id(frame[0])] = total - frame[2]
            elif stack:
                stack[-1][3] = True
            continue
        if id(child) in on_path:  # a recursive alias: walks stop here
            total += 1
            frame[3] = True
        elif id(child) in memo:
            total += memo[id(child)]
        else:
            enter(child)
        if total > limit:
            raise _TooLarge(frame[0].start_mark.line + 1)


_NO_KEY = object()


def _key_of(node: yaml.Node) -> Any:
    """The key a mapping key node makes in the data (``null`` -> None, ``0x10`` -> 16);
    validation names it by its ``str``."""
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        return node.value  # nearly every key: no constructor needed
    loader = _Loader("")
    try:
        key = loader.construct_object(node, deep=True)
        hash(key)
        return key
    except Exception:  # noqa: BLE001 - the data's construction reports it with its line
        return _NO_KEY
    finally:
        loader.dispose()


def _record_lines(node: yaml.Node, prefix: str, lines: dict[str, int], file: str,
                  path: tuple[int, ...] = ()) -> None:
    if id(node) in path:  # a recursive alias (``&a [*a]``): its lines are already recorded
        return
    path = (*path, id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}  # by the key itself: 1, 1.0 and true are one key
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # ``<<: *defaults``: keys written elsewhere
                merged.extend(value_node.value if isinstance(value_node, yaml.SequenceNode)
                              else [value_node])
                continue
            made = _key_of(key_node)
            if made is _NO_KEY:
                continue
            name = str(made)
            key = f"{prefix}.{name}" if prefix else name
            line = key_node.start_mark.line + 1
            if made in seen:
                raise SweepError(f"duplicate key (first written on line {seen[made]})",
                                 file=file, line=line, key=key)
            seen[made] = line
            lines[key] = line
            _record_lines(value_node, key, lines, file, path)
        for source in merged:  # explicit keys win over merged ones, as in the data
            sub: dict[str, int] = {}
            _record_lines(source, prefix, sub, file, path)
            for key, line in sub.items():
                lines.setdefault(key, line)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}.{i}"
            lines.setdefault(key, item.start_mark.line + 1)
            _record_lines(item, key, lines, file, path)


def parse_sweep_text(text: str, file: str) -> RawSweep:
    """Parse YAML text into a :class:`RawSweep`; a syntax error names its line."""
    lines: dict[str, int] = {}
    try:
        node, data = _load_yaml(text, file, lines)
    except (yaml.YAMLError, RecursionError) as exc:
        raise _yaml_error(exc, file=file) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else 1
        raise SweepError("a sweep file must be a mapping of sections (name, data, model, ...)",
                         file=file, line=line)
    return RawSweep(data=data, file=file, lines=lines)


def load_sweep(path: str | Path) -> RawSweep:
    """Read a sweep file; a missing, unreadable or oversized file is a one-line user error."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SweepError(f"too large for a sweep file: {size:,} bytes (the limit is "
                             f"{MAX_BYTES:,})", file=path)
        with path.open("rb") as f:  # at most the limit, even from a pipe or /dev/zero
            content = f.read(MAX_BYTES + 1)
        if len(content) > MAX_BYTES:
            raise SweepError(f"too large for a sweep file: more than {MAX_BYTES:,} bytes",
                             file=path)
        # PyYAML reads \r\n and \r as line breaks itself: no newline translation needed
        text = content.decode("utf-8")
    except FileNotFoundError:
        raise SweepError("no such sweep file", file=path) from None
    except IsADirectoryError:
        raise SweepError("is a directory, not a sweep file", file=path) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SweepError(f"cannot read: {reason}", file=path) from None
    return parse_sweep_text(text, str(path))


def apply_overrides(raw: RawSweep, assignments: list[str] | tuple[str, ...]) -> RawSweep:
    """Apply ``--set section.key=value`` (value parsed as YAML) on top of the file.

    The path may go as deep as the data does: ``space.learning_rate.low=0.05`` changes one
    end of a range, ``space.1.input_rate=0.3`` one value of a listed configuration. Missing
    mappings on the way are created (validation fills them from the defaults).
    """
    for assignment in assignments:
        where = f"--set {assignment}"
        key, sep, text = assignment.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or any(not p for p in parts):
            raise SweepError("expected section.key=value", file=where)
        key = ".".join(parts)
        try:
            value = _load_yaml(text)[1] if text.strip() else None
        except (yaml.YAMLError, RecursionError) as exc:
            err = _yaml_error(exc, "invalid YAML value", file=where, key=key)
            err.line = None  # the --set names the place; a line inside the value would not
            raise err from None
        # Copy each container on the way down: YAML anchors share them, and a --set of one
        # place (``space.input_rate.low`` in ``input_rate: &r {...}``) must not change another.
        raw.data = target = dict(raw.data)
        for i, part in enumerate(parts):
            if isinstance(target, list):
                index = int(part) if part.isascii() and part.isdigit() else len(target)
                if index >= len(target):
                    raise SweepError(f"{'.'.join(parts[:i])} is a list of {len(target)}, "
                                     f"it has no item '{part}'", file=where, key=key)
                slot: Any = index
            else:  # a mapping: the top level always is, and the check below keeps it so
                slot = part
            if i == len(parts) - 1:
                target[slot] = value
                raw.created -= {k for k in raw.created if k == key or k.startswith(key + ".")}
                break
            child = target[slot] if isinstance(target, list) else target.get(slot)
            if child is None:
                child = {}
                raw.created.add(".".join(parts[: i + 1]))
            if not isinstance(child, (dict, list)):
                raise SweepError(f"{'.'.join(parts[: i + 1])} is a single value, "
                                 "not a section or list", file=where, key=key)
            target[slot] = child = child.copy()
            target = child
        raw.overrides.pop(key, None)  # re-insert: the order says which --set came last
        raw.overrides[key] = assignment
    return raw
