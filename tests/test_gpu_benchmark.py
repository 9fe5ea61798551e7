"""benchmarks/gpu_cnn.py runs, in its smallest version, and prints what it promises: its
figures are printed, never asserted (timing lives in benchmarks/)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_benchmark_runs_quick_and_prints_the_ratios():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_cnn.py"), "--quick",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert ("no CUDA device used: this ran the quick version (--quick) on the CPU; its "
            "figures are not GPU figures") in out
    assert "extrapolated to one epoch-equivalent" in out
    for models in (1, 8, 32):
        assert re.search(rf"^ratio batched/loop at {models} models: \d+\.\d\dx trials per "
                         r"hour with the engine's form \((grouped|loop)\); grouped \d+\.\d\dx, "
                         r"engine loop \d+\.\d\dx$", out, re.M), out


def test_the_benchmark_builds_the_same_network_as_the_engine():
    """Its loop baseline is the batched network's shape, layer for layer."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_cnn
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from dropsweep.families.cnn.network import ConvNets, ConvSpec

    for spec in (ConvSpec(in_shape=(3, 32, 32)),  # the Keras example; the digits-cnn sweep:
                 ConvSpec(in_shape=(1, 8, 8), conv=(16, 32), dense=(64,), padding="same")):
        plain = gpu_cnn.plain_net(spec)
        batched = ConvNets(spec, 1, torch.Generator().manual_seed(0))
        assert [tuple(p.shape) for p in plain.parameters()] == [
            tuple(p.shape[1:]) for pair in zip(batched.conv_w, batched.conv_b)
            for p in pair] + [tuple(p.shape[1:]) for pair in zip(batched.dense_w,
                                                                 batched.dense_b)
                              for p in pair]
        side = spec.in_shape[1]
        assert plain(torch.zeros(2, spec.in_shape[0], side, side)).shape == (2, 10)
