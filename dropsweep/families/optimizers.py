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

The MLP's engines apply the SGD rule in their own fused code (network.py, kernel.c) and
step a batch with Adam here; the conv nets step every batch here (issue 14).
"""

from __future__ import annotations

import math
from typing import Sequence

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


def _bias_correction(step: torch.Tensor | int, beta_1: float, beta_2: float,
                     like: torch.Tensor) -> torch.Tensor | float:
    """``sqrt(1 - beta_2^t) / (1 - beta_1^t)``, for one step count or one per model."""
    if isinstance(step, int):
        return math.sqrt(1.0 - beta_2**step) / (1.0 - beta_1**step)
    t = _per_model(step, like).to(torch.float64)  # float64: 0.999^t needs the digits
    return ((1.0 - beta_2**t).sqrt() / (1.0 - beta_1**t)).to(like.dtype)


@torch.no_grad()
def adam_step(weight: torch.Tensor, m: torch.Tensor, v: torch.Tensor, grad: torch.Tensor,
              lr: torch.Tensor | float, step: torch.Tensor | int,
              beta_1: float = ADAM_BETA_1, beta_2: float = ADAM_BETA_2,
              epsilon: float = ADAM_EPSILON) -> None:
    """Keras Adam, in place; ``step`` counts from 1 (Keras's ``iterations + 1``), one count
    for all or one per model (a model whose split ran out of rows did not step)."""
    m.add_((grad - m) * (1.0 - beta_1))
    v.add_((grad * grad - v) * (1.0 - beta_2))
    alpha = _per_model(lr, weight) * _bias_correction(step, beta_1, beta_2, weight)
    weight.sub_(m * alpha / (v.sqrt() + epsilon))


@torch.no_grad()
def step_models(weight: torch.Tensor, slots: tuple[torch.Tensor, torch.Tensor],
                grad: torch.Tensor, *, adam: torch.Tensor, lr: torch.Tensor,
                momentum: torch.Tensor, step: torch.Tensor,
                stepping: torch.Tensor | None = None) -> None:
    """One update of a batch whose models may use different optimizers: model ``i`` takes
    Keras Adam where ``adam[i]``, Keras SGD with ``momentum[i]`` otherwise; where
    ``stepping[i]`` is False (its split has no rows left this epoch) nothing of it changes,
    as in Keras. ``slots``: SGD's velocity in the first, Adam's ``(m, v)`` in both."""
    uses_adam, uses_sgd = bool(adam.any()), not bool(adam.all())
    before = None if stepping is None or bool(stepping.all()) else (
        weight.clone(), slots[0].clone(), slots[1].clone())
    if uses_adam and uses_sgd:
        was = weight.clone(), slots[0].clone()
        sgd_step(weight, slots[0], grad, lr, momentum)
        sgd = weight.clone(), slots[0].clone()
        weight.copy_(was[0])
        slots[0].copy_(was[1])
        adam_step(weight, slots[0], slots[1], grad, lr, step)
        on = _per_model(adam, weight).to(torch.bool)
        weight.copy_(torch.where(on, weight, sgd[0]))
        slots[0].copy_(torch.where(on, slots[0], sgd[1]))
    elif uses_adam:
        adam_step(weight, slots[0], slots[1], grad, lr, step)
    else:
        sgd_step(weight, slots[0], grad, lr, momentum)
    if before is not None:
        assert stepping is not None
        on = _per_model(stepping, weight).to(torch.bool)
        for now, was in zip((weight, *slots), before):
            now.copy_(torch.where(on, now, was))


@torch.no_grad()
def step_all(weights: Sequence[torch.Tensor], slots: Sequence[tuple[torch.Tensor, torch.Tensor]],
             grads: Sequence[torch.Tensor], *, adam: torch.Tensor, lr: torch.Tensor,
             momentum: torch.Tensor, step: torch.Tensor,
             stepping: torch.Tensor | None = None) -> None:
    """:func:`step_models` for every parameter of a batch at once: where all its models use
    one optimizer and all step, the same formulas as a few ``torch._foreach_*`` calls over
    the parameter list, the bias correction computed once (the per-parameter path spent
    most of a small conv net's step on ~20 small operations per parameter); otherwise
    :func:`step_models` per parameter."""
    everyone = stepping is None or bool(stepping.all())
    kinds = bool(adam.any()), bool(adam.all())
    if not everyone or kinds[0] != kinds[1]:
        for w, s, g in zip(weights, slots, grads):
            step_models(w, s, g, adam=adam, lr=lr, momentum=momentum, step=step,
                        stepping=stepping)
        return
    weights, grads = list(weights), list(grads)
    first = [s[0] for s in slots]
    if kinds[0]:  # Keras Adam, as adam_step
        alpha = lr * _bias_correction(step, ADAM_BETA_1, ADAM_BETA_2, lr)
        second = [s[1] for s in slots]
        torch._foreach_lerp_(first, grads, 1.0 - ADAM_BETA_1)  # m += (g - m) * (1 - beta_1)
        torch._foreach_lerp_(second, torch._foreach_mul(grads, grads), 1.0 - ADAM_BETA_2)
        update = torch._foreach_mul(first, [_per_model(alpha, w) for w in weights])
        denominator = torch._foreach_sqrt(second)
        torch._foreach_add_(denominator, ADAM_EPSILON)
        torch._foreach_div_(update, denominator)
        torch._foreach_sub_(weights, update)
    else:  # Keras SGD, as sgd_step
        torch._foreach_mul_(first, [_per_model(momentum, w) for w in weights])
        torch._foreach_sub_(first, torch._foreach_mul(grads, [_per_model(lr, w)
                                                             for w in weights]))
        torch._foreach_add_(weights, first)
