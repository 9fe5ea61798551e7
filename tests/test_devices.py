"""``--device auto|cpu|cuda|cuda:N`` (issue 14, item 6): the name checked, workers spread
over GPUs, CUDA's determinism switches; and, where a GPU exists, the batched conv nets on it
against the CPU. This machine has no GPU: CUDA is faked where only the logic is tested."""

from __future__ import annotations

import os

import pytest
import torch

from dropsweep.train import devices
from dropsweep.train.devices import check_name, resolve_device, worker_devices
from dropsweep.errors import DropsweepError
from dropsweep.families.cnn.network import ConvNets, ConvSpec

no_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                             reason="no CUDA device on this machine")


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_names_of_the_right_form_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda0", "mps",
                                  "cpu:0", ""])
def test_any_other_name_is_one_line(name):
    with pytest.raises(DropsweepError) as err:
        check_name(name)
    assert str(err.value) == f"--device must be auto, cpu, cuda or cuda:N, got '{name}'"
    with pytest.raises(DropsweepError):
        resolve_device(name)


def test_cuda_without_cuda_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(DropsweepError, match=rf"^--device {name}: no CUDA device is "
                                                 r"available here \(try --device cpu\)$"):
            resolve_device(name)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_gpu_index_this_machine_lacks_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(devices, "deterministic_cuda", lambda: None)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(DropsweepError) as err:
        resolve_device("cuda:2")
    assert str(err.value) == "--device cuda:2: this machine has 2 CUDA devices (cuda:0 to cuda:1)"


def test_resolving_a_cuda_device_asks_for_determinism(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    asked = []
    monkeypatch.setattr(devices, "deterministic_cuda", lambda: asked.append(True))
    resolve_device("cpu")
    assert asked == []
    resolve_device("cuda:0")
    assert asked == [True]


def test_workers_are_dealt_out_over_the_gpus():
    assert worker_devices("cuda", 3, 2) == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda", 4, 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert worker_devices("auto", 2, 3) == ["cuda:0", "cuda:1"]
    assert worker_devices("cuda:1", 3, 2) == ["cuda:1"] * 3
    assert worker_devices("cpu", 3, 2) == ["cpu"] * 3
    assert worker_devices("auto", 2, 0) == ["cpu", "cpu"]
    with pytest.raises(DropsweepError, match="no CUDA device is available here"):
        worker_devices("cuda", 2, 0)
    with pytest.raises(DropsweepError, match="this machine has 2 CUDA devices"):
        worker_devices("cuda:2", 2, 2)
    with pytest.raises(DropsweepError, match="--device must be"):
        worker_devices("gpu", 2, 2)


def test_the_determinism_switches_are_set():
    """Set, then put back as they were: other tests run in this process."""
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
              torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        devices.deterministic_cuda()
        assert torch.backends.cudnn.deterministic is True
        assert torch.backends.cudnn.benchmark is False
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[:2]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])
        if before[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = before[4]


# ----------------------------------------------------------------------------- a real GPU


def trained_on(device: str, steps: int = 3) -> list[torch.Tensor]:
    """Two conv nets (a batch of two trials' models) from the same CPU-drawn weights and
    minibatches, a few Adam steps on ``device``; their parameters, on the CPU."""
    spec = ConvSpec(in_shape=(3, 16, 16), conv=(8, 8), dense=(32,))
    draw = torch.Generator().manual_seed(0)
    nets = ConvNets(spec, 2, draw)
    if device != "cpu":
        moved = ConvNets(spec, 2, torch.Generator(device=device), device)
        moved.set_tensors([t.to(device) for t in nets.tensors()])
        nets = moved
    lr = torch.tensor([1e-3, 3e-3], device=device)
    for _ in range(steps):
        x = torch.rand(2, 32, 3, 16, 16, generator=draw)
        y = torch.randint(0, 10, (2, 32), generator=draw)
        nets.step(x.to(device), y.to(device), optimizer="adam", lr=lr)
    return [p.cpu() for p in nets.parameters()]


def test_the_comparison_runs_here_on_the_cpu():
    """The CUDA test's own code, CPU against CPU (it must at least run where it skips)."""
    for a, b in zip(trained_on("cpu"), trained_on("cpu")):
        assert torch.equal(a, b)


@no_cuda
def test_a_batch_of_conv_nets_on_cuda_matches_the_cpu():
    resolve_device("cuda")  # as training would: determinism requested
    for a, b in zip(trained_on("cpu"), trained_on("cuda")):
        assert torch.allclose(a, b, atol=1e-4, rtol=0), float((a - b).abs().max())
