"""Keras's optimizer updates, written out, for a batch of models trained together.

Every tensor carries a leading ``models`` axis and every hyperparameter may differ by model
(a ``[models]`` tensor), so one call updates every model of a batch. Keras's formulas, not
PyTorch's, because Keras is what users of these sweeps compare with:

* SGD with momentum: ``v = momentum * v - lr * g; w = w + v`` (PyTorch's SGD keeps
  ``b = momentum * b + g; w = w - lr * b``: the same only while lr is constant);
* Adam (``beta_1`` 0.9, ``beta_2`` 0.999, ``epsilon`` 1e-7, Keras's defaults): ``m += (g - m)
  * (1 - beta_1)``, ``v += (g^2 - v) * (1 - beta_2)``, ``alpha = lr * sqrt(1 - beta_2^t) / (1 -
  beta_1^t)``, ``w -= alpha * m / (sqrt(v) + epsilon)`` — the epsilon is Kingma and Ba's
  "epsilon hat", added to the uncorrected ``sqrt(v)``; PyTorch adds its ``eps`` to the
  bias-corrected one, which differs wherever gradients are small.

The MLP's engines apply the SGD rule in their own fused code (network.py, kernel.c); these
are the reference for families that step with tensors (the conv nets, issue 14).
"""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("sgd", "adam")
ADAM_BETA_1 = 0.9  # Keras's defaults
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7


def _per_model(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A scalar, or one value per model, shaped to broadcast over ``like``."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return t.view(-1, *([1] * (like.dim() - 1))) if t.dim() else t


@torch.no_grad()
def sgd_step(weight: torch.Tensor, velocity: torch.Tensor, grad: torch.Tensor,
             lr: torch.Tensor | float, momentum: torch.Tensor | float) -> None:
    """Keras SGD, in place: ``v = momentum * v - lr * g; w += v``."""
    velocity.mul_(_per_model(momentum, weight)).sub_(_per_model(lr, weight) * grad)
    weight.add_(velocity)


@torch.no_grad()
def adam_step(weight: torch.Tensor, m: torch.Tensor, v: torch.Tensor, grad: torch.Tensor,
              lr: torch.Tensor | float, step: int, beta_1: float = ADAM_BETA_1,
              beta_2: float = ADAM_BETA_2, epsilon: float = ADAM_EPSILON) -> None:
    """Keras Adam, in place; ``step`` counts from 1 (Keras's ``iterations + 1``)."""
    m.add_((grad - m) * (1.0 - beta_1))
    v.add_((grad * grad - v) * (1.0 - beta_2))
    alpha = _per_model(lr, weight) * (math.sqrt(1.0 - beta_2**step) / (1.0 - beta_1**step))
    weight.sub_(m * alpha / (v.sqrt() + epsilon))
