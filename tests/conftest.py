"""Shared fixtures: where the real Sonar file is, and tiny synthetic data sets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from dropsweep.data.dataset import Dataset

REPO = Path(__file__).resolve().parents[1]
# CI and developers keep the real UCI file beside the checkout (never inside it).
SONAR_DIR = Path(os.environ.get("DROPSWEEP_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
# One build of the C training kernel serves the whole run, subprocesses included.
os.environ.setdefault("DROPSWEEP_KERNEL_DIR", tempfile.mkdtemp(prefix="dropsweep-kernels-"))
# Never the user's own cache, even where the per-test one below is not yet in place (a
# module-scoped fixture that searches: its timed conv-net forms would land in forms.json).
os.environ["DROPSWEEP_CACHE_DIR"] = tempfile.mkdtemp(prefix="dropsweep-cache-")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test sees the real Sonar directory and an empty, private download cache."""
    monkeypatch.setenv("DROPSWEEP_DATA_DIR", str(SONAR_DIR))
    monkeypatch.setenv("DROPSWEEP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def one_epoch_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines train one epoch a call, never a span of several (dropsweep.train.loop.SPAN_MACS):
    for tests that place a stop or a checkpoint at a chosen epoch by counting the looks at
    the stop flag or the checkpoints offered (a span looks once and offers one at its end)."""
    from dropsweep.train import loop

    monkeypatch.setattr(loop, "SPAN_MACS", 0.0)


@pytest.fixture
def sonar_dir() -> Path:
    if not (SONAR_DIR / "sonar.csv").exists():
        pytest.skip(f"the real Sonar file is not at {SONAR_DIR} (set DROPSWEEP_DATA_DIR)")
    return SONAR_DIR


@pytest.fixture
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """A small, easy two-class problem: 80 rows, 6 features."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    X = rng.normal(size=(80, 6)).astype(np.float32) + y[:, None] * 1.5
    return X, y


@pytest.fixture
def dataset(blobs: tuple[np.ndarray, np.ndarray]) -> Dataset:
    """The blobs as a dropsweep data set."""
    X, y = blobs
    return Dataset(X=X, y=y.astype(np.int64), classes=("a", "b"), name="blobs", source="memory",
                   feature_names=tuple(f"f{i}" for i in range(X.shape[1])))


@pytest.fixture
def storage(tmp_path: Path) -> str:
    """A fresh SQLite storage URL."""
    return f"sqlite:///{tmp_path}/study.db"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker, hand this process's robustness counts to the controller."""
    from helpers import SUITE

    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["dropsweep_suite"] = dict(SUITE)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown without it
def pytest_testnodedown(node: object, error: object) -> None:
    """In the controller of a parallel run, add up what each worker process counted."""
    from helpers import SUITE

    SUITE.update(getattr(node, "workeroutput", {}).get("dropsweep_suite", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line of what the robustness tests really did (docs/workers.md quotes it), summed
    over the processes of a parallel run."""
    from helpers import SUITE

    if SUITE:
        parts = ", ".join(f"{n} {name}" for name, n in sorted(SUITE.items()))
        terminalreporter.write_line(f"dropsweep robustness exercised: {parts}")
