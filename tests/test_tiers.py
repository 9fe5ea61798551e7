"""The quick tier (``python -m pytest -m "not slow"``, the development loop) keeps some tests of
every module, so each behaviour is still exercised there; a module with none is one of the
wholly end-to-end modules named below, marked slow as a whole. CI runs both tiers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# Every test in these modules runs dropsweep end to end (real processes killed, whole
# search-confirm-test runs, Brownlee's set-ups on the real Sonar file): each says so with a
# module-level ``pytestmark = pytest.mark.slow``.
WHOLLY_SLOW = {
    "test_brownlee_seeds.py",
    "test_interop.py",
    "test_kill.py",
    "test_run.py",
    "test_sonar_benchmark.py",
}


def _is_slow(mark: ast.expr) -> bool:
    """``pytest.mark.slow``, alone or in a list or tuple of marks."""
    if isinstance(mark, (ast.List, ast.Tuple)):
        return any(_is_slow(m) for m in mark.elts)
    return ast.unparse(mark) == "pytest.mark.slow"


def _tiers(path: Path) -> tuple[bool, list[str], list[str]]:
    """Whether the module as a whole is marked slow, its quick tests and its slow ones."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    whole = any(isinstance(node, ast.Assign) and _is_slow(node.value)
                and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
                for node in tree.body)
    quick, slow = [], []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.name.startswith("test"):
            marked = whole or any(_is_slow(d) for d in node.decorator_list)
            (slow if marked else quick).append(node.name)
    return whole, quick, slow


def test_the_slow_marker_is_registered(pytestconfig: pytest.Config) -> None:
    markers = [line.split(":", 1)[0] for line in pytestconfig.getini("markers")]
    assert "slow" in markers, markers


@pytest.mark.parametrize("name", sorted(p.name for p in TESTS.glob("test_*.py")))
def test_every_module_keeps_quick_tests_or_is_named_wholly_slow(name: str) -> None:
    whole, quick, slow = _tiers(TESTS / name)
    assert quick or slow, f"{name} holds no test functions"
    if name in WHOLLY_SLOW:
        assert whole, f"{name} is listed as wholly slow: mark it with a module-level " \
                      f"pytestmark = pytest.mark.slow"
    else:
        assert not whole and quick, (
            f"{name} has no test in the quick tier (-m 'not slow'): keep a fast test of its "
            f"behaviour unmarked, or, if every test in it is end to end, add it to WHOLLY_SLOW "
            f"in tests/test_tiers.py")


def test_every_module_named_wholly_slow_exists() -> None:
    assert sorted(WHOLLY_SLOW - {p.name for p in TESTS.glob("test_*.py")}) == []


def test_the_reading_finds_decorated_module_wide_and_listed_marks(tmp_path: Path) -> None:
    """The reading above on a module of each kind: a decorated test, a module marked as a whole
    through a list of marks, and a helper that is no test."""
    module = tmp_path / "test_x.py"
    module.write_text("import pytest\n\n\n@pytest.mark.slow\n@pytest.mark.parametrize('a', [1])\n"
                      "def test_a(a):\n    pass\n\n\ndef test_b():\n    pass\n\n\n"
                      "def helper():\n    pass\n")
    assert _tiers(module) == (False, ["test_b"], ["test_a"])
    module.write_text("import pytest\n\npytestmark = [pytest.mark.skipif(False, reason=''), "
                      "pytest.mark.slow]\n\n\ndef test_a():\n    pass\n")
    assert _tiers(module) == (True, [], ["test_a"])
