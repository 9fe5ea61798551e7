"""benchmarks/brownlee_seeds.py: the Brownlee reproduction as a distribution over seeds.

The table of docs/brownlee.md comes from this script; these runs check that it trains what
``dropsweep search sweeps/brownlee.yaml --set search.seed=S`` trains, and prints the table
the guide copies. Tiny settings (3 folds x 3 epochs), except the one full seed-0 run (three
trials, a few seconds) that checks the guide's "one draw" column.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dropsweep.cli import main

pytestmark = pytest.mark.slow  # every test trains Brownlee's set-ups on the real Sonar file

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "brownlee_seeds.py"
ROW = re.compile(r"^\| ((?:baseline|input|hidden)[^|]*) \| (—|\d+\.\d\d%) "
                 r"\| (\d+\.\d\d)% ± (\d+\.\d\d) \| (\d+\.\d\d)–(\d+\.\d\d)% \| (\d+) "
                 r"\| (\d+\.\d\d)% \(rank (\d+) of (\d+)", flags=re.M)


def run_script(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The script's main() in this process (its imports are already paid for here)."""
    spec = importlib.util.spec_from_file_location("brownlee_seeds", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # its dataclasses look their module up
    try:
        spec.loader.exec_module(script)
        capsys.readouterr()
        script.main(list(args))
    finally:
        del sys.modules[spec.name]
    return capsys.readouterr().out


def search_accuracies(tmp_path: Path, *overrides: str) -> dict[str, float]:
    """What `dropsweep search sweeps/brownlee.yaml --set ...` records, per placement."""
    storage = f"sqlite:///{tmp_path}/brownlee.db"
    sets = [a for o in overrides for a in ("--set", o)]
    done = CliRunner().invoke(main, ["search", str(REPO / "sweeps" / "brownlee.yaml"), *sets,
                                     "--storage", storage, "--quiet"])
    assert done.exit_code == 0, done.output
    report = CliRunner().invoke(main, ["report", "--study", "brownlee", "--storage", storage,
                                       "--format", "json"])
    assert report.exit_code == 0, report.output
    return {t["params"]["placement"]: 100 * t["accuracy_mean"]
            for t in json.loads(report.stdout)["trials"]}


def test_each_seed_is_what_dropsweep_search_trains_at_that_seed(sonar_dir, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.chdir(REPO)  # the command it prints names the sweep relative to here
    out = run_script(capsys, "--seeds", "2", "--epochs", "3", "--folds", "3")
    rows = ROW.findall(out)
    assert [r[0].split()[0].rstrip(":") for r in rows] == ["baseline", "input", "hidden"]
    per_seed = dict(re.findall(r"^\| (\d+) \| (.*) \|$", out, flags=re.M))
    assert sorted(per_seed) == ["0", "1"]
    seeds = {s: [float(v) for v in line.split(" | ")] for s, line in per_seed.items()}
    for i, (name, article, mean, sd, low, high, n, draw, rank, of) in enumerate(rows):
        values = [seeds["0"][i], seeds["1"][i]]
        assert article == "—"  # the article's numbers only beside the article's set-up
        assert n == of == "2"
        assert all(0 <= v <= 100 for v in values)
        assert float(low) == min(values) and float(high) == max(values)
        assert float(mean) == pytest.approx(sum(values) / 2, abs=0.006)
        assert float(sd) == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5, abs=0.006)
        assert float(draw) == values[0] and rank in ("1", "2")
    assert "ddof = 1" in out
    assert ("`dropsweep search sweeps/brownlee.yaml --set train.epochs=3 --set cv.folds=3 "
            "--set search.seed=S`") in out
    # seed 1 is exactly what the command line trains at seed 1
    cli = search_accuracies(tmp_path, "train.epochs=3", "cv.folds=3", "search.seed=1")
    assert [round(cli[p], 2) for p in ("none", "input", "hidden")] == seeds["1"]


def test_the_documented_seed_0_draw_is_what_the_script_measures(sonar_dir, capsys, tmp_path,
                                                            monkeypatch):
    """The guide's figures are the C kernel's, which computes the same floats at every vector
    width: built here at 16 (an AVX-512 CPU's), whatever this CPU's own is."""
    from dropsweep.families.mlp import kernel

    import torch

    monkeypatch.setenv("DROPSWEEP_KERNEL_DIR", str(tmp_path))
    monkeypatch.setattr(kernel, "FLAGS", [*kernel.FLAGS, "-DVL=16"])
    monkeypatch.setattr(kernel, "_lib", kernel._UNSET)
    if not kernel.applies(torch.device("cpu")):
        pytest.skip("the guide's figures are the C kernel's; it cannot be built here")
    guide = (REPO / "docs" / "brownlee.md").read_text()
    section = guide[guide.index("## Brownlee's article, measured"):]
    section = section[:section.index("\n## ")]
    shown = [float(v) for v in re.findall(r"\| (\d+\.\d\d)% \((?:highest|rank \d+|\d+\w\w)",
                                          section)]
    assert len(shown) == 3
    out = json.loads(run_script(capsys, "--seeds", "1", "--engine", "c", "--format", "json"))
    measured = [c["first_seed"] for c in out["configurations"]]
    assert [round(v, 2) for v in measured] == shown
