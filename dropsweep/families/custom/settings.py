"""What both forms of the custom engine take: the user's network resolved, and the training
settings (:mod:`dropsweep.families.custom.engine` trains model by model,
:mod:`dropsweep.families.custom.batched` all models as one)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class Network:
    """The user's network resolved for one sweep and data: what every model copies."""

    net: nn.Module
    sites: dict[str, list[str]]  # group -> its Dropout modules' names
    constrained: list[str]  # Linear/Conv layers under max-norm
    input_shape: tuple[int, ...]
    floats: int  # activation floats of one row (every leaf module's output)


@dataclass(frozen=True)
class Settings:
    epochs: int
    batch_size: int
    eval_every: int
    max_norm_axis: str = "keras"
    form: str = "loop"
