"""The MLP family's engine: a batch of models trained together (the C kernel or batched torch).

One trial's k folds (and several trials) train as one batched MLP: every weight is a
``[models, in, out]`` tensor and each layer is one ``baddbmm``. Each model keeps its own
training rows, standardisation, minibatch order, dropout rates, learning rate, momentum and
max-norm, so the batch computes exactly what k separate Keras models would:

* Glorot-uniform kernels, zero biases (Keras ``Dense`` defaults);
* inverted dropout: kept units scaled by ``1/(1-rate)`` in training, identity at evaluation;
* SGD with Keras's momentum rule ``v = m*v - lr*g; w = w + v``, or Keras's Adam
  (:mod:`dropsweep.families.optimizers`; batched torch only: the C kernel is SGD's);
* ``MaxNorm(c)`` after every step: each hidden unit's incoming weight vector is rescaled
  to L2 norm <= c (``w * clip(n, 0, c) / (eps + n)``, Keras's formula);
* each minibatch's loss is the mean over its real rows, as Keras computes it.

The epochs themselves are :func:`dropsweep.train.loop.run_epochs`, shared by every family; this
module knows nothing of Optuna.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dropsweep.families.base import Sections
from dropsweep.data.dataset import Dataset, scaling
from dropsweep.train.checkpoints import Elsewhere, Unusable
from dropsweep.errors import DropsweepError
from dropsweep.train.memory import GATHER_ROWS
from dropsweep.families.mlp import kernel
from dropsweep.families.mlp.dimensions import dropout_rates, optimizer_of
from dropsweep.data.protocols import Folds, one_split
from dropsweep.train.loop import (
    CheckpointHook,
    Checkpointer,
    ProgressHook,
    TrialResult,
    batches_per_slice,
    chunked_scores,
    epoch_order,
    epoch_orders,
    epochs_per_span,
    non_finite,
    per_model,
    run_epochs,
)
from dropsweep.families.mlp.network import (
    BatchedMLP,
    TrainState,
    MaskBits,
    MaskRates,
    Optimizers,
    dropout_masks,
    forward,
    glorot_init,
    layer_sizes,
    predictions,
    row_losses,
    train_step,
)

# ----------------------------------------------------------------------------- training


ENGINES = ("auto", "c", "torch")
# Rows per model one evaluation step gathers: bounds its memory however large the data.
EVAL_ROWS = GATHER_ROWS


@dataclass(frozen=True)
class TrainSettings:
    hidden: tuple[int, ...] = (60, 30)
    epochs: int = 300
    batch_size: int = 16
    eval_every: int = 10
    # "c": the compiled CPU kernel (kernel.py); "torch": batched torch ops, any device;
    # "auto": the kernel where it applies (CPU, a compiler at hand), else torch.
    engine: str = "auto"

    @classmethod
    def of(cls, sections: Sections) -> TrainSettings:
        """The training a sweep file asks for."""
        return cls(hidden=sections.model.hidden, epochs=sections.train.epochs,
                   batch_size=sections.train.batch_size, eval_every=sections.train.eval_every)


def use_kernel(engine: str, device: torch.device, adam: bool = False) -> bool:
    """Whether ``engine`` means the C kernel on ``device``; asking for it where it cannot run
    (or for a batch with Adam: the kernel knows only SGD) is an error rather than a silent
    slow-down."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "torch":
        return False
    if adam:
        if engine == "c":
            raise RuntimeError("the C training kernel trains SGD only: a batch with an Adam "
                               "trial needs engine auto or torch")
        return False
    if kernel.applies(device):
        return True
    if engine == "c":
        why = (f"device {device}" if device.type != "cpu"
               else kernel.unavailable() or "DROPSWEEP_KERNEL=torch switches it off")
        raise RuntimeError(f"the C training kernel cannot run here ({why})")
    return False


