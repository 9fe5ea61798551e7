"""Many conv nets as one: the Keras CIFAR-10 example's network, batched over models.

``input -> [conv kxk, ReLU, max-pool] x blocks -> flatten -> [dense, ReLU] x hidden ->
dense (softmax)``, every parameter with a leading ``models`` axis (PyTorch layouts:
conv ``[models, out, in, k, k]``, dense ``[models, out, in]``). Each model has its own
minibatch, dropout rates, learning rate, momentum and max-norm; one :meth:`ConvNets.step`
trains them all.

Three ways to compute the batch, all exact (``tests/test_cnn_network.py`` holds each to a
plain per-model ``nn.Conv2d``/``nn.Linear`` reference): ``loop``, one model's convolutions
after another's (in training, each model's whole forward and backward pass before the
next's); ``grouped``, the models' minibatches stacked along the channels and each
convolution one ``groups=models`` call; ``patches``, as ``grouped`` but the first
convolution one batched product of each model's image patches with its kernels (oneDNN's
grouped convolution of one or few input channels per group was the slowest part of a
digits step). Which is fastest depends on the shape and the machine
(``benchmarks/cnn_engines.py``): the engine times them (:mod:`dropsweep.train.forms`).

Dropout sites, as in the example: ``input`` (on the images), ``conv`` (after each block's
pooling), ``dense`` (after each hidden dense layer); inverted, a rate per site and model;
at ``conv``, ``spatial`` drops whole feature maps (Keras ``noise_shape=(batch, 1, 1,
channels)``, PyTorch ``Dropout2d``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from dropsweep.families.cnn.blocks import feature_sizes, max_norm, uniform_init
from dropsweep.families.optimizers import OPTIMIZERS, step_all

FORMS = ("loop", "grouped", "patches")
# oneDNN's convolutions and PyTorch's max-pooling on the CPU were measured 2-6x faster on
# channels-last maps than on contiguous ones at these networks' small feature maps
CHANNELS_LAST = torch.channels_last


def _grouped(maps: torch.Tensor) -> torch.Tensor:
    """``[models, rows, H, W, C]`` maps in the grouped forms' layout: ``[rows, models * C, H,
    W]``, the models' channels side by side, in channels-last memory."""
    models, rows, hh, ww, c = maps.shape
    return maps.permute(1, 2, 3, 0, 4).reshape(rows, hh, ww, models * c).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class ConvSpec:
    """The network's shape: input ``(channels, height, width)``, conv blocks' channels,
    hidden dense widths, classes; Keras's defaults otherwise."""

    in_shape: tuple[int, int, int]
    conv: tuple[int, ...] = (64, 64)
    dense: tuple[int, ...] = (256,)
    classes: int = 10
    kernel: int = 3
    pool: int = 2
    padding: str = "valid"
    init: str = "he_uniform"  # conv and hidden dense; the output layer: Keras's glorot

    def flat(self) -> int:
        """Features after the last block (a ValueError names a block that empties)."""
        h, w = feature_sizes(self.in_shape[1], self.in_shape[2], len(self.conv), self.kernel,
                             self.pool, self.padding)[-1]
        return self.conv[-1] * h * w


@dataclass
class Rates:
    """Per model (``[models]`` tensors): dropout at each site; spatial maps at ``conv``."""

    input: torch.Tensor
    conv: torch.Tensor
    dense: torch.Tensor
    spatial: torch.Tensor  # bool


def _mask(shape: Sequence[int], rate: torch.Tensor, generator: torch.Generator,
          spatial: torch.Tensor | None = None) -> torch.Tensor | None:
    """An inverted dropout mask ``[models, *shape]``, None where no model drops here."""
    if not bool((rate > 0).any()):
        return None
    models = rate.numel()
    keep = (1.0 - rate).view(-1, *([1] * len(shape)))
    u = torch.rand((models, *shape), generator=generator, device=rate.device)
    kept = u < keep
    if spatial is not None and bool(spatial.any()):  # one draw per (example, channel)
        maps = torch.rand((models, *shape[:2], *([1] * (len(shape) - 2))),
                          generator=generator, device=rate.device) < keep
        kept = torch.where(spatial.view(-1, *([1] * len(shape))), maps.expand_as(kept), kept)
    return kept.to(rate.dtype) / keep


