"""Which device trains: ``--device auto|cpu|cuda``, asked once and checked once."""

from __future__ import annotations

import torch

from dropsweep.errors import DropsweepError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DropsweepError("--device cuda: no CUDA device is available here (try --device cpu)")
    if name not in ("cpu", "cuda"):
        raise DropsweepError(f"--device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)

