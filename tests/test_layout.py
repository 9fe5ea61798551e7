"""The package's shape, read from its source with ``ast``: no import cycle (type-only imports
included: a cycle means two concepts share a home), no function over 80 lines, and the
imports each package must never make (the layout table's "never imports" column)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dropsweep"
ROOT = PACKAGE.parent

MAX_FUNCTION_LINES = 80

def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, mods: dict[str, Path] | None = None) -> set[str]:
    """Every module ``path`` (module ``name``) imports, anywhere in it: at the top, inside
    functions, under TYPE_CHECKING; relative imports resolved. ``from a import b`` names
    ``a.b`` when that is a module of ``mods`` (a submodule), else ``a``."""
    mods = mods or {}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in mods else source)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    mods = modules()
    return {name: {t for t in imported(path, name, mods) if t in mods and t != name}
            for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def files(component: list[str]) -> list[str]:
    mods = modules()
    return sorted(str(mods[m].relative_to(ROOT)) for m in component)


def test_the_package_has_no_import_cycle():
    found = [files(c) for c in cycles(import_graph())]
    assert not found, "import cycles (type-only imports count):\n" + "\n".join(
        "  " + ", ".join(c) for c in found)


def test_the_graph_reader_sees_every_kind_of_import(tmp_path):
    """Function-level, TYPE_CHECKING and relative imports, and a submodule named in a
    ``from package import submodule``, are all edges."""
    graph = import_graph()
    # study/testset.py imports data.protocols inside run_test only
    assert "dropsweep.data.protocols" in graph["dropsweep.study.testset"]
    # render/progress.py reads the search's summary type under TYPE_CHECKING
    assert "dropsweep.study.summary" in graph["dropsweep.render.progress"]
    # `from dropsweep.train import checkpoints` is an edge to the submodule, not the package
    assert "dropsweep.train.checkpoints" in graph["dropsweep.study.runner"]
    assert "dropsweep.train" not in graph["dropsweep.study.runner"]
    # a cycle is found
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def long_functions() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # the def line on: decorators out
                if lines > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                               f"({lines} lines)")
    return out


def test_no_function_is_longer_than_80_lines():
    offenders = long_functions()
    assert not offenders, (f"functions over {MAX_FUNCTION_LINES} lines (split them into "
                           "named helpers):\n  " + "\n  ".join(offenders))


# package -> the top-level modules none of its files may import (the layout table's "never
# imports" column), where it holds today: not yet sweep/ -> optuna (space.py makes Optuna's
# suggestions and distributions)
NEVER_IMPORTS = {
    "sweep": {"torch", "click", "rich"},
    "data": {"optuna", "click", "rich"},
    "families": {"optuna", "click", "rich"},
    "train": {"optuna", "click", "rich"},
    "storage": {"torch", "click", "rich"},
    "study": {"click", "rich"},
    "answers": {"torch", "click", "rich"},
    "render": {"torch", "optuna"},
}
# Known exceptions, each with its reason; the list may only shrink.
EXCEPTIONS = {
    # `report --plots`: the search history figure is Optuna's own plot of the study
    ("dropsweep/render/plots.py", "optuna"),
}


def test_packages_never_import_what_the_layout_forbids():
    offenders, used = [], set()
    for package, banned in NEVER_IMPORTS.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            name, where = module_name(path), str(path.relative_to(ROOT))
            for target in sorted(imported(path, name)):
                top = target.split(".")[0]
                if (where, top) in EXCEPTIONS:
                    used.add((where, top))
                elif top in banned:
                    offenders.append(f"{where} imports {target}")
    assert used == EXCEPTIONS, f"no longer imported: remove from EXCEPTIONS: {EXCEPTIONS - used}"
    assert not offenders, "imports the layout forbids:\n  " + "\n  ".join(sorted(set(offenders)))
