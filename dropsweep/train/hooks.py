"""What a family's ``train`` is handed besides its configurations, splits, sections and
seed: :class:`TrainHooks`, one value for every family and engine.

The caller listens and steers through it (held-out accuracy every few epochs and the trials
to prune, the stop flag, progress, checkpoints to write and the one to go on from, the
engine asked for, and where a notice goes); the shared epoch loop
(:func:`dropsweep.train.loop.run_epochs`) does what it says, the same way for every family.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from dropsweep.train.loop import CheckpointHook, Checkpointer, ProgressHook


def to_stderr(text: str) -> None:
    """A notice where no caller listens for it: one ``note:`` line on stderr."""
    print(f"note: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class TrainHooks:
    """How a batch of trials trains, besides what it trains: everything optional."""

    # every eval_every epochs: (epoch, each trial's held-out accuracy) -> the trials to prune
    on_checkpoint: CheckpointHook | None = None
    should_stop: Callable[[], bool] | None = None  # True: end the batch (Ctrl-C, SIGTERM)
    on_progress: ProgressHook | None = None  # the fraction of the batch done
    save: Checkpointer | None = None  # writes the batch's state now and then
    resume: Mapping[str, Any] | None = None  # a state ``save`` wrote: go on from it
    engine: str = "auto"  # the family's engine or form, "auto": the family chooses
    # a line the user should read (the search's notice channel); the default prints it
    on_notice: Callable[[str], None] = to_stderr


NO_HOOKS = TrainHooks()
