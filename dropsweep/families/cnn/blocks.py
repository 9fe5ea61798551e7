"""Keras-faithful pieces of a conv net, batched over models (a leading ``models`` axis).

What the Keras CIFAR-10 example relies on, each written from Keras's own formula and
tested against it on hand-made tensors (``tests/test_cnn_blocks.py``):

* initialisers: He-uniform (limit ``sqrt(6 / fan_in)``) and Glorot-uniform (limit
  ``sqrt(6 / (fan_in + fan_out))``), with Keras's fans for a conv kernel: ``fan_in =
  kh * kw * in_channels``, ``fan_out = kh * kw * out_channels``; biases zero;
* ``MaxNorm(c)``: ``w * clip(n, 0, c) / (eps + n)``, ``eps = 1e-7``, the norm ``n`` taken
  along Keras's axis. Keras's default ``axis=0`` on a Conv2D kernel ``(rows, cols, in,
  out)`` constrains each length-``rows`` column — what the example's code literally does;
  ``axis=[0, 1, 2]`` (Keras's documentation's advice) constrains each filter. Both are
  offered (``keras``, ``filter``); kernels here are in PyTorch's layout ``[out, in, rows,
  cols]``, so Keras's axis 0 is dimension ``rows``;
* spatial dropout (Keras ``noise_shape=(batch, 1, 1, channels)``, PyTorch ``Dropout2d``):
  one mask per (example, channel), kept maps scaled by ``1 / (1 - rate)``;
* the feature-map sizes of conv blocks (valid or same 3x3 convolutions, 2x2 max-pooling
  with Keras's floor), refusing a network whose maps shrink below 1x1.

Pure torch: no Optuna, no click.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

KERAS_EPSILON = 1e-7
INITS = ("he_uniform", "glorot_uniform")
MAX_NORM_AXES = ("keras", "filter")
PADDINGS = ("valid", "same")


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) as Keras computes them, for a PyTorch-layout weight of one model:
    a dense ``[out, in]`` or a conv ``[out, in, rows, cols]``."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def init_limit(kind: str, shape: Sequence[int]) -> float:
    """The uniform initialiser's limit: weights are drawn from U(-limit, limit)."""
    fan_in, fan_out = fans(shape)
    if kind == "he_uniform":
        return math.sqrt(6.0 / fan_in)
    if kind == "glorot_uniform":
        return math.sqrt(6.0 / (fan_in + fan_out))
    raise ValueError(f"init must be one of {INITS}, got {kind!r}")


def uniform_init(kind: str, models: int, shape: Sequence[int], generator: torch.Generator,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """``[models, *shape]`` weights drawn from Keras's ``kind`` initialiser."""
    limit = init_limit(kind, shape)
    u = torch.rand((models, *shape), generator=generator, device=device)
    return (u * 2.0 - 1.0) * limit


def _norm_dims(weight: torch.Tensor, axis: str) -> tuple[int, ...]:
    """The dimensions of a ``[models, out, in, *kernel]`` weight that a norm sums over, for
    a kernel of any rank (the custom family's Conv1d and Conv3d too)."""
    if axis not in MAX_NORM_AXES:
        raise ValueError(f"max_norm_axis must be one of {MAX_NORM_AXES}, got {axis!r}")
    if weight.dim() == 3:  # dense [models, out, in]: each unit's incoming weights (axis 0)
        return (2,)
    if axis == "keras":  # Keras axis=0 on (rows, cols, in, out): along the rows
        return (3,)
    return tuple(range(2, weight.dim()))  # Keras axis=[0, 1, 2]: the whole filter


def max_norm(weight: torch.Tensor, c: torch.Tensor | float, axis: str = "keras"
             ) -> torch.Tensor:
    """Keras's ``MaxNorm(c, axis)`` applied to each model's weight (``c`` per model or one
    for all): ``w * clip(n, 0, c) / (eps + n)``."""
    dims = _norm_dims(weight, axis)
    norms = weight.pow(2).sum(dim=dims, keepdim=True).sqrt()
    limit = torch.as_tensor(c, dtype=weight.dtype, device=weight.device)
    if limit.dim():
        limit = limit.view(-1, *([1] * (weight.dim() - 1)))
    return weight * torch.minimum(norms, limit) / (KERAS_EPSILON + norms)


def spatial_mask(models: int, rows: int, channels: int, rate: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    """``[models, rows, channels, 1, 1]``: each feature map kept with probability
    ``1 - rate[model]`` and then scaled by ``1 / (1 - rate)``, dropped whole otherwise."""
    keep = 1.0 - rate.view(-1, 1, 1, 1, 1)
    u = torch.rand((models, rows, channels, 1, 1), generator=generator,
                   device=rate.device)
    return (u < keep).to(rate.dtype) / keep


def feature_sizes(height: int, width: int, blocks: int, kernel: int = 3, pool: int = 2,
                  padding: str = "valid") -> list[tuple[int, int]]:
    """The (height, width) after each conv block (a convolution, then max-pooling); a
    ValueError names the first block whose maps would be empty."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    sizes = []
    h, w = height, width
    for block in range(1, blocks + 1):
        if padding == "valid":
            h, w = h - kernel + 1, w - kernel + 1
        if min(h, w) < 1:
            raise ValueError(f"conv block {block}'s {kernel}x{kernel} convolution leaves no "
                             f"feature map ({height}x{width} input, {padding} padding)")
        h, w = h // pool, w // pool  # Keras MaxPooling2D, valid: floor
        if min(h, w) < 1:
            raise ValueError(f"conv block {block}'s {pool}x{pool} pooling leaves no feature "
                             f"map ({height}x{width} input, {padding} padding)")
        sizes.append((h, w))
    return sizes
