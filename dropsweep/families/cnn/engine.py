"""The conv-net family's engine: every split of several trials trained as one ConvNets.

Model ``t*k + f`` is split ``f`` of trial ``t``, each with its own minibatch order, dropout
rates (and spatial switch), optimizer, learning rate, momentum and max-norm, as k separate
Keras models would train: a minibatch's loss is the mean over the model's real rows, and a
model whose split has run out of rows does not step. Minibatches are gathered from the one
copy of the rows on the device (8-bit pixels stay uint8 until then) and reshaped to
``[models, rows, channels, height, width]``; evaluation goes in chunks whose activations
fit a fixed budget. The epochs are :func:`dropsweep.train.loop.run_epochs`, shared by every
family.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dropsweep.train.checkpoints import Unusable, expect_made
from dropsweep.data.dataset import Dataset, scaling
from dropsweep.errors import DropsweepError, SweepError
from dropsweep.families.cnn import dropout_rates
from dropsweep.families.common import in_shape
from dropsweep.families.cnn.blocks import feature_sizes
from dropsweep.families.cnn.network import FORMS, ConvNets, ConvSpec, Rates
from dropsweep.train import forms
from dropsweep.train.memory import BYTES_PER_FLOAT, FLOATS_PER_PARAMETER, GATHER_ROWS, Need
from dropsweep.data.protocols import Folds, one_split
from dropsweep.train.hooks import NO_HOOKS, TrainHooks
from dropsweep.train.loop import (
    TrialResult,
    batches_per_slice,
    chunked_scores,
    epoch_order,
    non_finite,
    per_model,
    run_epochs,
)

if TYPE_CHECKING:
    from dropsweep.families.base import Sections

ENGINES = ("auto", *FORMS)  # auto: the form measured fastest here (dropsweep.train.forms)
# What one evaluation chunk's activations may take, whatever the batch and the rows.
EVAL_BYTES = 256 * 2**20


def spec_of(sections: Sections, image_shape: tuple[int, ...] | None, n_classes: int) -> ConvSpec:
    """The network for this data, or a one-line error naming the key at fault: tables have
    no images to convolve; too many blocks leave no feature map."""
    shape = in_shape(image_shape)
    if shape is None:
        raise SweepError("the conv-net family needs images, and these rows are a table of "
                         "features (use family: mlp, or images: a built-in image set or an "
                         "npz whose x is [n, height, width(, channels)])",
                         **sections.where("model.family"))
    m = sections.model
    spec = ConvSpec(in_shape=shape, conv=m.conv, dense=m.dense, classes=n_classes,
                    kernel=m.kernel, pool=m.pool, padding=m.padding, init=m.init)
    try:
        spec.flat()
    except ValueError as exc:
        raise SweepError(f"{exc}: use fewer conv blocks, a smaller kernel or pool, or "
                         "padding: same", **sections.where("model.conv")) from None
    return spec


def choose_form(spec: ConvSpec, engine: str = "auto") -> str:
    """The form ``engine`` asks for: one of :data:`FORMS`, or ``auto``, which the batch
    resolves by timing them (:func:`form_key`, :mod:`dropsweep.train.forms`)."""
    if engine not in ENGINES:
        raise ValueError(f"the conv-net engine must be one of {ENGINES}, got {engine!r}")
    return engine


def form_key(spec: ConvSpec, models: int, batch_size: int, device: torch.device) -> str:
    """What a measured choice of form holds for: the network, the models trained at once,
    the minibatch, the machine."""
    return forms.cache_key("cnn", {"spec": asdict(spec), "models": models,
                                   "batch_size": batch_size}, device)


@dataclass(frozen=True)
class Cost:
    """What one model of a network costs, from one walk over its layers."""

    floats: int  # activation floats of one row: every conv's output before and after
    # pooling, every dense layer's
    macs: float  # multiply-adds of one row's forward pass
    parameters: int  # weights and biases
    patches: int = 0  # floats of the first convolution's image patches (the patches form)


def cost_of(spec: ConvSpec) -> Cost:
    """One row's activations and work, and the parameter count, of ``spec``."""
    c, h, w = spec.in_shape
    floats, macs, params, patches = 0, 0.0, 0, 0
    for out, (ph, pw) in zip(spec.conv, feature_sizes(h, w, len(spec.conv), spec.kernel,
                                                      spec.pool, spec.padding)):
        ch, cw = (h - spec.kernel + 1, w - spec.kernel + 1) if spec.padding == "valid" \
            else (h, w)
        patches = patches or c * spec.kernel**2 * ch * cw
        floats += out * (ch * cw + ph * pw)
        macs += out * c * spec.kernel**2 * ch * cw
        params += out * c * spec.kernel**2 + out
        c, h, w = out, ph, pw
    width = spec.flat()
    for out in (*spec.dense, spec.classes):
        floats += out
        macs += width * out
        params += width * out + out
        width = out
    return Cost(floats, macs, params, patches)


