"""How many trials a worker trains at once: the batch asked for, or the fewer that fit in its
device's free memory, shared with the other workers on that device (not with those on other
GPUs).

Checked before a search writes anything to its storage, and apart from the loop
(:mod:`dropsweep.study.runner`): the CLI sizes each of its ``--workers``' batches before any
of them runs. What a batch of models needs, and what a device has free, is
:mod:`dropsweep.train.memory`'s.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from dropsweep.data.dataset import Dataset
from dropsweep.sweep.config import Sweep
from dropsweep.train import memory


def batch_that_fits(sweep: Sweep, dataset: Dataset, batch: int, device: torch.device,
                    workers: int = 1) -> int:
    """``batch``, or the fewer trials that fit in ``device``'s memory beside ``workers - 1``
    other workers on that device; a trial that cannot fit at all is a one-line error naming the key.
    Checked before anything is written to the storage."""
    need = sweep.family.need(sweep.sections, dataset, sweep.splits)
    free = memory.available(device)
    share = None if free is None else free // workers
    return memory.fit_batch(need, batch, share, file=sweep.file, device=str(device))


def worker_batches(sweep: Sweep, dataset: Dataset, batch: int, devices: Sequence[str]
                   ) -> list[int]:
    """Each worker's batch (one device name a worker): what fits in its device's free
    memory shared with the other workers on that device only, not with those on other GPUs."""
    sharing = Counter(devices)
    fits = {name: batch_that_fits(sweep, dataset, batch, torch.device(name), count)
            for name, count in sharing.items()}
    return [fits[name] for name in devices]
