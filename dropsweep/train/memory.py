"""How much memory a batch of models needs, and how much the device has.

A sweep file can ask for a network no machine can hold (``model.hidden: [100000000]``).
Allocating it would fail deep inside torch with a traceback, after the study and its first
trials were written. Checked before anything is written instead: a trial whose folds alone
cannot fit is refused in one line naming the key; a batch of trials that cannot fit shrinks
to the number that does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch

from dropsweep.errors import DropsweepError

# What is held per model while a batch trains (model.TrainState, trainer.train_trials): the
# weights, their gradients and velocities, the initial copy, and the trained copy a result
# keeps: five floats per parameter (six with Adam's second moment: the family says which).
# The rows are on the device once, whatever the batch
# (protocols.Folds); per model, what one evaluation step gathers (at most GATHER_ROWS rows):
# their inputs, and two activations of the widest layer at a time. All float32.
FLOATS_PER_PARAMETER = 5
BYTES_PER_FLOAT = 4
GATHER_ROWS = 1024  # rows per model one evaluation step gathers (Sonar's folds: all at once)
USABLE_SHARE = 0.8  # of the memory available now: the rest is the process, torch, the OS


@dataclass(frozen=True)
class Need:
    """The bytes one trial (all its folds) needs, by what causes them."""

    parameters: int  # its models' parameters and their buffers: the network's size
    activations: int  # the widest layer's outputs for every row it trains or evaluates
    inputs: int  # the rows themselves: the data's size
    network_key: str = "model"  # the sweep key that makes the network big (MLP: model.hidden)

    @property
    def total(self) -> int:
        return self.parameters + self.activations + self.inputs


def trial_need(sizes: Sequence[int], folds: int, max_rows: int,
               network_key: str = "model.hidden", floats: int = FLOATS_PER_PARAMETER) -> Need:
    """Bytes one trial's ``folds`` models need, for layer ``sizes`` (inputs first) and at
    most ``max_rows`` rows per fold; ``floats`` per parameter (Adam: one more slot)."""
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    per_model = BYTES_PER_FLOAT * folds
    rows = min(max_rows, GATHER_ROWS)
    return Need(parameters=per_model * params * floats,
                activations=per_model * rows * 2 * max(sizes[1:]),
                inputs=per_model * rows * sizes[0], network_key=network_key)


def available(device: torch.device) -> int | None:
    """Bytes that can be allocated on ``device`` now (None where it cannot be told)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(n: float) -> str:
    """Bytes in the unit a reader takes in at a glance."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1e6:.2g} MB"


def fit_batch(need: Need, batch: int, free: int | None, *, file: str, device: str) -> int:
    """How many trials of ``need`` train at once: ``batch``, fewer if only fewer fit.

    A trial that cannot fit on its own is a one-line error naming the key that makes it big
    (``model.hidden``, or ``data`` when the rows themselves dominate), what it needs and
    what is free.
    """
    if free is None:
        return batch
    usable = int(free * USABLE_SHARE)
    if need.total <= usable:
        return max(1, min(batch, usable // max(need.total, 1)))
    key, fix = (("data", "use fewer rows or features")
                if need.inputs > need.parameters + need.activations
                else (need.network_key, "make the network smaller"))
    raise DropsweepError(
        f"one trial needs about {gigabytes(need.total)} of memory to train "
        f"({gigabytes(need.parameters)} for the network's parameters, "
        f"{gigabytes(need.activations + need.inputs)} for its rows and activations) and "
        f"{device} has {gigabytes(free)} available: {fix}", file=file, key=key)
