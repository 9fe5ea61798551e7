"""The model family and its training loop, written for a *batch* of models.

One trial's k folds (and, later, several trials) train as one batched MLP: every weight is a
``[models, in, out]`` tensor and each layer is one ``baddbmm``. Each model keeps its own
training rows, standardisation, minibatch order, dropout rates, learning rate, momentum and
max-norm, so the batch computes exactly what k separate Keras models would:

* Glorot-uniform kernels, zero biases (Keras ``Dense`` defaults);
* inverted dropout: kept units scaled by ``1/(1-rate)`` in training, identity at evaluation;
* SGD with Keras's momentum rule ``v = m*v - lr*g; w = w + v``;
* ``MaxNorm(c)`` after every step: each hidden unit's incoming weight vector is rescaled
  to L2 norm <= c (``w * clip(n, 0, c) / (eps + n)``, Keras's formula);
* each minibatch's loss is the mean over its real rows, as Keras computes it.

This module knows nothing of Optuna: the caller passes ``on_checkpoint`` to hear held-out
accuracy every few epochs and to stop (prune) trials.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dropsweep import kernel
from dropsweep.config import Sweep, TrialConfig
from dropsweep.data import standardize, stratified_folds
from dropsweep.errors import DropsweepError
from dropsweep.model import (
    BatchedMLP,
    TrainState,
    MaskBits,
    MaskRates,
    dropout_masks,
    forward,
    glorot_init,
    layer_sizes,
    predictions,
    row_losses,
    train_step,
)

def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DropsweepError("--device cuda: no CUDA device is available here (try --device cpu)")
    if name not in ("cpu", "cuda"):
        raise DropsweepError(f"--device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)


# ----------------------------------------------------------------------------- folds


@dataclass(frozen=True)
class Folds:
    """Every fold's standardised rows, padded to a common length, on one device.

    Standardisation is fitted on each training fold alone, so no test-fold statistic leaks in.
    """

    x_train: torch.Tensor  # [folds, max_train, features]
    y_train: torch.Tensor  # [folds, max_train] int64, padding = 0
    n_train: torch.Tensor  # [folds] int64
    x_test: torch.Tensor  # [folds, max_test, features]
    y_test: torch.Tensor  # [folds, max_test]
    n_test: torch.Tensor  # [folds]
    n_classes: int

    @property
    def k(self) -> int:
        return int(self.n_train.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[2])


def _pad(arrays: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(arrays), length) + arrays[0].shape[1:], dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def make_folds(
    X: np.ndarray, y: np.ndarray, folds: int, seed: int, device: torch.device | str = "cpu",
    n_classes: int | None = None,
) -> Folds:
    """Split stratified with shuffling (seeded), standardise per training fold, pad and stack."""
    splits = stratified_folds(y, folds, seed)
    xs_tr, ys_tr, xs_te, ys_te = [], [], [], []
    for train_idx, test_idx in splits:
        x_tr, x_te = standardize(X[train_idx], X[test_idx])
        xs_tr.append(x_tr)
        xs_te.append(x_te)
        ys_tr.append(y[train_idx].astype(np.int64))
        ys_te.append(y[test_idx].astype(np.int64))
    max_tr = max(len(a) for a in xs_tr)
    max_te = max(len(a) for a in xs_te)
    dev = torch.device(device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(dev)

    return Folds(
        x_train=t(_pad(xs_tr, max_tr).astype(np.float32)),
        y_train=t(_pad(ys_tr, max_tr)),
        n_train=t(np.array([len(a) for a in xs_tr], dtype=np.int64)),
        x_test=t(_pad(xs_te, max_te).astype(np.float32)),
        y_test=t(_pad(ys_te, max_te)),
        n_test=t(np.array([len(a) for a in xs_te], dtype=np.int64)),
        n_classes=int(n_classes if n_classes is not None else int(y.max()) + 1),
    )


# ----------------------------------------------------------------------------- training


def epoch_order(generator: torch.Generator, n_train: torch.Tensor, max_train: int) -> torch.Tensor:
    """One epoch's minibatch order, ``[models, max_train]``: row ``i`` starts with a shuffle of
    ``0 .. n_train[i]-1`` (model ``i``'s own real rows); its padding positions sort last.

    The trainer draws exactly this once per epoch from its generator, so a reference
    implementation can replay the same order with a generator seeded the same way.
    """
    device = n_train.device
    keys = torch.rand(n_train.numel(), max_train, generator=generator, device=device)
    positions = torch.arange(max_train, device=device)
    keys = torch.where(positions[None, :] < n_train[:, None], keys, torch.full_like(keys, 2.0))
    if keys.device.type == "cpu":  # numpy sorts these short rows ~4x faster than torch here
        return torch.from_numpy(np.argsort(keys.numpy(), axis=1))
    return keys.argsort(dim=1)


def _non_finite(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per model (dim 0): does any value fail ``isfinite``, and is any of them NaN."""
    bad = torch.zeros(tensors[0].shape[0], dtype=torch.bool, device=tensors[0].device)
    nan = torch.zeros_like(bad)
    for t in tensors:
        flat = t.reshape(t.shape[0], -1)
        bad |= ~torch.isfinite(flat).all(1)
        nan |= torch.isnan(flat).any(1)
    return bad, nan


@dataclass
class TrialResult:
    """What one trial's k folds produced."""

    fold_accuracies: list[float] = field(default_factory=list)
    test_log_loss: float | None = None
    train_accuracy: float | None = None
    epochs: int = 0
    wall_time: float = 0.0
    failure: str | None = None  # "loss became NaN at epoch 3, fold 2"
    pruned: bool = False
    interrupted: bool = False  # stopped by should_stop() (Ctrl-C, SIGTERM): not a result
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, mean held-out acc)
    # The trained fold models (model f = fold f), for trials that trained to the end.
    model: BatchedMLP | None = field(default=None, repr=False, compare=False)

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.fold_accuracies))

    @property
    def accuracy_std(self) -> float:
        return float(np.std(self.fold_accuracies))  # ddof=0, as Brownlee reports