class ConvNets:
    """``models`` conv nets of one :class:`ConvSpec`, trained together."""

    def __init__(self, spec: ConvSpec, models: int, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> None:
        self.spec, self.models = spec, models
        c, k = spec.in_shape[0], spec.kernel
        self.conv_w, self.conv_b = [], []
        for out in spec.conv:
            self.conv_w.append(uniform_init(spec.init, models, [out, c, k, k], generator, device))
            self.conv_b.append(torch.zeros(models, out, device=device))
            c = out
        self.dense_w, self.dense_b = [], []
        width = spec.flat()
        for i, out in enumerate((*spec.dense, spec.classes)):
            init = spec.init if i < len(spec.dense) else "glorot_uniform"
            self.dense_w.append(uniform_init(init, models, [out, width], generator, device))
            self.dense_b.append(torch.zeros(models, out, device=device))
            width = out
        # optimiser slots per parameter (SGD's velocity; Adam's m and v), steps per model
        self.slots = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.parameters()]
        self.steps = torch.zeros(models, dtype=torch.int64, device=device)

    def parameters(self) -> list[torch.Tensor]:
        return [*self.conv_w, *self.conv_b, *self.dense_w, *self.dense_b]

    def tensors(self) -> list[torch.Tensor]:
        """Everything training changes: parameters, then their slots, then step counts."""
        return [*self.parameters(), *(t for pair in self.slots for t in pair), self.steps]

    def set_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace what :meth:`tensors` lists (in its order): a selection, a checkpoint."""
        n_conv, n_dense = len(self.conv_w), len(self.dense_w)
        it = iter(tensors)
        self.conv_w = [next(it) for _ in range(n_conv)]
        self.conv_b = [next(it) for _ in range(n_conv)]
        self.dense_w = [next(it) for _ in range(n_dense)]
        self.dense_b = [next(it) for _ in range(n_dense)]
        self.slots = [(next(it), next(it)) for _ in range(2 * (n_conv + n_dense))]
        self.steps = next(it)
        self.models = int(self.steps.numel())

    def select(self, models: torch.Tensor) -> ConvNets:
        """Only these models (indices), in this order: a new object sharing no storage."""
        out = object.__new__(ConvNets)
        out.spec = self.spec
        out.conv_w, out.dense_w = self.conv_w, self.dense_w  # set_tensors needs the counts
        out.set_tensors([t[models].clone() for t in self.tensors()])
        return out

    def constrained(self) -> list[torch.Tensor]:
        """What max-norm bounds, as in the example: conv kernels and hidden dense layers."""
        return [*self.conv_w, *self.dense_w[:-1]]

    # ------------------------------------------------------------------ forward

    def _split(self, p: Sequence[torch.Tensor]) -> tuple[Sequence[torch.Tensor], ...]:
        """Parameters in :meth:`parameters` order as (conv w, conv b, dense w, dense b)."""
        n_conv, n_dense = len(self.conv_w), len(self.dense_w)
        return (p[:n_conv], p[n_conv:2 * n_conv], p[2 * n_conv:2 * n_conv + n_dense],
                p[2 * n_conv + n_dense:])

    def logits(self, x: torch.Tensor, rates: Rates | None = None,
               generator: torch.Generator | None = None, form: str = "loop",
               params: Sequence[torch.Tensor] | None = None,
               masks: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """``[models, rows, classes]`` for ``x`` ``[models, rows, C, H, W]``; dropout when
        ``rates`` is given (training: masks drawn here, in :meth:`masks` order whatever the
        form) or ``masks`` (drawn already, one per site in :meth:`masks` order), none
        otherwise."""
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        p = list(params) if params is not None else self.parameters()
        if form == "loop":
            if masks is None and rates is not None:
                assert generator is not None
                masks = self.masks(x.shape[1], rates, generator)
            return torch.stack([
                self.one(x[m], [t[m] for t in p],
                         None if masks is None else [None if k is None else k[m]
                                                     for k in masks])
                for m in range(x.shape[0])])
        conv_w, conv_b, dense_w, dense_b = self._split(p)
        pad = 0 if self.spec.padding == "valid" else self.spec.kernel // 2
        given = iter(masks) if masks is not None else None
        dropping = rates is not None or given is not None

        def drop(h: torch.Tensor, rate: torch.Tensor | None,
                 spatial: torch.Tensor | None = None) -> torch.Tensor:
            mask = self._site_mask(given, generator, h.shape, rate, spatial)
            return h if mask is None else h * mask

        h = drop(x, rates and rates.input) if dropping else x
        M, rows = h.shape[:2]
        # the models' channels side by side, [rows, models * channels, H, W] in channels-last
        # memory ([rows, H, W, models, channels]), until the flatten: pooling and ReLU are
        # per channel, each conv one grouped call; max-pool, then ReLU: the same numbers and
        # gradients as ReLU then max-pool (ReLU is monotonic; both pass a gradient only
        # through a positive maximum), with ReLU and its backward pass on a quarter of the
        # units
        if form == "grouped":
            g = _grouped(h.permute(0, 1, 3, 4, 2))
        for block, (w, b) in enumerate(zip(conv_w, conv_b)):
            if block == 0 and form == "patches":
                g = self._patches_block(h, w, b, pad)
            else:
                g = F.conv2d(g, w.reshape(-1, *w.shape[2:]), b.reshape(-1), padding=pad,
                             groups=M).contiguous(memory_format=CHANNELS_LAST)
                g = F.relu(F.max_pool2d(g, self.spec.pool))
            if dropping:
                out, hh, ww = w.shape[1], *g.shape[2:]
                mask = self._site_mask(given, generator, (M, rows, out, hh, ww),
                                       rates and rates.conv, rates and rates.spatial)
                if mask is not None:
                    g = (g.permute(0, 2, 3, 1).reshape(rows, hh, ww, M, out)
                         * mask.permute(1, 3, 4, 0, 2)
                         ).reshape(rows, hh, ww, M * out).permute(0, 3, 1, 2)
        h = g.reshape(rows, M, -1).transpose(0, 1)  # [models, rows, C*H*W], C-major
        for i, (w, b) in enumerate(zip(dense_w, dense_b)):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if i < len(dense_w) - 1:
                h = F.relu(h)
                if dropping:
                    h = drop(h, rates and rates.dense)
        return h

    def _patches_block(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, pad: int
                       ) -> torch.Tensor:
        """The first conv block (convolution, max-pool, ReLU) of ``x`` ``[models, rows, C, H,
        W]`` as one batched product: each output pixel's ``k x k x C`` patch (in ``(row,
        col, channel)`` order) times the model's kernels in that order; the maps leave in the
        grouped layout, ``[rows, models * out, H', W']`` channels-last, after the pooling
        (a quarter of the pixels to move)."""
        M, rows, c, hh, ww = x.shape
        k, out = self.spec.kernel, w.shape[1]
        h = x.permute(0, 1, 3, 4, 2).reshape(M * rows, hh, ww, c)
        if pad:
            h = F.pad(h, (0, 0, pad, pad, pad, pad))
        oh, ow = h.shape[1] - k + 1, h.shape[2] - k + 1
        cols = torch.cat([h[:, i:i + oh, j:j + ow] for i in range(k) for j in range(k)], -1)
        g = torch.baddbmm(b.unsqueeze(1), cols.reshape(M, rows * oh * ow, k * k * c),
                          w.permute(0, 3, 4, 2, 1).reshape(M, k * k * c, out))
        g = F.relu(F.max_pool2d(g.reshape(M * rows, oh, ow, out).permute(0, 3, 1, 2),
                                self.spec.pool))
        return _grouped(g.permute(0, 2, 3, 1).reshape(M, rows, *g.shape[2:], out))

    def one(self, x: torch.Tensor, params: Sequence[torch.Tensor],
            masks: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """One model's logits ``[rows, classes]`` for its ``x`` ``[rows, C, H, W]``, its
        parameters without the models axis, its masks (:meth:`masks` order) if it drops: the
        plain network, each conv on channels-last maps, max-pool before ReLU (as above)."""
        conv_w, conv_b, dense_w, dense_b = self._split(params)
        pad = 0 if self.spec.padding == "valid" else self.spec.kernel // 2
        given = iter(masks) if masks is not None else iter(())

        def drop(h: torch.Tensor) -> torch.Tensor:
            mask = next(given, None)
            return h if mask is None else h * mask

        h = drop(x).contiguous(memory_format=CHANNELS_LAST)
        for w, b in zip(conv_w, conv_b):
            h = drop(F.relu(F.max_pool2d(F.conv2d(h, w, b, padding=pad), self.spec.pool)))
        h = h.flatten(1)
        for i, (w, b) in enumerate(zip(dense_w, dense_b)):
            h = F.linear(h, w, b)
            if i < len(dense_w) - 1:
                h = drop(F.relu(h))
        return h

    @staticmethod
    def _site_mask(given: Iterator[torch.Tensor | None] | None,
                   generator: torch.Generator | None, shape: Sequence[int],
                   rate: torch.Tensor | None, spatial: torch.Tensor | None = None
                   ) -> torch.Tensor | None:
        """The next site's mask ``[models, *shape[1:]]``: the next of those given, or drawn."""
        if given is not None:
            return next(given)
        assert generator is not None and rate is not None
        return _mask(shape[1:], rate, generator, spatial)

    def masks(self, rows: int, rates: Rates, generator: torch.Generator
              ) -> list[torch.Tensor | None]:
        """Every site's mask for a minibatch of ``rows`` per model, drawn in the order a
        forward pass draws them (input, each block, each hidden dense layer): the same
        masks whichever form then computes the batch."""
        c, h, w = self.spec.in_shape
        out = [_mask((rows, c, h, w), rates.input, generator)]
        for ch, (ph, pw) in zip(self.spec.conv, feature_sizes(
                h, w, len(self.spec.conv), self.spec.kernel, self.spec.pool,
                self.spec.padding)):
            out.append(_mask((rows, ch, ph, pw), rates.conv, generator, rates.spatial))
        out += [_mask((rows, width), rates.dense, generator) for width in self.spec.dense]
        return out

    def _model_by_model(self, x: torch.Tensor, y: torch.Tensor, rates: Rates | None,
                        generator: torch.Generator | None, row_weight: torch.Tensor | None,
                        stepping: torch.Tensor | None, update: Callable[[slice, Sequence[
                            torch.Tensor], torch.Tensor | None], None]) -> None:
        """Each model's forward and backward pass, then its update, one model after
        another: one model's activations, gradients and optimiser slots alive at a time, as a
        plain per-model loop keeps them (on the CPU, the whole batch's stop fitting in
        cache). A model that does not step is skipped (its masks are drawn all the same)."""
        masks = None if rates is None else self.masks(x.shape[1], rates, generator)
        steps = None if stepping is None else stepping.tolist()
        for m in range(self.models):
            if steps is not None and not steps[m]:
                continue
            params = [p[m].detach().requires_grad_() for p in self.parameters()]
            mine = None if masks is None else [None if k is None else k[m] for k in masks]
            with torch.enable_grad():
                logits = self.one(x[m], params, mine)
                if row_weight is None:
                    loss = F.cross_entropy(logits, y[m], reduction="sum") / y.shape[1]
                else:
                    loss = (F.cross_entropy(logits, y[m], reduction="none")
                            * row_weight[m]).sum()
                grads = [g.unsqueeze(0) for g in torch.autograd.grad(loss, params)]
            update(slice(m, m + 1), grads, None)

    # ------------------------------------------------------------------ training

    def step(self, x: torch.Tensor, y: torch.Tensor, *, optimizer: str | torch.Tensor,
             lr: torch.Tensor, momentum: torch.Tensor | None = None,
             max_norm_c: torch.Tensor | None = None, max_norm_axis: str = "keras",
             rates: Rates | None = None, generator: torch.Generator | None = None,
             form: str = "loop", row_weight: torch.Tensor | None = None,
             stepping: torch.Tensor | None = None) -> None:
        """One minibatch for every model: each model's mean cross-entropy over its rows,
        the optimiser's update, then max-norm (Keras: after every update).

        ``optimizer``: one for all, or per model a bool tensor (True: Adam, False: SGD).
        ``row_weight`` ``[models, rows]``: 1/count for a model's real rows, 0 for padding
        (a split with fewer rows); ``stepping`` False: the model has no rows left in this
        minibatch and does not change at all, as in Keras."""
        if isinstance(optimizer, str):
            if optimizer not in OPTIMIZERS:
                raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
            adam = torch.full((self.models,), optimizer == "adam", device=lr.device)
        else:
            adam = optimizer
        if momentum is None:
            momentum = torch.zeros_like(lr)
        self.steps += 1 if stepping is None else stepping.to(self.steps.dtype)

        def update(models: slice, grads: Sequence[torch.Tensor],
                   stepping: torch.Tensor | None) -> None:
            self._update(models, grads, adam[models], lr[models], momentum[models],
                         None if max_norm_c is None else max_norm_c[models], max_norm_axis,
                         stepping)

        if form == "loop":
            self._model_by_model(x, y, rates, generator, row_weight, stepping, update)
            return
        params = [p.detach().requires_grad_() for p in self.parameters()]
        with torch.enable_grad():
            logits = self.logits(x, rates, generator, form, params)
            if row_weight is None:
                loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                       reduction="sum") / y.shape[1]
            else:
                losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                         reduction="none")
                loss = (losses.view_as(row_weight) * row_weight).sum()
            grads = torch.autograd.grad(loss, params)
        update(slice(None), grads, stepping)

    def _update(self, models: slice, grads: Sequence[torch.Tensor], adam: torch.Tensor,
                lr: torch.Tensor, momentum: torch.Tensor, max_norm_c: torch.Tensor | None,
                max_norm_axis: str, stepping: torch.Tensor | None) -> None:
        """The optimiser's update of these models (a slice of the batch), then max-norm
        (Keras: after every update); ``stepping`` False: that model does not change."""
        step_all([p[models] for p in self.parameters()],
                 [(s[0][models], s[1][models]) for s in self.slots], grads, adam=adam, lr=lr,
                 momentum=momentum, step=self.steps[models], stepping=stepping)
        if max_norm_c is not None and bool(torch.isfinite(max_norm_c).any()):
            limited = torch.isfinite(max_norm_c)  # inf: none (not a scaling by n / (n + eps))
            if stepping is not None:
                limited = limited & stepping
            c = torch.where(limited, max_norm_c, torch.ones_like(max_norm_c))
            for w in self.constrained():
                w = w[models]
                on = limited.view(-1, *([1] * (w.dim() - 1)))
                w.copy_(torch.where(on, max_norm(w, c, max_norm_axis), w))
