"""Which device trains: ``--device auto|cpu|cuda|cuda:N``, asked once and checked once.

The name is checked for its form where it is parsed (:func:`check_name`, no CUDA needed),
and against this machine's GPUs where training starts (:func:`resolve_device`), which also
asks CUDA for deterministic kernels (:func:`deterministic_cuda`). With ``--workers N`` the
workers are spread over the GPUs by :func:`worker_devices`.
"""

from __future__ import annotations

import os
import re

import torch

from dropsweep.errors import DropsweepError

_CUDA = re.compile(r"cuda(?::(\d+))?")

# cuBLAS's documented setting for reproducible results (read when its first handle is made,
# so set before the first CUDA matrix product).
CUBLAS_WORKSPACE = ":4096:8"


def check_name(name: str) -> str:
    """``name`` if it has a device's form (auto, cpu, cuda, cuda:N); else a one-line error.
    Says nothing of whether this machine has that device: see :func:`resolve_device`."""
    if name in ("auto", "cpu") or _CUDA.fullmatch(name):
        return name
    raise DropsweepError(f"--device must be auto, cpu, cuda or cuda:N, got '{name}'")


def _index(name: str) -> int | None:
    """N of ``cuda:N``; None for plain ``cuda``."""
    match = _CUDA.fullmatch(name)
    return None if match is None or match.group(1) is None else int(match.group(1))


def _no_such_gpu(name: str, count: int) -> DropsweepError:
    return DropsweepError(f"--device {name}: this machine has {count} CUDA device"
                          f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one, or for a GPU index this
    machine lacks, is a user error. A CUDA device is set up for deterministic training."""
    check_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DropsweepError(f"--device {name}: no CUDA device is available here "
                             "(try --device cpu)")
    index, count = _index(name), torch.cuda.device_count()
    if index is not None and index >= count:
        raise _no_such_gpu(name, count)
    deterministic_cuda()
    return torch.device(name)


def deterministic_cuda() -> None:
    """Ask CUDA for the same results from the same inputs: deterministic cuDNN kernels, no
    autotuning (which may pick another algorithm each run), deterministic torch operations
    where they exist (a warning, not an error, where they do not), and cuBLAS's fixed
    workspace. Requested, not measured here: this machine has no GPU (README, "GPUs")."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def worker_devices(name: str, workers: int, gpu_count: int) -> list[str]:
    """The device of each of ``workers`` workers: plain ``cuda`` (or ``auto`` with GPUs)
    deals them out over the ``gpu_count`` GPUs in turn (3 workers on 2 GPUs: cuda:0,
    cuda:1, cuda:0); ``cuda:N`` pins them all to GPU N; ``cpu`` (or ``auto`` without GPUs)
    puts them all on the CPU. Pure: the caller counts the GPUs."""
    check_name(name)
    if name == "auto":
        name = "cuda" if gpu_count > 0 else "cpu"
    if name == "cpu":
        return ["cpu"] * workers
    if gpu_count <= 0:
        raise DropsweepError(f"--device {name}: no CUDA device is available here "
                             "(try --device cpu)")
    index = _index(name)
    if index is not None:
        if index >= gpu_count:
            raise _no_such_gpu(name, gpu_count)
        return [name] * workers
    return [f"cuda:{w % gpu_count}" for w in range(workers)]


def gpu_count() -> int:
    """The CUDA devices this process sees (``CUDA_VISIBLE_DEVICES`` applies); 0 without CUDA."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def out_of_memory(error: BaseException) -> bool:
    """Whether training failed for want of device memory (CUDA's; torch raises the same
    kind for other accelerators): the batch then trains in halves (``dropsweep.train.retry``)."""
    return isinstance(error, torch.OutOfMemoryError)


def release_cached_memory() -> None:
    """Give the failed attempt's cached CUDA blocks back before the halves allocate theirs."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def oom_failure(device: torch.device, error: BaseException) -> str:
    """A trial's failure reason when it ran out of memory even trained alone."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"out of memory on {device} even trained alone ({line[:200]})"