# on_checkpoint(epoch, accuracies) -> indices of trials to stop; accuracies[i] is the mean
# held-out accuracy of trial i (None when trial i is no longer training).
CheckpointHook = Callable[[int, list[float | None]], Sequence[int]]


ENGINES = ("auto", "c", "torch")


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
    def of(cls, sweep: Sweep) -> TrainSettings:
        """The training a sweep file asks for."""
        return cls(hidden=sweep.model.hidden, epochs=sweep.train.epochs,
                   batch_size=sweep.train.batch_size, eval_every=sweep.train.eval_every)


def use_kernel(engine: str, device: torch.device) -> bool:
    """Whether ``engine`` means the C kernel on ``device``; asking for it where it cannot run
    is an error rather than a silent slow-down."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "torch":
        return False
    if kernel.applies(device):
        return True
    if engine == "c":
        why = (f"device {device}" if device.type != "cpu"
               else kernel.unavailable() or "DROPSWEEP_KERNEL=torch switches it off")
        raise RuntimeError(f"the C training kernel cannot run here ({why})")
    return False


def _per_model(values: Sequence[float], k: int, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).repeat_interleave(k)


@torch.no_grad()
def _evaluate(model: BatchedMLP, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean loss per model over each model's real rows (no dropout)."""
    logits = forward(model, x)
    valid = (torch.arange(x.shape[1], device=x.device)[None, :] < n[:, None]).to(logits.dtype)
    correct = (predictions(logits) == y).to(logits.dtype)
    acc = (correct * valid).sum(1) / n.to(logits.dtype)
    loss = (row_losses(logits, y) * valid).sum(1) / n.to(logits.dtype)
    return acc, loss