def need(sections: Sections, dataset: Dataset, models: int) -> Need:
    """Bytes one trial's ``models`` conv nets need: parameters with their gradients, slots
    and copies; each minibatch's activations kept for the backward pass (about three
    floats per unit: output, gradient, mask; and, should the batch take the patches form,
    the first convolution's patches) and its gathered pixels."""
    cost = cost_of(spec_of(sections, dataset.image_shape, dataset.n_classes))
    per_model = BYTES_PER_FLOAT * models
    rows = sections.train.batch_size
    # ConvNets keeps both optimiser slots (SGD's velocity, Adam's second moment) for every
    # model, whichever optimiser it uses: one float more per parameter than the MLP with SGD
    return Need(parameters=per_model * cost.parameters * (FLOATS_PER_PARAMETER + 1),
                activations=per_model * rows * (3 * cost.floats + cost.patches),
                inputs=per_model * rows * dataset.n_features, network_key="model.conv")


@dataclass(frozen=True)
class Settings:
    spec: ConvSpec
    epochs: int
    batch_size: int
    eval_every: int
    max_norm_axis: str = "keras"
    form: str = "loop"  # or another of FORMS; "auto" until the engine has timed them


class CNNEngine:
    """The conv nets still training and their per-model hyperparameters, kept aligned
    (:class:`dropsweep.train.loop.Engine`)."""

    _PER_MODEL = ("trial_of", "fold_of", "lr", "mom", "adam", "p_in", "p_conv", "p_dense",
                  "spatial", "c_max")

    def __init__(self, configs: Sequence[Mapping[str, Any]], folds: Folds,
                 settings: Settings, seed: int) -> None:
        device, k, n = folds.rows.device, folds.k, len(configs)
        if settings.form == "auto":  # timed on throwaway engines, before this one's weights
            settings = replace(settings, form=forms.fastest(
                form_key(settings.spec, n * k, settings.batch_size, device), FORMS,
                lambda form: forms.engine_stepper(lambda: CNNEngine(
                    configs, folds, replace(settings, form=form), seed)), device))
        self.folds, self.settings = folds, settings
        self.spec, self.bs, self.form = settings.spec, settings.batch_size, settings.form
        self.cost = cost_of(self.spec)
        # Draw order is part of the results: initial weights, then every epoch's row order
        # from one generator; dropout masks from a second, seeded apart from it.
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.masks = torch.Generator(device=device)
        self.masks.manual_seed(int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
        self.nets = ConvNets(self.spec, n * k, self.generator, device)
        self.trial_of = torch.arange(n, device=device).repeat_interleave(k)
        self.fold_of = torch.arange(k, device=device).repeat(n)
        self.lr = per_model([c["learning_rate"] for c in configs], k, device)
        self.adam = per_model([c["optimizer"] == "adam" for c in configs], k, device,
                               torch.bool)
        self.mom = per_model([c["momentum"] if c["optimizer"] == "sgd" else 0.0
                               for c in configs], k, device)
        rates = [dropout_rates(c) for c in configs]
        self.p_in = per_model([r[0] for r in rates], k, device)
        self.p_conv = per_model([r[1] for r in rates], k, device)
        self.p_dense = per_model([r[2] for r in rates], k, device)
        self.spatial = per_model([r[3] for r in rates], k, device, torch.bool)
        self.c_max = per_model([math.inf if c["max_norm"] is None else c["max_norm"]
                                 for c in configs], k, device)
        self._derive()

    # ------------------------------------------------------------------ the batch

    def _derive(self) -> None:
        """Everything that depends only on which models are in the batch."""
        folds, bs = self.folds, self.bs
        device = folds.rows.device
        self.n_train = folds.n_train[self.fold_of]
        self.n_batches = math.ceil(folds.max_train / bs)
        # real rows come first in every epoch's order: each minibatch's row count is fixed
        self.counts = (self.n_train[:, None]
                       - torch.arange(self.n_batches, device=device)[None] * bs).clamp(0, bs)
        self.all_full = bool((self.counts[:, :-1] == bs).all()) and bool(
            (self.counts[:, -1] == self.counts[:1, -1]).all())  # [:1]: none when empty
        self.dropping = bool(((self.p_in > 0) | (self.p_conv > 0) | (self.p_dense > 0)).any())
        self.rates = Rates(self.p_in, self.p_conv, self.p_dense, self.spatial)
        self.slice_batches = batches_per_slice(3 * self.size * bs * self.cost.macs)  # forward+backward

    @property
    def size(self) -> int:
        return int(self.trial_of.numel())

    def keep(self, idx: torch.Tensor) -> None:
        self.nets = self.nets.select(idx)
        for name in self._PER_MODEL:
            setattr(self, name, getattr(self, name)[idx])
        self._derive()

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Gathered rows ``[models, rows, features]`` (the data's own pixel order: height,
        width, channels) as ``[models, rows, channels, height, width]``: a view, each model's
        images in channels-last memory, which oneDNN's convolutions and max-pooling take
        without a reorder (a plain loop and the engine alike trained faster so than on
        contiguous images here)."""
        c, h, w = self.spec.in_shape
        return x.view(*x.shape[:2], h, w, c).permute(0, 1, 4, 2, 3)

    # ------------------------------------------------------------------ an epoch

    def start_epoch(self) -> None:
        """Draw the epoch's minibatch order (every model its own shuffle)."""
        self.order = epoch_order(self.generator, self.n_train, self.folds.max_train)

    def train_batches(self, first: int, end: int) -> None:
        bs, device = self.bs, self.trial_of.device
        for b in range(first, end):
            positions = self.order[:, b * bs:(b + 1) * bs]
            x, y = self.folds.gather(self.fold_of, positions)
            count = self.counts[:, b]
            row_weight = stepping = None
            if not self.all_full:  # some split has fewer rows (or none) in this minibatch
                real = (torch.arange(positions.shape[1], device=device)[None]
                        < count[:, None])
                row_weight = real.to(torch.float32) / count.clamp(min=1)[:, None]
                stepping = count > 0
            self.nets.step(self.images(x), y, optimizer=self.adam, lr=self.lr,
                           momentum=self.mom, max_norm_c=self.c_max,
                           max_norm_axis=self.settings.max_norm_axis,
                           rates=self.rates if self.dropping else None,
                           generator=self.masks, form=self.form, row_weight=row_weight,
                           stepping=stepping)

    def end_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return non_finite(self.nets.parameters())

    def eval_rows(self) -> int:
        """Rows per model one evaluation chunk gathers: its activations (and, in the patches
        form, the first convolution's patches) within EVAL_BYTES."""
        floats = self.cost.floats + (self.cost.patches if self.form == "patches" else 0)
        fit = EVAL_BYTES // max(1, BYTES_PER_FLOAT * self.size * 2 * floats)
        return int(max(1, min(GATHER_ROWS, fit)))

    def evaluate(self, held_out: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Accuracy and mean loss per model on its held-out (or training) rows, no dropout,
        in chunks whose activations fit EVAL_BYTES."""
        return chunked_scores(self.folds, self.fold_of, held_out, self.eval_rows(),
                              self._scores)

    def _scores(self, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.nets.logits(self.images(x), form=self.form)
        right = (logits.argmax(2) == y) & valid
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                 reduction="none").view_as(y)
        # where, not a product: a padding row's infinite loss must not become NaN
        return (right.to(logits.dtype).sum(1),
                torch.where(valid, losses, torch.zeros_like(losses)).sum(1))

    def trained(self, models: torch.Tensor) -> ConvNets:
        return self.nets.select(models)

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """Weights, optimiser slots, step counts, both generators and who is still in the
        batch, as CPU tensors and numbers (a checkpoint loads weights-only)."""
        return {"family": "cnn", "device": self.trial_of.device.type, "form": self.form,
                "tensors": [t.detach().cpu().clone() for t in self.nets.tensors()],
                "generator": self.generator.get_state(), "masks": self.masks.get_state(),
                **{name: getattr(self, name).cpu().clone() for name in self._PER_MODEL}}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state`; refused (:class:`Unusable`) from another kind of
        device or another form, whose random streams and sums differ."""
        device = self.trial_of.device
        expect_made(state, "cnn", device.type, self.form)
        try:
            self.nets.set_tensors([t.to(device) for t in state["tensors"]])
            self.generator.set_state(state["generator"])
            self.masks.set_state(state["masks"])
            for name in self._PER_MODEL:
                setattr(self, name, state[name].to(device))
        except (RuntimeError, KeyError, TypeError, ValueError, StopIteration) as exc:
            raise Unusable(f"it does not fit this batch ({exc})") from exc
        self._derive()


def settings_of(sections: Sections, spec: ConvSpec, engine: str = "auto") -> Settings:
    return Settings(spec=spec, epochs=sections.train.epochs, batch_size=sections.train.batch_size,
                    eval_every=sections.train.eval_every,
                    max_norm_axis=sections.model.max_norm_axis, form=choose_form(spec, engine))


def train_trials(configs: Sequence[Mapping[str, Any]], folds: Folds, sections: Sections, seed: int,
                 hooks: TrainHooks = NO_HOOKS) -> list[TrialResult]:
    """Train every split of every configuration together; one result per configuration."""
    batch = batch_engine(configs, folds, sections, seed, hooks)
    settings = batch.settings
    return run_epochs(batch, len(configs), settings.epochs, settings.eval_every,
                      hooks.on_checkpoint, hooks.should_stop, hooks.on_progress, hooks.save,
                      hooks.resume)


def batch_engine(configs: Sequence[Mapping[str, Any]], folds: Folds, sections: Sections, seed: int,
                 hooks: TrainHooks = NO_HOOKS) -> CNNEngine:
    """The engine :func:`train_trials` trains these configurations with (a resume checks a
    checkpoint against a fresh one)."""
    spec = spec_of(sections, folds.image_shape, folds.n_classes)
    settings = settings_of(sections, spec, hooks.engine)
    made = forms.resumed(hooks.resume, FORMS)
    if settings.form == "auto" and made is not None:
        settings = replace(settings, form=made)
    return CNNEngine(configs, folds, settings, seed)


def train_on_all(sections: Sections, dataset: Dataset, config: Mapping[str, Any], seed: int,
                 device: torch.device) -> dict[str, Any]:
    """The configuration trained on every row: the state dict of a plain ``nn.Sequential``
    (``Conv2d, ReLU, MaxPool2d`` per block, ``Flatten``, ``Linear, ReLU`` per hidden layer,
    ``Linear``) taking ``[n, channels, height, width]``, with the scaling, the image shape
    and the classes (``dropsweep export --model``; README "Export")."""
    folds = one_split(dataset, device, score_on_test=False)
    spec = spec_of(sections, folds.image_shape, folds.n_classes)
    settings = settings_of(sections, spec)
    batch = CNNEngine([config], folds, settings, seed)
    result = run_epochs(batch, 1, settings.epochs, settings.epochs)[0]  # no checkpoints
    if result.model is None:
        raise DropsweepError(f"training on all the data failed: {result.failure}")
    shift, divisor = scaling(dataset.X, dataset.scale, dataset.pixel_max)
    return {"state_dict": sequential_state(result.model), "mean": torch.tensor(
                shift, dtype=torch.float32), "scale": torch.tensor(divisor, dtype=torch.float32),
            "classes": list(dataset.classes), "image_shape": list(dataset.image_shape or ()),
            "conv": list(spec.conv), "kernel": spec.kernel, "pool": spec.pool,
            "padding": spec.padding, "dense": list(spec.dense),
            "train_accuracy": result.train_accuracy}


def sequential_state(nets: ConvNets) -> dict[str, torch.Tensor]:
    """Model 0 of ``nets`` as the state dict of ``nn.Sequential(Conv2d, ReLU, MaxPool2d,
    ..., Flatten, Linear, ReLU, ..., Linear)``: PyTorch's layouts are ours already."""
    state: dict[str, torch.Tensor] = {}
    index = 0
    for w, b in zip(nets.conv_w, nets.conv_b):
        state[f"{index}.weight"], state[f"{index}.bias"] = w[0].cpu().clone(), b[0].cpu().clone()
        index += 3  # Conv2d, ReLU, MaxPool2d
    index += 1  # Flatten
    for w, b in zip(nets.dense_w, nets.dense_b):
        state[f"{index}.weight"], state[f"{index}.bias"] = w[0].cpu().clone(), b[0].cpu().clone()
        index += 2  # Linear, ReLU
    return state
