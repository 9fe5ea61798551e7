"""benchmarks/sonar_end_to_end.py runs, tiny, and prints what it promises, the paired
``--against`` baseline too: its figures are printed, never asserted (timing lives in
benchmarks/)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SONAR_DIR

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # two searches and a plain loop, however tiny


def test_the_end_to_end_benchmark_runs_and_prints_both_searches_and_the_plain_loop(sonar_dir):
    # a relative data directory, as the README writes it: the searches run elsewhere
    relative = os.path.relpath(SONAR_DIR, REPO)
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "sonar_end_to_end.py"), "--trials", "2",
         "--epochs", "2", "--rounds", "1", "--against", str(REPO), "--ceiling"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "DROPSWEEP_DATA_DIR": relative})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"^plain per-fold loop \(1 thread\): \d+\.\d\d s a trial$", out, re.M), out
    assert re.search(r"^dropsweep search, 2 trials, random sampler, whole process: "
                     r"\d+\.\d s = \d+\.\d{3} s a trial$", out, re.M), out
    assert re.search(r"^ratio: \d+\.\dx the plain loop's trials per hour$", out, re.M), out
    assert re.search(rf"^the same search, code of {re.escape(str(REPO))}: \d+\.\d s = "
                     r"\d+\.\dx the plain loop; this code \d+\.\d\dx as fast$", out, re.M), out
    # every trial trained its 2 epochs: 2 trials x 2
    assert re.search(r"^ceiling: 4 trial-epochs trained \(of 4\) x \d+\.\d MFLOP", out, re.M), out
    assert re.search(r"^  100x the plain loop leaves the whole search \d+\.\d\d s = ", out, re.M), out
    assert len(re.findall(r"^  torch\.bmm of 160 ", out, re.M)) == 3, out