class _Batch:
    """The models still training and their per-model hyperparameters, kept aligned.

    Everything that depends only on which models are in the batch (row weights, who steps in
    which minibatch, dropout rate columns) is computed here once, not at every step.
    """

    def __init__(self, net: TrainState, configs: Sequence[TrialConfig], folds: Folds,
                 batch_size: int, hidden: Sequence[int], seed: int, compiled: bool) -> None:
        device, k = folds.x_train.device, folds.k
        self.net, self.folds, self.bs, self.hidden = net, folds, batch_size, list(hidden)
        n = len(configs)
        self.compiled = compiled
        # the kernel's dropout masks: a counter-based stream per model, keyed by the seed
        keys = np.random.SeedSequence(seed).generate_state(n * k, dtype=np.uint64)
        self.mask_key = torch.from_numpy(keys.view(np.int64).copy())
        self.mask_counter = torch.zeros(n * k, dtype=torch.int64)
        self.trial_of = torch.arange(n, device=device).repeat_interleave(k)
        self.fold_of = torch.arange(k, device=device).repeat(n)
        self.lr = _per_model([c.learning_rate for c in configs], k, device)
        self.mom = _per_model([c.momentum for c in configs], k, device)
        self.p_in = _per_model([c.input_rate if c.uses_input else 0.0 for c in configs], k,
                               device)
        self.p_hid = _per_model([c.hidden_rate if c.uses_hidden else 0.0 for c in configs], k,
                                device)
        self.c_max = _per_model([math.inf if c.max_norm is None else c.max_norm
                                 for c in configs], k, device)
        self._derive()

    def keep(self, idx: torch.Tensor) -> None:
        self.net.select(idx)
        for name in ("trial_of", "fold_of", "lr", "mom", "p_in", "p_hid", "c_max"):
            setattr(self, name, getattr(self, name)[idx])
        cpu_idx = idx.cpu()
        self.mask_key, self.mask_counter = self.mask_key[cpu_idx], self.mask_counter[cpu_idx]
        self._derive()

    @property
    def size(self) -> int:
        return int(self.trial_of.numel())

    def _derive(self) -> None:
        folds, bs = self.folds, self.bs
        device = folds.x_train.device
        self.n_train = folds.n_train[self.fold_of]
        max_train = folds.x_train.shape[1]
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
        stepping = counts > 0
        limited = torch.isfinite(self.c_max)
        self.any_limited = bool(limited.any())
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
        self.max_norm = torch.where(limited, self.c_max, 0.0).view(-1, 1, 1)
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

    def epoch(self, generator: torch.Generator, bits: MaskBits, n_outputs: int,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over every model's training rows in its own shuffled order; return which
        models hold a non-finite parameter afterwards, and which of those a NaN."""
        folds, bs = self.folds, self.bs
        order = epoch_order(generator, self.n_train, folds.x_train.shape[1])
        if self.compiled:
            net = self.net
            return kernel.train_epoch(net.model.weights, net.model.biases, net.velocity[0::2],
                               net.velocity[1::2], folds.x_train, folds.y_train, self.fold_of,
                               order, self.n_train, self.lr, self.mom, self.c_max, self.p_in,
                               self.p_hid, self.mask_key, self.mask_counter, bs,
                               torch.get_num_threads())
        x_all = folds.x_train[self.fold_of[:, None], order]
        y_all = folds.y_train[self.fold_of[:, None], order]
        if n_outputs == 1:
            target_all = y_all.to(torch.float32).unsqueeze(2)
        else:
            target_all = F.one_hot(y_all, n_outputs).to(torch.float32)
        for b in range(self.n_batches):
            rows = slice(b * bs, (b + 1) * bs)
            x = x_all[:, rows]
            input_mask = hidden_masks = None
            if self.mask_rates is not None:
                masks = dropout_masks(x.shape[1], self.mask_rates, bits)
                if self.use_in:
                    input_mask, masks = masks[0], masks[1:]
                if self.use_hid:
                    hidden_masks = masks
            mom, neg_lr, step_mask, off = self.per_batch[b]
            train_step(self.net, x, target_all[:, rows], self.row_weight[:, rows], input_mask,
                       hidden_masks, mom, neg_lr, step_mask,
                       self.max_norm if self.any_limited else None, off)
        # a diverging model's weights become NaN or infinite within the epoch its loss does
        return _non_finite(self.net.model.parameters())


def train_trials(
    configs: Sequence[TrialConfig],
    folds: Folds,
    settings: TrainSettings,
    seed: int,
    on_checkpoint: CheckpointHook | None = None,
    init: BatchedMLP | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[TrialResult]:
    """Train every fold of every configuration together; return one result per configuration.

    Model ``t*k + f`` is fold ``f`` of trial ``t``. Trials stopped by ``on_checkpoint`` or by a
    diverging loss leave the batch, so they stop costing compute. ``should_stop`` is asked
    every epoch; when it says yes, the unfinished trials come back marked ``interrupted``.
    ``init`` (initial weights for all ``len(configs) * k`` models) is copied, never modified;
    without it the weights are drawn from the seeded generator first. Then every epoch draws
    its :func:`epoch_order` from it; dropout masks come from :class:`MaskBits` with the same seed.
    """
    device = folds.x_train.device
    k, n_trials = folds.k, len(configs)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    sizes = layer_sizes(folds.n_features, settings.hidden, folds.n_classes)
    if init is not None:
        expected = [(n_trials * k, a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        got = [tuple(w.shape) for w in init.weights]
        if got != expected or [tuple(b.shape) for b in init.biases] != [
                (n, 1, o) for n, _, o in expected]:
            raise ValueError(f"init has weight shapes {got}, expected {expected} "
                             f"({n_trials} trials x {k} folds, layers {sizes})")
        start = BatchedMLP([w.detach().to(device, torch.float32) for w in init.weights],
                           [b.detach().to(device, torch.float32) for b in init.biases])
    else:
        start = glorot_init(n_trials * k, sizes, g, device)
    batch = _Batch(TrainState(start), configs, folds, settings.batch_size, settings.hidden,
                   seed, use_kernel(settings.engine, device))
    bits = MaskBits(seed, device)
    results = [TrialResult() for _ in configs]
    started = time.perf_counter()

    def stop(trials: set[int]) -> None:
        keep = torch.tensor([int(t) not in trials for t in batch.trial_of.tolist()],
                            device=device)
        batch.keep(keep.nonzero().squeeze(1))
        now = time.perf_counter() - started
        for t in trials:
            results[t].wall_time = now

    with torch.no_grad():
        for epoch in range(1, settings.epochs + 1):
            if batch.size == 0:
                break
            if should_stop is not None and should_stop():
                now = time.perf_counter() - started
                for t in set(batch.trial_of.tolist()):
                    results[t].interrupted = True
                    results[t].wall_time = now
                return results
            bad, nan = batch.epoch(g, bits, sizes[-1])
            diverged: set[int] = set()
            if bool(bad.any()):
                for m in bad.nonzero().squeeze(1).tolist():
                    t = int(batch.trial_of[m])
                    if t not in diverged:
                        diverged.add(t)
                        kind = "NaN" if bool(nan[m]) else "infinite"
                        results[t].failure = (f"loss became {kind} at epoch {epoch}, "
                                              f"fold {int(batch.fold_of[m]) + 1}")
                        results[t].epochs = epoch
            for t in set(batch.trial_of.tolist()) - diverged:
                results[t].epochs = epoch
            if diverged:
                stop(diverged)

            if epoch % settings.eval_every == 0 or epoch == settings.epochs:
                if batch.size == 0:
                    break
                fold_of, trial_of = batch.fold_of, batch.trial_of
                acc, _ = _evaluate(batch.net.model, folds.x_test[fold_of], folds.y_test[fold_of],
                                   folds.n_test[fold_of])
                means: list[float | None] = [None] * n_trials
                for t in sorted(set(trial_of.tolist())):
                    value = float(acc[trial_of == t].mean())
                    means[t] = value
                    results[t].curve.append((epoch, value))
                if on_checkpoint is not None and epoch < settings.epochs:
                    alive = set(trial_of.tolist())
                    pruned = {int(t) for t in on_checkpoint(epoch, means)} & alive
                    if pruned:
                        for t in pruned:
                            results[t].pruned = True
                        stop(pruned)

        # Final scores of the trials that trained to the end.
        if batch.size:
            fold_of, trial_of, model = batch.fold_of, batch.trial_of, batch.net.model
            acc, loss = _evaluate(model, folds.x_test[fold_of], folds.y_test[fold_of],
                                  folds.n_test[fold_of])
            tr_acc, _ = _evaluate(model, folds.x_train[fold_of], folds.y_train[fold_of],
                                  folds.n_train[fold_of])
            now = time.perf_counter() - started
            for t in sorted(set(trial_of.tolist())):
                sel = trial_of == t
                order_f = fold_of[sel].argsort()
                r = results[t]
                r.fold_accuracies = [float(a) for a in acc[sel][order_f]]
                r.test_log_loss = float(loss[sel].mean())
                r.train_accuracy = float(tr_acc[sel].mean())
                r.wall_time = now
                r.model = model.select(sel.nonzero().squeeze(1)[order_f])
                if not all(math.isfinite(a) for a in r.fold_accuracies) or not math.isfinite(
                        r.test_log_loss):
                    r.failure = f"loss became NaN or infinite by epoch {r.epochs}"
    return results
