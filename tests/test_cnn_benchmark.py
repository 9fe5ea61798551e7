"""benchmarks/cnn_engines.py runs, in its quick version, and prints what it promises: its
figures are printed, never asserted (timing lives in benchmarks/)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dropsweep.families.cnn.network import FORMS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_benchmark_runs_quick_and_prints_each_form_and_the_chosen_one(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cnn_engines.py"),
                           "--quick", "--json", str(tmp_path / "rows.json")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for shape in ("quick 8x8x1", "quick 12x12x3"):
        for models in (1, 4):
            each = ", ".join(rf"{form} \d+\.\d\dx" for form in FORMS)
            assert re.search(rf"^ *{shape} +{models} models: chosen ({'|'.join(FORMS)}) +"
                             rf"\d+\.\d\dx the plain loop \({each}\)$", out, re.M), out
    assert "| shape | models | plain loop s/step |" in out
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows) == 4
    for row in rows:  # the chosen form's ratio is that form's own, from the same run
        assert row["chosen"] in FORMS
        assert row["chosen_vs_plain"] == row[f"{row['chosen']}_vs_plain"]


def test_the_benchmark_builds_the_same_network_as_the_engine():
    """Its loop baseline is the batched network's shape, layer for layer."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import cnn_engines
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from dropsweep.families.cnn.network import ConvNets, ConvSpec

    for spec in (ConvSpec(in_shape=(3, 32, 32)),  # the Keras example; the digits-cnn sweep:
                 ConvSpec(in_shape=(1, 8, 8), conv=(16, 32), dense=(64,), padding="same")):
        plain = cnn_engines.plain_net(spec)
        batched = ConvNets(spec, 1, torch.Generator().manual_seed(0))
        assert [tuple(p.shape) for p in plain.parameters()] == [
            tuple(p.shape[1:]) for pair in zip(batched.conv_w, batched.conv_b)
            for p in pair] + [tuple(p.shape[1:]) for pair in zip(batched.dense_w,
                                                                 batched.dense_b)
                              for p in pair]
        side = spec.in_shape[1]
        assert plain(torch.zeros(2, spec.in_shape[0], side, side)).shape == (2, 10)


@pytest.mark.slow
def test_the_gpu_script_checks_out_on_the_cpu_and_says_one_line_without_cuda(tmp_path):
    """benchmarks/gpu_all.py: every part at toy sizes on the CPU (the path a GPU takes, but
    the device), one JSON file and one table; asked for CUDA where there is none, one line
    and exit status 0."""
    script = str(REPO / "benchmarks" / "gpu_all.py")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, script, "--device", "cpu", "--quick", "--out",
                           str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    parts = [row["part"] for row in result["rows"]]
    assert parts[:2] == ["mlp sonar", "mlp fashion-shaped"]
    assert {p for p in parts[2:]} == {"cnn quick 12x12x3", "custom mlp", "custom cnn"}
    for row in result["rows"]:  # each ratio is its own row's two times
        assert row["ratio"] == pytest.approx(row["plain"] / row["dropsweep"])
    assert "| part | what | plain loop | dropsweep | ratio |" in done.stdout
    if not torch.cuda.is_available():
        none = subprocess.run([sys.executable, script, "--out", str(tmp_path / "no.json")],
                              capture_output=True, text=True, timeout=300, env=env)
        assert none.returncode == 0 and len(none.stdout.splitlines()) == 1, none.stdout
        assert "no CUDA device here" in none.stdout and not (tmp_path / "no.json").exists()
