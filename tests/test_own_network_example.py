"""examples/own-network: the module and sweep docs/own-network.md walks through
are valid as shipped, and run end to end (shortened) from their own directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dropsweep.cli import main
from dropsweep.sweep.config import build_sweep
from dropsweep.families.custom import resolve
from dropsweep.sweep.file import load_sweep

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own-network"


def test_the_example_sweep_groups_every_dropout_module_of_the_example_network():
    sweep = build_sweep(load_sweep(EXAMPLE / "digits.yaml"))
    fam = sweep.family
    assert fam.group_values[0] == "none" and "input+conv+dense" in fam.group_values
    rates = [d.name for d in fam.dimensions if d.when and d.when[0] == "placement"]
    assert rates == ["input_rate", "conv_rate", "dense_rate"]
    build, _ = resolve.entry_point("net.py:build", str(EXAMPLE))
    net = build((1, 8, 8), 10, channels=4, blocks=2, hidden=8)
    drops = [name for name, m in net.named_modules()
             if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d))]
    assert drops == ["drop_in", "blocks.0.drop", "blocks.1.drop", "head.drop"]
    assert net(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.slow
def test_the_example_searches_reports_and_exports_from_its_own_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    short = ["--set", "train.epochs=2", "--set", "train.eval_every=1", "--trials", "6",
             "--set", "model.args={channels: 4, blocks: 2, hidden: 8}"]
    result = runner.invoke(main, ["search", str(EXAMPLE / "digits.yaml"), *short],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = runner.invoke(main, ["report", "--study", "own-network"]).stdout
    assert "6 complete" in report and re.search(r"\bconv rate\b", report)
    out = runner.invoke(main, ["export", "--study", "own-network", "-o", "best.yaml",
                               "--model", "best.pt"])
    assert out.exit_code == 0, out.output
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    build, _ = resolve.entry_point("net.py:build", str(EXAMPLE))
    net = build(tuple(saved["input_shape"]), len(saved["classes"]), channels=4, blocks=2,
                hidden=8)
    net.load_state_dict(saved["state_dict"])
