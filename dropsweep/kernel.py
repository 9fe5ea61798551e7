"""The compiled CPU training kernel (``kernel.c``): build once, cache, call through ctypes.

On the CPU the batched torch step is bound by memory traffic (every element-wise pass
streams all models' weights, gradients and velocities) and by per-call overhead; the C
kernel trains one model at a time with its parameters in cache and is several times faster
(``benchmarks/trial_speed.py``). It is plain C compiled at first use with the system
compiler for this CPU (``-march=native``) and cached per source, flags and CPU, so nothing
is needed at install time. Where it cannot be built (no compiler) or does not apply (CUDA,
``DROPSWEEP_KERNEL=torch``), the trainer uses the torch path, which is also the reference
the tests hold this kernel to.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

SOURCE = Path(__file__).with_name("kernel.c")
# Reassociation lets the compiler vectorise the sums, contraction fuses multiply-adds (ISO C
# mode turns it off); not -ffast-math or
# -funsafe-math-optimizations, whose start-up code would flush subnormals to zero process-wide.
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
         "-fno-signed-zeros", "-ffp-contract=fast", "-shared", "-fPIC", "-std=c99"]
_UNSET = object()
_lib: object = _UNSET
_pool: ThreadPoolExecutor | None = None


def kernel_dir() -> Path:
    """$DROPSWEEP_KERNEL_DIR, else ``kernels/`` in dropsweep's cache directory."""
    if os.environ.get("DROPSWEEP_KERNEL_DIR"):
        return Path(os.environ["DROPSWEEP_KERNEL_DIR"]).expanduser()
    from dropsweep.data import cache_dir

    return cache_dir() / "kernels"


def _cpu_signature() -> str:
    """-march=native code must not run on another CPU sharing the cache (e.g. an NFS home)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + platform.processor() + flags


def _build(compiler: str) -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *FLAGS]).encode()
                            + _cpu_signature().encode()).hexdigest()[:16]
    target = kernel_dir() / f"dropsweep_kernel_{digest}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # build beside the target, then rename: concurrent workers never load a partial file
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], check=True,
                           capture_output=True, timeout=120)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


def load() -> ctypes.CDLL | None:
    """The kernel library, or None where it is switched off or cannot be built here."""
    global _lib
    if _lib is _UNSET:
        _lib = None
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if os.environ.get("DROPSWEEP_KERNEL", "c") != "torch" and compiler:
            try:
                lib = ctypes.CDLL(str(_build(compiler)))
            except (OSError, subprocess.SubprocessError):
                lib = None
            if lib is not None:
                p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
                lib.dropsweep_epoch.restype = ctypes.c_int
                lib.dropsweep_epoch.argtypes = [i64, i64, i64, p, i64, i64] + [p] * 17
                lib.dropsweep_masks.restype = None
                lib.dropsweep_masks.argtypes = [p, i64, ctypes.c_uint64, ctypes.c_uint64, f32]
                _lib = lib
    return _lib  # type: ignore[return-value]


def applies(device: torch.device) -> bool:
    return device.type == "cpu" and load() is not None


def _ptr(t: torch.Tensor) -> int:
    assert t.is_contiguous() and t.device.type == "cpu"
    return t.data_ptr()


def _ptrs(ts: Sequence[torch.Tensor]) -> ctypes.Array:
    return (ctypes.c_void_p * len(ts))(*[_ptr(t) for t in ts])


def train_epoch(
    weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
    vweights: Sequence[torch.Tensor], vbiases: Sequence[torch.Tensor],
    x_train: torch.Tensor, y_train: torch.Tensor, fold_of: torch.Tensor, order: torch.Tensor,
    n_train: torch.Tensor, lr: torch.Tensor, momentum: torch.Tensor, max_norm: torch.Tensor,
    input_rate: torch.Tensor, hidden_rate: torch.Tensor, key: torch.Tensor, counter: torch.Tensor,
    batch_size: int, threads: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of every model, in place, the models split over ``threads`` threads; return
    which models now hold a non-finite parameter, and which of those a NaN (bool ``[models]``).

    ctypes releases the GIL during the call, so the threads really run in parallel.
    ``counter`` (int64 viewed as uint64, one per model) advances with the masks drawn.
    """
    lib = load()
    assert lib is not None, "the C kernel is not available"
    models = int(weights[0].shape[0])
    status = torch.zeros(models, dtype=torch.int8)
    sizes = torch.tensor([weights[0].shape[1]] + [int(w.shape[2]) for w in weights],
                         dtype=torch.int64)
    args = [len(weights), _ptr(sizes), batch_size, int(x_train.shape[1]), _ptr(x_train),
            _ptr(y_train), _ptr(fold_of), _ptr(order), _ptr(n_train), _ptrs(weights),
            _ptrs(biases), _ptrs(vweights), _ptrs(vbiases), _ptr(lr), _ptr(momentum),
            _ptr(max_norm), _ptr(input_rate), _ptr(hidden_rate), _ptr(key), _ptr(counter),
            _ptr(status)]
    # one contiguous share of the models per thread (finer chunks measured no faster)
    parts = max(1, min(threads, models))
    bounds = [models * i // parts for i in range(parts + 1)]

    def run(i: int) -> int:
        return lib.dropsweep_epoch(bounds[i], bounds[i + 1], *args)

    if parts == 1:
        codes = [run(0)]
    else:
        global _pool
        if _pool is None or _pool._max_workers != threads:  # noqa: SLF001
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads)
        codes = list(_pool.map(run, range(parts)))
    if any(codes):
        raise MemoryError("the training kernel could not allocate its scratch memory")
    return status > 0, status == 2


def masks(n: int, key: int, counter: int, rate: float) -> torch.Tensor:
    """``n`` dropout mask values exactly as the kernel draws them (for tests)."""
    lib = load()
    assert lib is not None, "the C kernel is not available"
    out = torch.empty(n, dtype=torch.float32)
    lib.dropsweep_masks(_ptr(out), n, key, counter, rate)
    return out