@torch.no_grad()
def _scores(model: BatchedMLP, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per model, the number of real rows (``valid``) predicted right and their summed loss
    (no dropout)."""
    logits = forward(model, x)
    correct = ((predictions(logits) == y) & valid).to(logits.dtype)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    # where, not a product: a padding row's infinite loss must not become NaN
    return correct.sum(1), torch.where(valid, row_losses(logits, y), zero).sum(1)


class MLPEngine:
    """The models still training and their per-model hyperparameters, kept aligned: the
    MLP family's engine (:class:`dropsweep.train.loop.Engine`), on the C kernel or batched torch.

    Everything that depends only on which models are in the batch (row weights, who steps in
    which minibatch, dropout rate columns) is computed here once, not at every step.
    """

    def __init__(self, configs: Sequence[Mapping[str, Any]], folds: Folds,
                 settings: TrainSettings, seed: int, init: BatchedMLP | None = None) -> None:
        device, k = folds.rows.device, folds.k
        n = len(configs)
        # Draw order is part of the results: initial weights first, then every epoch's
        # row order from the same generator; dropout masks from their own seeded streams.
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.sizes = layer_sizes(folds.n_features, settings.hidden, folds.n_classes)
        self.net = TrainState(_initial(init, n * k, self.sizes, self.generator, device))
        self.folds, self.bs, self.hidden = folds, settings.batch_size, list(settings.hidden)
        self.adam = torch.tensor([optimizer_of(c) == "adam" for c in configs],
                                 device=device).repeat_interleave(k)
        self.compiled = use_kernel(settings.engine, device, bool(self.adam.any()))
        if bool(self.adam.any()):
            self.net.with_adam()
        self.bits = MaskBits(seed, device)
        # the kernel's dropout masks: a counter-based stream per model, keyed by the seed
        keys = np.random.SeedSequence(seed).generate_state(n * k, dtype=np.uint64)
        self.mask_key = torch.from_numpy(keys.view(np.int64).copy())
        self.mask_counter = torch.zeros(n * k, dtype=torch.int64)
        self.trial_of = torch.arange(n, device=device).repeat_interleave(k)
        self.fold_of = torch.arange(k, device=device).repeat(n)
        self.lr = per_model([c["learning_rate"] for c in configs], k, device)
        # Adam's models: no momentum, whatever a hand-made configuration carries
        self.mom = per_model([c["momentum"] if optimizer_of(c) == "sgd" else 0.0
                              for c in configs], k, device)
        rates = [dropout_rates(c) for c in configs]
        self.p_in = per_model([r[0] for r in rates], k, device)
        self.p_hid = per_model([r[1] for r in rates], k, device)
        self.c_max = per_model([math.inf if c["max_norm"] is None else c["max_norm"]
                                 for c in configs], k, device)
        self._derive()

    # per model, what a checkpoint keeps besides the network (see state())
    _PER_MODEL = ("trial_of", "fold_of", "lr", "mom", "p_in", "p_hid", "c_max", "adam")

    def state(self) -> dict[str, Any]:
        """Everything the rest of training depends on — weights, velocities (with Adam: its
        second moments and step counts), the row-order generator, the dropout streams, who
        is still in the batch — as CPU tensors and numbers (a checkpoint loads weights-only).
        Restored on the same engine, training goes on exactly as if never stopped."""
        net = self.net

        def cpu(ts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
            return [t.detach().cpu().clone() for t in ts]

        return {"engine": "c" if self.compiled else "torch",
                "device": self.trial_of.device.type, "weights": cpu(net.model.weights), "biases": cpu(net.model.biases),
                "velocity": cpu(net.velocity), "generator": self.generator.get_state(),
                "bits": self.bits.state(), "mask_key": self.mask_key.clone(),
                "mask_counter": self.mask_counter.clone(),
                **({} if net.second is None or net.steps is None else {
                    "second": cpu(net.second), "steps": net.steps.cpu().clone()}),
                **{name: getattr(self, name).cpu().clone() for name in self._PER_MODEL}}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state`; refused (:class:`Unusable`) from the other engine
        or another kind of device, whose random streams differ."""
        engine, device = "c" if self.compiled else "torch", self.trial_of.device
        made = (state.get("engine"), state.get("device", "cpu"))
        if made != (engine, device.type):
            raise Elsewhere(f"a checkpoint of the {made[0]} engine on {made[1]} cannot "
                            f"continue on the {engine} engine on {device.type}")
        self.net = TrainState(BatchedMLP([w.to(device) for w in state["weights"]],
                                         [b.to(device) for b in state["biases"]]))
        self.net.velocity = [v.to(device).clone() for v in state["velocity"]]
        if "second" in state:
            self.net.second = [v.to(device).clone() for v in state["second"]]
            self.net.steps = state["steps"].to(device).clone()
        try:
            self.generator.set_state(state["generator"])
            self.bits.load_state(state["bits"])
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise Unusable(f"its random streams cannot be restored ({exc})") from exc
        self.mask_key = state["mask_key"].clone()
        self.mask_counter = state["mask_counter"].clone()
        for name in self._PER_MODEL:
            if name == "adam" and name not in state:  # saved before Adam: all SGD
                self.adam = torch.zeros_like(self.trial_of, dtype=torch.bool)
                continue
            setattr(self, name, state[name].to(device))
        if bool(self.adam.any()) and self.net.second is None:
            raise Unusable("it has Adam trials but not Adam's moments")
        self._derive()

    def keep(self, idx: torch.Tensor) -> None:
        held_out = self._held_out
        self.net.select(idx)
        for name in self._PER_MODEL:
            setattr(self, name, getattr(self, name)[idx])
        cpu_idx = idx.cpu()
        self.mask_key, self.mask_counter = self.mask_key[cpu_idx], self.mask_counter[cpu_idx]
        self._derive()
        if held_out is not None:  # the models kept are unchanged, so are their scores
            self._held_out = held_out[:, cpu_idx]

    @property
    def size(self) -> int:
        return int(self.trial_of.numel())

    def _derive(self) -> None:
        """Everything that depends only on which models are in the batch."""
        self._derive_steps()
        self._derive_masks()
        self._held_out: torch.Tensor | None = None  # see train_epochs
        self._spare: list[torch.Tensor] | None = None  # see train_epochs

    def _derive_steps(self) -> None:
        """Row weights and, per minibatch, who steps and with what momentum, learning rate
        and max-norm (a shorter fold runs out of rows before the others)."""
        folds, bs = self.folds, self.bs
        device = folds.rows.device
        self.n_train = folds.n_train[self.fold_of]
        max_train = folds.max_train
        self.n_batches = math.ceil(max_train / bs)
        # Real rows come first in every epoch's order, so which position is real, and the
        # size of each minibatch, never change: row weight = 1/count for real rows, else 0.
        pos = torch.arange(max_train, device=device)
        real = pos[None, :] < self.n_train[:, None]
        counts = (self.n_train[:, None] - torch.arange(self.n_batches, device=device)[None] * bs
                  ).clamp(0, bs)  # [models, batches]
        count_of_pos = counts[:, pos // bs].to(torch.float32)
        self.row_weight = torch.where(real, 1.0 / count_of_pos.clamp(min=1.0),
                                      torch.zeros((), device=device)).unsqueeze(2)
        macs = sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        self.slice_batches = batches_per_slice(self.size * bs * macs)
        self.span_epochs = epochs_per_span(self.size * bs * macs * self.n_batches)
        stepping = counts > 0
        limited = torch.isfinite(self.c_max)
        self.any_limited = bool(limited.any())
        self.any_adam = bool(self.adam.any())
        neg_lr = -self.lr
        self.per_batch = []
        for b in range(self.n_batches):
            s = stepping[:, b]
            if bool(s.all()):
                entry = (self.mom.view(-1, 1, 1), neg_lr.view(-1, 1, 1), None,
                         ~limited.view(-1, 1, 1))
            else:  # a shorter fold has no rows left: no step, as in Keras
                entry = (torch.where(s, self.mom, 1.0).view(-1, 1, 1),
                         torch.where(s, neg_lr, 0.0).view(-1, 1, 1),
                         s.to(torch.float32).view(-1, 1, 1), ~(limited & s).view(-1, 1, 1))
            self.per_batch.append(entry)
        self.optimizers = [Optimizers(self.adam, self.lr, self.mom,
                                      None if bool(stepping[:, b].all()) else stepping[:, b])
                           for b in range(self.n_batches)] if self.any_adam else None
        self.max_norm = torch.where(limited, self.c_max, 0.0).view(-1, 1, 1)

    def _derive_masks(self) -> None:
        """The dropout rate of every unit that may drop: input columns, then hidden ones."""
        folds = self.folds
        use_in, use_hid = bool((self.p_in > 0).any()), bool((self.p_hid > 0).any())
        widths: list[int] = []
        cols: list[torch.Tensor] = []
        if use_in:
            widths.append(folds.n_features)
            cols.append(self.p_in[:, None].expand(-1, folds.n_features))
        if use_hid:
            widths += self.hidden
            cols += [self.p_hid[:, None].expand(-1, w) for w in self.hidden]
        self.use_in, self.use_hid = use_in, use_hid
        self.mask_rates = MaskRates.of(torch.cat(cols, 1), widths) if cols else None

    def start_epoch(self) -> None:
        """Draw the epoch's minibatch order (every model its own shuffle)."""
        self.order = self._next_order()

    def _next_order(self) -> torch.Tensor:
        """The next epoch's order from the generator; on the kernel, its keys sorted in C (in
        linear time, to the same order)."""
        return epoch_order(self.generator, self.n_train, self.folds.max_train,
                           kernel.sorted_positions if self.compiled else None)

    def train_batches(self, first: int, end: int) -> None:
        """Minibatches [first, end) of the epoch, each gathered from the rows as it is used."""
        folds, bs, bits, n_outputs = self.folds, self.bs, self.bits, self.sizes[-1]
        self._held_out = None
        if self.compiled:
            self._status = self._kernel(self.order, (first, end))
            return
        for b in range(first, end):
            x, y = folds.gather(self.fold_of, self.order[:, b * bs:(b + 1) * bs])
            if n_outputs == 1:
                target = y.to(torch.float32).unsqueeze(2)
            else:
                target = F.one_hot(y, n_outputs).to(torch.float32)
            input_mask = hidden_masks = None
            if self.mask_rates is not None:
                masks = dropout_masks(x.shape[1], self.mask_rates, bits)
                if self.use_in:
                    input_mask, masks = masks[0], masks[1:]
                if self.use_hid:
                    hidden_masks = masks
            mom, neg_lr, step_mask, off = self.per_batch[b]
            train_step(self.net, x, target, self.row_weight[:, b * bs:(b + 1) * bs],
                       input_mask, hidden_masks, mom, neg_lr, step_mask,
                       self.max_norm if self.any_limited else None, off,
                       None if self.optimizers is None else self.optimizers[b])

    # Several whole epochs in one kernel call (dropsweep.train.loop.SpanEngine).

    def epochs_at_once(self) -> int:
        """The kernel's span where a whole epoch is one slice (small data); else one."""
        if not self.compiled or self.slice_batches < self.n_batches:
            return 1
        return self.span_epochs

    def train_epochs(self, count: int, score: bool = False
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Whole epochs in one kernel call, which then (``score``: the span ends at a
        checkpoint) scores every model on its held-out rows while its parameters are still
        in cache (:meth:`evaluate`). The trained parameters go into a second set of tensors
        (the one the span before left, of these models: :meth:`_derive` drops it when they
        change), which become the network's; the set before is left as it was, so
        :meth:`snapshot` copies nothing (a span's copy of every parameter, and the fresh
        memory it took, cost 2% of a Sonar search)."""
        orders = self.order[None]
        if count > 1:  # the span's other epochs' orders, drawn and sorted at once
            sort = functools.partial(kernel.sorted_positions, threads=torch.get_num_threads())
            orders = torch.cat((orders, epoch_orders(self.generator, self.n_train,
                                                     self.folds.max_train, count - 1, sort)))
        scores = torch.zeros(2, self.size, dtype=torch.float32) if score else None
        before = list(self._trained_tensors())
        after = self._spare
        if after is None:
            after = [torch.empty_like(t) for t in before]
        bad, nan = self._kernel(orders, (0, self.n_batches), scores, after)
        self._set_trained(after)
        self._spare = before
        self._held_out = scores  # (None: not a checkpoint, nothing to keep)
        self.order = orders[-1]
        return list(zip(bad, nan))

    def _kernel(self, order: torch.Tensor, batches: tuple[int, int],
                scores: torch.Tensor | None = None,
                into: Sequence[torch.Tensor] | None = None,
                score_training_rows: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The C kernel on every model, in place or ``into`` another set of the tensors of
        :meth:`_trained_tensors`: minibatches ``batches`` of an epoch, or of each of several
        (``order`` of one epoch or several; see kernel.train_epoch)."""
        net, n = self.net, len(self.net.model.weights)
        out = None
        if into is not None:
            velocity = into[2 * n:]
            out = (into[:n], into[n:2 * n], velocity[0::2], velocity[1::2])
        return kernel.train_epoch(
            net.model.weights, net.model.biases, net.velocity[0::2], net.velocity[1::2],
            self.folds, self.fold_of, order, self.n_train, self.lr, self.mom, self.c_max,
            self.p_in, self.p_hid, self.mask_key, self.mask_counter, self.bs,
            torch.get_num_threads(), batches, scores=scores,
            score_training_rows=score_training_rows, out=out)

    def _trained_tensors(self) -> tuple[torch.Tensor, ...]:
        """What an epoch of the kernel changes in the network: weights, biases, velocities."""
        net = self.net
        return (*net.model.weights, *net.model.biases, *net.velocity)

    def _set_trained(self, tensors: Sequence[torch.Tensor]) -> None:
        """The network's weights, biases and velocities become ``tensors`` (in the order of
        :meth:`_trained_tensors`)."""
        net, n = self.net, len(self.net.model.weights)
        net.model.weights[:] = tensors[:n]
        net.model.biases[:] = tensors[n:2 * n]
        net.velocity[:] = tensors[2 * n:]

    def snapshot(self) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The parameters before a span (:meth:`train_epochs` leaves them as they are: on
        the kernel the tensors themselves, else copies) and the random streams' state."""
        tensors = list(self._trained_tensors())
        if not self.compiled:
            tensors = [t.clone() for t in tensors]
        return tensors, self.mask_counter.clone(), self.generator.get_state()

    def restore(self, snapshot: tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]) -> None:
        tensors, counter, generator = snapshot
        self._held_out = None
        current = list(self._trained_tensors())
        if self.compiled:
            self._set_trained(tensors)
            # the set trained since becomes the spare one, unless no span ran in between
            self._spare = None if any(a is b for a, b in zip(current, tensors)) else current
        else:
            for t, saved in zip(current, tensors):
                t.copy_(saved)
        self.mask_counter.copy_(counter)
        self.generator.set_state(generator)

    def end_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Which models hold a non-finite parameter after the epoch, and which of those a NaN
        (a diverging model's weights become NaN or infinite within the epoch its loss does)."""
        if self.compiled:  # the kernel checked while the parameters were in cache
            return self._status
        return non_finite(self.net.model.parameters())

    def evaluate(self, held_out: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Accuracy and mean loss per model on its held-out (or training) rows: scored in
        C on the kernel (:meth:`_kernel_evaluation`); else by torch, gathered ``EVAL_ROWS``
        positions at a time."""
        if self.compiled:
            return self._kernel_evaluation(held_out)
        return self._torch_evaluation(held_out)

    def _kernel_evaluation(self, held_out: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The scores on the kernel: held-out ones computed at the end of the last span
        while the weights are still those (kept through :meth:`keep`), else a kernel call
        that scores alone. Always the kernel's numbers, on every path, so a run resumed onto
        single epochs scores as the run never stopped, and a split's held-out and training
        rows (the same rows where a model trains on all) are scored alike."""
        scores = self._held_out if held_out else None
        if scores is None:
            scores = torch.zeros(2, self.size, dtype=torch.float32)
            self._kernel(torch.empty(0, self.size, self.folds.max_train, dtype=torch.int64),
                         (0, 0), scores, score_training_rows=not held_out)
            if held_out:
                self._held_out = scores
        n = (self.folds.n_test[self.fold_of] if held_out else self.n_train).to(torch.float32)
        return scores[0] / n, scores[1] / n

    def _torch_evaluation(self, held_out: bool) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.net.model
        return chunked_scores(self.folds, self.fold_of, held_out, EVAL_ROWS,
                              lambda x, y, valid: _scores(model, x, y, valid))

    def trained(self, models: torch.Tensor) -> BatchedMLP:
        return self.net.model.select(models)


def _initial(init: BatchedMLP | None, models: int, sizes: Sequence[int],
             generator: torch.Generator, device: torch.device) -> BatchedMLP:
    """``init`` copied to the device (checked against the shapes), or Glorot-uniform draws."""
    if init is None:
        return glorot_init(models, sizes, generator, device)
    expected = [(models, a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    got = [tuple(w.shape) for w in init.weights]
    if got != expected or [tuple(b.shape) for b in init.biases] != [
            (n, 1, o) for n, _, o in expected]:
        raise ValueError(f"init has weight shapes {got}, expected {expected} "
                         f"({models} models: trials x folds, layers {sizes})")
    return BatchedMLP([w.detach().to(device, torch.float32) for w in init.weights],
                      [b.detach().to(device, torch.float32) for b in init.biases])


def train_trials(
    configs: Sequence[Mapping[str, Any]],
    folds: Folds,
    settings: TrainSettings,
    seed: int,
    on_checkpoint: CheckpointHook | None = None,
    init: BatchedMLP | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: ProgressHook | None = None,
    save: Checkpointer | None = None,
    resume: Mapping[str, Any] | None = None,
) -> list[TrialResult]:
    """Train every fold of every configuration together; return one result per configuration.

    Model ``t*k + f`` is fold ``f`` of trial ``t``; :func:`dropsweep.train.loop.run_epochs` drives
    the epochs. ``init`` (initial weights for all ``len(configs) * k`` models) is copied,
    never modified; without it the weights are drawn from the seeded generator first. Then
    every epoch draws its :func:`epoch_order` from it; dropout masks come from
    :class:`MaskBits` with the same seed.
    """
    engine = MLPEngine(configs, folds, settings, seed, init)
    return run_epochs(engine, len(configs), settings.epochs, settings.eval_every,
                      on_checkpoint, should_stop, on_progress, save, resume)


def train_on_all(sections: Sections, dataset: Dataset, config: Mapping[str, Any], seed: int,
                 device: torch.device) -> dict[str, Any]:
    """The configuration trained on every row (standardised on all of them): an
    ``nn.Sequential`` state dict (Linear, ReLU, ..., Linear), the scaling and the classes."""
    folds = one_split(dataset, device, score_on_test=False)
    settings = replace(TrainSettings.of(sections), eval_every=sections.train.epochs)  # no checkpoints
    result = train_trials([config], folds, settings, seed)[0]
    if result.model is None:
        raise DropsweepError(f"training on all the data failed: {result.failure}")
    state: dict[str, torch.Tensor] = {}
    for i, (w, b) in enumerate(zip(result.model.weights, result.model.biases)):
        state[f"{2 * i}.weight"] = w[0].T.contiguous().cpu()  # nn.Linear keeps [out, in]
        state[f"{2 * i}.bias"] = b[0, 0].contiguous().cpu()
    mean, scale = scaling(dataset.X, dataset.scale, dataset.pixel_max)
    return {"state_dict": state, "mean": torch.tensor(mean, dtype=torch.float32),
            "scale": torch.tensor(scale, dtype=torch.float32), "classes": list(dataset.classes),
            "features": list(dataset.feature_names), "hidden": list(sections.model.hidden),
            "train_accuracy": result.train_accuracy}
