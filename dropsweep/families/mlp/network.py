"""The model family: ``models`` independent Keras-style MLPs stored as one batch.

Every weight is a ``[models, in, out]`` stack and each layer one batched product. Two ways
to run it live here: the readable pieces (``forward``, ``row_losses``, ``dropout_mask``)
that state the Keras semantics for evaluation and for the tests, and :class:`TrainState` with
:func:`train_step`, the fast path the trainer uses: a hand-written backward for this fixed
architecture (no autograd graph), gradient and velocity buffers kept between steps, and one
random draw for all dropout masks of a minibatch. Tests hold the fast path to the readable
one and to a per-fold ``nn.Linear`` reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dropsweep.families.optimizers import step_models

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), used by MaxNorm


@dataclass
class BatchedMLP:
    """``models`` independent MLPs ``features -> hidden... -> outputs`` stored as stacks."""

    weights: list[torch.Tensor]  # [models, in, out] per layer; last one is the output layer
    biases: list[torch.Tensor]  # [models, 1, out]

    @property
    def models(self) -> int:
        return int(self.weights[0].shape[0])

    def parameters(self) -> list[torch.Tensor]:
        return [p for pair in zip(self.weights, self.biases) for p in pair]

    def select(self, keep: torch.Tensor) -> BatchedMLP:
        return BatchedMLP([w[keep] for w in self.weights], [b[keep] for b in self.biases])


def layer_sizes(n_features: int, hidden: Sequence[int], n_classes: int) -> list[int]:
    """Two classes need one sigmoid output (Keras's binary set-up); more need softmax."""
    return [n_features, *hidden, 1 if n_classes == 2 else n_classes]


def glorot_init(models: int, sizes: Sequence[int], generator: torch.Generator,
                device: torch.device | str = "cpu") -> BatchedMLP:
    """Keras ``glorot_uniform`` kernels, U(-l, l) with l = sqrt(6 / (fan_in + fan_out)); zero biases."""
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        u = torch.rand(models, fan_in, fan_out, generator=generator, device=device)
        weights.append((u * 2.0 - 1.0) * limit)
        biases.append(torch.zeros(models, 1, fan_out, device=device))
    return BatchedMLP(weights, biases)


def dropout_mask(shape: Sequence[int], rate: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Inverted dropout: keep with probability 1-rate (per model), scale kept units by 1/(1-rate)."""
    keep = 1.0 - rate.view(-1, *([1] * (len(shape) - 1)))
    u = torch.rand(*shape, generator=generator, device=rate.device)
    return (u < keep).to(u.dtype) / keep


def forward(model: BatchedMLP, x: torch.Tensor, input_rate: torch.Tensor | None = None,
            hidden_rate: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Logits ``[models, rows, outputs]``. Rates given = training mode (dropout on)."""
    h = x
    if input_rate is not None:
        h = h * dropout_mask(h.shape, input_rate, generator)
    last = len(model.weights) - 1
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        h = torch.baddbmm(b, h, w)
        if i < last:
            h = torch.relu(h)
            if hidden_rate is not None:
                h = h * dropout_mask(h.shape, hidden_rate, generator)
    return h


def row_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row loss ``[models, rows]``: binary cross-entropy on a sigmoid, or softmax cross-entropy."""
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1), y.to(logits.dtype),
                                                  reduction="none")
    m, r, c = logits.shape
    return F.cross_entropy(logits.reshape(m * r, c), y.reshape(m * r), reduction="none").view(m, r)


def predictions(logits: torch.Tensor) -> torch.Tensor:
    if logits.shape[-1] == 1:
        return (logits.squeeze(-1) > 0).long()
    return logits.argmax(-1)


def apply_max_norm(model: BatchedMLP, max_norm: torch.Tensor) -> None:
    """Keras ``MaxNorm(c)`` (axis 0 of a Keras kernel) on every hidden layer; inf = no constraint.

    The output layer is never constrained (Brownlee puts ``kernel_constraint`` on hidden layers).
    """
    limited = torch.isfinite(max_norm)
    if bool(limited.any()):
        _max_norm_(model, torch.where(limited, max_norm, 0.0).view(-1, 1, 1),
                   ~limited.view(-1, 1, 1))


def _max_norm_(model: BatchedMLP, max_norm: torch.Tensor, off: torch.Tensor) -> None:
    """``w * clip(n, 0, c) / (eps + n)`` per hidden unit, in place; models in ``off`` untouched."""
    for w in model.weights[:-1]:
        # one norm per hidden unit; (w*w).sum is ~10x faster here than linalg.vector_norm
        norms = (w * w).sum(dim=1, keepdim=True).sqrt_()
        scale = torch.minimum(norms, max_norm).div_(norms.add_(KERAS_EPSILON))
        w.mul_(scale.masked_fill_(off, 1.0))


# ----------------------------------------------------------------------------- the fast path


class TrainState:
    """A :class:`BatchedMLP` with a gradient and a velocity buffer for every parameter.

    Each parameter stays one contiguous ``[models, in, out]`` tensor: batched products that
    write into strided views fall back to a slow per-matrix loop, and an update over one flat
    buffer saves nothing measurable (the update is memory-bound either way).
    """

    def __init__(self, model: BatchedMLP) -> None:
        self.model = BatchedMLP([w.contiguous().clone() for w in model.weights],
                                [b.contiguous().clone() for b in model.biases])
        self.grads = BatchedMLP([torch.empty_like(w) for w in self.model.weights],
                                [torch.empty_like(b) for b in self.model.biases])
        self.velocity = [torch.zeros_like(p) for p in self.model.parameters()]
        # Adam's second moment and each model's step count: only in a batch with Adam
        # (its first moment is ``velocity``; see optimizers.step_models)
        self.second: list[torch.Tensor] | None = None
        self.steps: torch.Tensor | None = None

    def with_adam(self) -> None:
        """Make Adam's slots (zero: no step taken yet)."""
        self.second = [torch.zeros_like(p) for p in self.model.parameters()]
        self.steps = torch.zeros(self.model.models, dtype=torch.int64,
                                 device=self.model.weights[0].device)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only these models (trials that stopped leave the batch)."""
        self.model = self.model.select(keep)
        self.grads = self.grads.select(keep)
        self.velocity = [v[keep] for v in self.velocity]
        if self.second is not None and self.steps is not None:
            self.second = [v[keep] for v in self.second]
            self.steps = self.steps[keep]


class MaskBits:
    """Random 64-bit words for dropout masks, from one seed.

    On the CPU numpy's SFC64 generator makes them about 4x faster than torch's Mersenne
    twister (mask generation is a large share of a dropout step); elsewhere torch's own
    generator on the device is the fast one.
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type == "cpu":
            self._bits: np.random.SFC64 | None = np.random.SFC64(seed)
        else:
            self._bits = None
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(seed)

    def state(self) -> dict[str, Any]:
        """Where the stream is (tensors and numbers only: a checkpoint loads weights-only)."""
        if self._bits is not None:
            st = self._bits.state
            return {"sfc64": torch.from_numpy(st["state"]["state"].view(np.int64).copy()),
                    "has_uint32": int(st["has_uint32"]), "uinteger": int(st["uinteger"])}
        return {"torch": self._generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue the stream from :meth:`state` (same kind of device)."""
        if self._bits is not None:
            self._bits.state = {
                "bit_generator": "SFC64",
                "state": {"state": state["sfc64"].numpy().view(np.uint64).copy()},
                "has_uint32": state["has_uint32"], "uinteger": state["uinteger"]}
        else:
            self._generator.set_state(state["torch"])

    def words(self, n: int) -> torch.Tensor:
        if self._bits is not None:
            return torch.from_numpy(self._bits.random_raw(n).view(np.int64))
        return torch.randint(-(2**63), 2**63 - 1, (n,), generator=self._generator,
                             device=self.device)


@dataclass(frozen=True)
class Optimizers:
    """Per model, for one minibatch of a batch with Adam: whether it uses Adam, its
    learning rate and (SGD) momentum, and whether it steps at all (None: every model)."""

    adam: torch.Tensor  # bool [models]
    lr: torch.Tensor  # [models]
    momentum: torch.Tensor  # [models], 0 for Adam
    stepping: torch.Tensor | None


@dataclass(frozen=True)
class MaskRates:
    """Per-model dropout rates of several layers, ``[models, sum(widths)]``, with what drawing
    their masks needs, computed once per batch (not at every step)."""

    widths: tuple[int, ...]
    threshold: torch.Tensor  # int16 [models, 1, units]: keep where a random int16 <= this
    scale: torch.Tensor  # [models, 1, units]: 1/(1-rate)

    @classmethod
    def of(cls, rates: torch.Tensor, widths: Sequence[int]) -> MaskRates:
        keep_below = torch.round((1.0 - rates) * 65536.0) - 32769.0
        return cls(tuple(widths), keep_below.clamp(-32768, 32767).to(torch.int16).unsqueeze(1),
                   (1.0 / (1.0 - rates)).unsqueeze(1))


def dropout_masks(rows: int, rates: MaskRates, bits: MaskBits) -> list[torch.Tensor]:
    """Inverted-dropout masks for several layers from one draw: a kept unit is ``1/(1-rate)``,
    a dropped one 0.

    Random 16-bit integers (four from each random 64-bit word) are several times cheaper than
    random floats; the keep probability is therefore a multiple of 1/65536 (a rate of exactly
    0 keeps every unit).
    """
    models, units = rates.threshold.shape[0], rates.threshold.shape[2]
    n = models * rows * units
    u = bits.words((n + 3) // 4).view(torch.int16)[:n].view(models, rows, units)
    masks = (u <= rates.threshold) * rates.scale  # a product: torch.where is ~5x slower here
    return list(masks.split(list(rates.widths), dim=2))


def train_step(
    net: TrainState,
    x: torch.Tensor,
    target: torch.Tensor,
    row_weight: torch.Tensor,
    input_mask: torch.Tensor | None,
    hidden_masks: Sequence[torch.Tensor] | None,
    momentum: torch.Tensor,
    neg_lr: torch.Tensor,
    step_mask: torch.Tensor | None,
    max_norm: torch.Tensor | None,
    max_norm_off: torch.Tensor | None,
    adam: Optimizers | None = None,
) -> None:
    """One SGD step of every model, Keras semantics, gradients written by hand.

    ``target`` is ``[models, rows, outputs]`` (the label, or one-hot for softmax); ``row_weight``
    is ``[models, rows, 1]``, 1/count for a real row and 0 for padding, so each model's loss is
    the mean over its real rows. ``momentum``/``neg_lr`` are ``[models, 1]`` (a model that does
    not step has momentum 1 and lr 0, and ``step_mask`` 0), shaped ``[models, 1, 1]``.
    ``max_norm`` is ``[models, 1, 1]``
    with ``max_norm_off`` marking the models it does not apply to. ``adam``: the batch
    has Adam models; every model then steps by :func:`optimizers.step_models` (Keras's Adam
    or SGD per model) instead of the fused SGD update.
    """
    model, grads = net.model, net.grads
    last = len(model.weights) - 1
    h = x * input_mask if input_mask is not None else x
    inputs = [h]
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        z = torch.bmm(h, w).add_(b)  # faster here than baddbmm, which first copies b out
        if i == last:
            break
        h = z.relu_()
        if hidden_masks is not None:
            h = h * hidden_masks[i]
        inputs.append(h)
    # d(mean loss)/d(logits): sigmoid(z) - y for BCE, softmax(z) - onehot for CE
    d = torch.sigmoid(z) if z.shape[2] == 1 else torch.softmax(z, dim=2)
    d.sub_(target).mul_(row_weight)
    for i in range(last, -1, -1):
        a = inputs[i]
        torch.bmm(a.transpose(1, 2), d, out=grads.weights[i])
        torch.sum(d, dim=1, keepdim=True, out=grads.biases[i])
        if i:
            d_in = torch.bmm(d, model.weights[i].transpose(1, 2))
            if hidden_masks is not None:
                d_in.mul_(hidden_masks[i - 1])
            # through ReLU: zero where the (masked) activation is zero
            d = torch.ops.aten.threshold_backward(d_in, a, 0)
    if adam is not None:
        assert net.second is not None and net.steps is not None
        net.steps += 1 if adam.stepping is None else adam.stepping.to(net.steps.dtype)
        for p, g, v, s in zip(model.parameters(), grads.parameters(), net.velocity,
                              net.second):
            step_models(p, (v, s), g, adam=adam.adam, lr=adam.lr, momentum=adam.momentum,
                        step=net.steps, stepping=adam.stepping)
        if max_norm is not None:
            _max_norm_(model, max_norm, max_norm_off)
        return
    # Keras SGD: v = m*v - lr*g; w += v
    for p, g, v in zip(model.parameters(), grads.parameters(), net.velocity):
        v.mul_(momentum).addcmul_(g, neg_lr)
        if step_mask is None:
            p.add_(v)
        else:
            p.addcmul_(v, step_mask)
    if max_norm is not None:
        _max_norm_(model, max_norm, max_norm_off)
