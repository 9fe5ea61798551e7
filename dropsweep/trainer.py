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

from dropsweep.config import TrialConfig
from dropsweep.data import standardize, stratified_folds
from dropsweep.errors import DropsweepError

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), used by MaxNorm


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


# ----------------------------------------------------------------------------- the model


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
    if not bool(limited.any()):
        return
    c = torch.where(limited, max_norm, torch.zeros_like(max_norm)).view(-1, 1, 1)
    on = limited.view(-1, 1, 1)
    for w in model.weights[:-1]:
        norms = w.norm(dim=1, keepdim=True)  # [models, 1, out]: one norm per hidden unit
        scale = torch.clamp(norms, max=c) / (KERAS_EPSILON + norms)
        w.mul_(torch.where(on, scale, torch.ones_like(scale)))


def sgd_step(params: list[torch.Tensor], velocities: list[torch.Tensor], lr: torch.Tensor,
             momentum: torch.Tensor, active: torch.Tensor) -> None:
    """Keras SGD: ``v = m*v - lr*g; w += v``, per model; inactive models stay exactly as they are."""
    for p, v in zip(params, velocities):
        shape = (-1,) + (1,) * (p.dim() - 1)
        a, m, r = active.view(shape), momentum.view(shape), lr.view(shape)
        v.add_(a * ((m - 1.0) * v - r * p.grad))
        p.add_(a * v)
        p.grad = None


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


@dataclass(frozen=True)
class TrainSettings:
    hidden: tuple[int, ...] = (60, 30)
    epochs: int = 300
    batch_size: int = 16
    eval_every: int = 10


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
    its :func:`epoch_order`, then (in training) the dropout masks.
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
        model = BatchedMLP([w.detach().to(device, torch.float32, copy=True) for w in init.weights],
                           [b.detach().to(device, torch.float32, copy=True) for b in init.biases])
    else:
        model = glorot_init(n_trials * k, sizes, g, device)
    velocities = [torch.zeros_like(p) for p in model.parameters()]

    # Per-model hyperparameters; "alive" models are compacted as trials stop.
    trial_of = torch.arange(n_trials, device=device).repeat_interleave(k)
    fold_of = torch.arange(k, device=device).repeat(n_trials)
    lr = _per_model([c.learning_rate for c in configs], k, device)
    mom = _per_model([c.momentum for c in configs], k, device)
    p_in = _per_model([c.input_rate if c.uses_input else 0.0 for c in configs], k, device)
    p_hid = _per_model([c.hidden_rate if c.uses_hidden else 0.0 for c in configs], k, device)
    c_max = _per_model([math.inf if c.max_norm is None else c.max_norm for c in configs], k,
                       device)
    results = [TrialResult() for _ in configs]
    started = time.perf_counter()
    bs = settings.batch_size
    n_batches = math.ceil(int(folds.n_train.max()) / bs)
    max_train = folds.x_train.shape[1]

    def stop(trials: set[int]) -> None:
        nonlocal model, velocities, trial_of, fold_of, lr, mom, p_in, p_hid, c_max
        keep = torch.tensor([int(t) not in trials for t in trial_of.tolist()], device=device)
        idx = keep.nonzero().squeeze(1)
        model = model.select(idx)
        velocities = [v[idx] for v in velocities]
        trial_of, fold_of, lr, mom = trial_of[idx], fold_of[idx], lr[idx], mom[idx]
        p_in, p_hid, c_max = p_in[idx], p_hid[idx], c_max[idx]
        now = time.perf_counter() - started
        for t in trials:
            results[t].wall_time = now

    for epoch in range(1, settings.epochs + 1):
        if trial_of.numel() == 0:
            break
        if should_stop is not None and should_stop():
            now = time.perf_counter() - started
            for t in set(trial_of.tolist()):
                results[t].interrupted = True
                results[t].wall_time = now
            return results
        n_tr = folds.n_train[fold_of]
        order = epoch_order(g, n_tr, max_train)  # each model's own shuffle; padding sorts last
        use_in = p_in if bool((p_in > 0).any()) else None
        use_hid = p_hid if bool((p_hid > 0).any()) else None
        epoch_loss_ok = torch.ones(trial_of.numel(), dtype=torch.bool, device=device)
        epoch_nan = torch.zeros_like(epoch_loss_ok)
        params = model.parameters()
        for b in range(n_batches):
            rows = order[:, b * bs:(b + 1) * bs]
            real = rows < n_tr[:, None]
            count = real.sum(1).to(torch.float32)
            stepping = count > 0  # a shorter fold has run out of rows: no step, as in Keras
            x = folds.x_train[fold_of[:, None], rows]
            y = folds.y_train[fold_of[:, None], rows]
            for p in params:
                p.requires_grad_(True)
            with torch.enable_grad():
                logits = forward(model, x, use_in, use_hid, g)
                # where, not a product: a padding row's loss must not reach a real one as NaN
                losses = torch.where(real, row_losses(logits, y), torch.zeros((), device=device))
                per_model = losses.sum(1) / count.clamp(min=1.0)
                per_model.sum().backward()
            for p in params:
                p.requires_grad_(False)
            epoch_loss_ok &= torch.isfinite(per_model.detach())
            epoch_nan |= torch.isnan(per_model.detach())
            sgd_step(params, velocities, lr, mom, stepping.to(torch.float32))
            apply_max_norm(model, torch.where(stepping, c_max, torch.full_like(c_max, math.inf)))

        # Weights blown up by the epoch's last step would otherwise be scored (NaN logits
        # predict class 0) before the next loss shows it.
        bad_params, nan_params = _non_finite(model.parameters())
        epoch_loss_ok &= ~bad_params
        epoch_nan |= nan_params
        diverged: set[int] = set()
        if not bool(epoch_loss_ok.all()):
            for m in (~epoch_loss_ok).nonzero().squeeze(1).tolist():
                t = int(trial_of[m])
                if t not in diverged:
                    diverged.add(t)
                    kind = "NaN" if bool(epoch_nan[m]) else "infinite"
                    results[t].failure = (f"loss became {kind} at epoch {epoch}, "
                                          f"fold {int(fold_of[m]) + 1}")
                    results[t].epochs = epoch
        for t in set(trial_of.tolist()) - diverged:
            results[t].epochs = epoch
        if diverged:
            stop(diverged)

        if epoch % settings.eval_every == 0 or epoch == settings.epochs:
            if trial_of.numel() == 0:
                break
            acc, _ = _evaluate(model, folds.x_test[fold_of], folds.y_test[fold_of],
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
    if trial_of.numel():
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
