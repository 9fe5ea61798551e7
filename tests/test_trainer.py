"""The batched trainer: every Keras semantic it promises, each shown against an independent check.

The central test (``test_matches_a_per_fold_torch_reference``) trains a batch of trials with
``train_trials`` and, separately, every fold of every trial as its own stack of ``nn.Linear``
layers with ``torch.optim.SGD`` and a hand-written Keras ``MaxNorm``, from the same initial
weights and in the same minibatch order, and asks for the same weights after many steps.
Tests of behaviour run on both engines (the compiled C kernel and batched torch ops, the
``engine`` fixture); tests of the torch path's own pieces name ``engine="torch"``.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dropsweep.families.mlp import kernel
from dropsweep.families.mlp import network as nets
from dropsweep.families.mlp import engine as trainer
from dropsweep.families.mlp import config as mlp_config
from dropsweep.data.dataset import load_sonar, stratified_folds
from dropsweep.errors import DropsweepError
from dropsweep.families.mlp.network import (
    KERAS_EPSILON,
    BatchedMLP,
    apply_max_norm,
    dropout_mask,
    forward,
    glorot_init,
    layer_sizes,
    predictions,
    row_losses,
)
from dropsweep.train.devices import resolve_device
from dropsweep.families.mlp.engine import TrainSettings, train_trials
from dropsweep.data.protocols import make_folds
from dropsweep.train.loop import epoch_order

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(params=["c", "torch"])
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "c" and kernel.load() is None:
        pytest.skip("the C kernel cannot be built here (no C compiler)")
    return request.param


@pytest.fixture(autouse=True)
def _one_thread():
    """Every tensor here is tiny: a second intra-op thread only adds hand-offs (and, on a
    busy 2-core machine, waits), so these tests run single-threaded, then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def blob_data(rows: int, features: int, classes: int, seed: int = 0,
              spread: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around random centres: easy when ``spread`` is large."""
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % classes
    centres = rng.normal(size=(classes, features)) * spread
    X = (centres[y] + rng.normal(size=(rows, features))).astype(np.float32)
    return X, y.astype(np.int64)


def seeded(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def random_model(models: int, sizes: list[int], seed: int, bias_scale: float = 0.0) -> BatchedMLP:
    model = glorot_init(models, sizes, seeded(seed))
    if bias_scale:
        g = seeded(seed + 1)
        model = BatchedMLP(model.weights,
                           [torch.randn(b.shape, generator=g) * bias_scale for b in model.biases])
    return model


def clone(model: BatchedMLP) -> BatchedMLP:
    return BatchedMLP([w.clone() for w in model.weights], [b.clone() for b in model.biases])


def unit_norms(w: torch.Tensor) -> torch.Tensor:
    """L2 norm of each unit's incoming weights: ``[models, out]`` (axis 0 of a Keras kernel)."""
    return w.double().pow(2).sum(dim=1).sqrt()


def manual_forward(model: BatchedMLP, m: int, x: torch.Tensor) -> torch.Tensor:
    """Model ``m`` alone, layer by layer, with plain matrix products."""
    h = x.double()
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        h = h @ w[m].double() + b[m, 0].double()
        if i < len(model.weights) - 1:
            h = torch.relu(h)
    return h


FAIL = re.compile(r"^loss became (NaN|infinite) at epoch (\d+), fold (\d+)$")

# ----------------------------------------------------------------------------- 1. Glorot


@pytest.mark.parametrize(("n_classes", "outputs"), [(2, 1), (3, 3), (5, 5)])
def test_layer_sizes_use_one_sigmoid_output_for_two_classes(n_classes, outputs):
    assert layer_sizes(60, (60, 30), n_classes) == [60, 60, 30, outputs]
    assert layer_sizes(4, (), n_classes) == [4, outputs]


def test_glorot_uniform_kernels_and_zero_biases():
    sizes = [20, 40, 10, 3]
    model = glorot_init(200, sizes, seeded(0))
    assert len(model.weights) == len(model.biases) == 3
    for w, b, fan_in, fan_out in zip(model.weights, model.biases, sizes[:-1], sizes[1:]):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        assert w.shape == (200, fan_in, fan_out) and w.dtype == torch.float32
        assert b.shape == (200, 1, fan_out)
        assert torch.count_nonzero(b) == 0
        assert float(w.abs().max()) <= limit
        assert float(w.abs().max()) > 0.99 * limit  # really uniform up to the bound
        w64 = w.double()
        assert float(w64.var()) == pytest.approx(limit ** 2 / 3, rel=0.05)
        assert abs(float(w64.mean())) < 0.02 * limit
        # uniform, not bell-shaped: half of the mass lies within half the bound
        assert float((w64.abs() < limit / 2).double().mean()) == pytest.approx(0.5, abs=0.03)
    # every model draws its own weights
    assert not torch.equal(model.weights[0][0], model.weights[0][1])


@pytest.mark.parametrize(("classes", "outputs"), [(2, 1), (3, 3)])
def test_train_trials_initialises_with_glorot_from_its_seed(classes, outputs):
    """With no epochs to train, the result holds the initial weights: Glorot, layer sizes from
    ``layer_sizes``, drawn first from the generator seeded with ``seed``."""
    X, y = blob_data(30, 4, classes)
    folds = make_folds(X, y, 3, seed=1)
    settings = TrainSettings(hidden=(7, 5), epochs=0, batch_size=8)
    results = train_trials([mlp_config(), mlp_config()], folds, settings, seed=11)
    expected = glorot_init(6, [4, 7, 5, outputs], seeded(11))
    for t, result in enumerate(results):
        assert result.model is not None
        assert [tuple(w.shape) for w in result.model.weights] == [(3, 4, 7), (3, 7, 5),
                                                                   (3, 5, outputs)]
        for got, want in zip(result.model.parameters(), expected.parameters()):
            assert torch.equal(got, want[t * 3:(t + 1) * 3])


# ----------------------------------------------------------------------------- 2. dropout


def test_dropout_mask_is_inverted_with_each_models_own_rate():
    rates = torch.tensor([0.0, 0.2, 0.5, 0.8])
    mask = dropout_mask((4, 400, 64), rates, seeded(3))
    assert mask.shape == (4, 400, 64)
    for i, rate in enumerate(rates.tolist()):
        m = mask[i].double()
        kept = m != 0
        # kept units are scaled by exactly 1/(1-rate) (to float32 precision), dropped are 0
        torch.testing.assert_close(m[kept], torch.full_like(m[kept], 1.0 / (1.0 - rate)),
                                   rtol=1e-6, atol=0)
        assert float(kept.double().mean()) == pytest.approx(1.0 - rate, abs=0.01)
        assert float(m.mean()) == pytest.approx(1.0, abs=0.03)  # expectation preserved
    assert torch.equal(mask[0], torch.ones(400, 64))  # rate 0: nothing dropped, no scaling


def test_forward_applies_inverted_dropout_in_training_and_identity_at_evaluation():
    # a single identity layer shows the input dropout mask itself
    features, rates = 50, torch.tensor([0.0, 0.2, 0.5, 0.8])
    eye = BatchedMLP([torch.eye(features).repeat(4, 1, 1)], [torch.zeros(4, 1, features)])
    x = torch.rand(4, 300, features, generator=seeded(0)) + 0.5  # never 0
    out = forward(eye, x, input_rate=rates, generator=seeded(1))
    for i, rate in enumerate(rates.tolist()):
        kept = out[i] != 0
        torch.testing.assert_close(out[i][kept].double(), x[i][kept].double() / (1.0 - rate),
                                   rtol=2e-6, atol=0)
        assert float(kept.double().mean()) == pytest.approx(1.0 - rate, abs=0.015)
    # evaluation: no rates, no dropout, no scaling, deterministic
    assert torch.equal(forward(eye, x), x)

    model = random_model(3, [6, 9, 5, 3], seed=2, bias_scale=0.1)
    xs = torch.randn(3, 20, 6, generator=seeded(4))
    first, second = forward(model, xs), forward(model, xs)
    assert torch.equal(first, second)
    for m in range(3):
        torch.testing.assert_close(first[m].double(), manual_forward(model, m, xs[m]),
                                   rtol=1e-5, atol=1e-6)
    # training with every rate 0 is the evaluation pass exactly
    zero = torch.zeros(3)
    assert torch.equal(forward(model, xs, zero, zero, seeded(5)), first)
    # while real rates change the output and differ between draws
    half = torch.full((3,), 0.5)
    a = forward(model, xs, half, half, seeded(5))
    b = forward(model, xs, half, half, seeded(6))
    assert not torch.equal(a, first) and not torch.equal(a, b)


# ----------------------------------------------------------------------------- 3. placement


def test_input_dropout_acts_on_features_and_hidden_dropout_after_each_hidden_layer():
    """A rate near 1 drops everything: at the input the output is the bias-only path
    (the network applied to zeros); after the hidden layers it is the output bias alone."""
    model = random_model(3, [6, 9, 5, 2], seed=7, bias_scale=0.5)
    x = torch.randn(3, 10, 6, generator=seeded(8)) * 3
    almost = torch.full((3,), 1.0 - 1e-6)
    zero = torch.zeros(3)
    no_input = forward(model, x, input_rate=almost, hidden_rate=zero, generator=seeded(9))
    assert torch.equal(no_input, forward(model, torch.zeros_like(x)))
    assert not torch.equal(no_input, forward(model, x))
    no_hidden = forward(model, x, input_rate=zero, hidden_rate=almost, generator=seeded(9))
    assert torch.equal(no_hidden, model.biases[-1].expand(3, 10, 2))
    # only one model's input rate near 1: only that model loses its input
    mixed = forward(model, x, input_rate=torch.tensor([0.0, 1.0 - 1e-6, 0.0]), generator=seeded(9))
    clean = forward(model, x)
    assert torch.equal(mixed[0], clean[0]) and torch.equal(mixed[2], clean[2])
    assert torch.equal(mixed[1], forward(model, torch.zeros_like(x))[1])


def test_placement_decides_where_train_trials_draws_masks(monkeypatch):
    calls: list[tuple[int, int, tuple[int, ...], list[list[float]]]] = []
    real_masks = trainer.dropout_masks

    def recording(rows, rates, bits):
        keep = 1.0 / rates.scale.squeeze(1)  # [models, units]: 1 - rate
        segments = (1.0 - keep).split(list(rates.widths), dim=1)
        per_layer = [[round(r, 6) for r in seg[:, 0].tolist()] for seg in segments]
        assert all(bool((seg == seg[:, :1]).all()) for seg in segments)  # one rate per model
        calls.append((keep.shape[0], rows, rates.widths, per_layer))
        return real_masks(rows, rates, bits)

    monkeypatch.setattr(trainer, "dropout_masks", recording)
    X, y = blob_data(30, 4, 2)
    folds = make_folds(X, y, 2, seed=0)  # 15 training rows per fold
    settings = TrainSettings(hidden=(7, 5), epochs=2, batch_size=8, eval_every=1, engine="torch")
    epochs, batches = 2, (8, 7)  # minibatches of 8 and 7 rows; evaluation never draws masks

    def run(*configs: mlp_config) -> list:
        calls.clear()
        results = train_trials(list(configs), folds, settings, seed=0)
        assert all(r.failure is None and r.epochs == 2 for r in results)
        return list(calls)

    inputs = run(mlp_config("input", input_rate=0.3, hidden_rate=0.6))
    # on the features, before the first layer
    assert inputs == [(2, b, (4,), [[0.3, 0.3]]) for b in batches] * epochs

    hidden = run(mlp_config("hidden", input_rate=0.9, hidden_rate=0.4))
    assert hidden == [(2, b, (7, 5), [[0.4, 0.4], [0.4, 0.4]]) for b in batches] * epochs

    assert run(mlp_config("none", input_rate=0.5, hidden_rate=0.5)) == []

    mixed = run(mlp_config("input", input_rate=0.3), mlp_config("hidden", hidden_rate=0.4),
                mlp_config("both", input_rate=0.2, hidden_rate=0.5), mlp_config("none"))
    per_model_in = [0.3, 0.3, 0.0, 0.0, 0.2, 0.2, 0.0, 0.0]  # model t*k + f
    per_model_hid = [0.0, 0.0, 0.4, 0.4, 0.5, 0.5, 0.0, 0.0]
    assert mixed == [(8, b, (4, 7, 5), [per_model_in, per_model_hid, per_model_hid])
                     for b in batches] * epochs


def test_dropout_masks_keep_each_models_own_rate_in_every_layer():
    rates = torch.tensor([0.0, 0.2, 0.5, 0.8])[:, None].expand(4, 10)
    masks = nets.dropout_masks(20000, nets.MaskRates.of(rates.contiguous(), [4, 6]),
                               nets.MaskBits(3))
    assert [tuple(m.shape) for m in masks] == [(4, 20000, 4), (4, 20000, 6)]
    for m, rate in enumerate([0.0, 0.2, 0.5, 0.8]):
        for mask in masks:
            values = torch.unique(mask[m]).tolist()
            assert all(v == 0.0 or v == pytest.approx(1 / (1 - rate)) for v in values)
            kept = float((mask[m] > 0).float().mean())
            assert abs(kept - (1 - rate)) < 0.01


# ----------------------------------------------------------------------------- 4. max-norm


def test_max_norm_follows_keras_on_hidden_layers_only():
    sizes = [5, 8, 6, 2]
    model = random_model(3, sizes, seed=3, bias_scale=1.0)
    for w in model.weights:
        w.mul_(4.0)  # most units far above the limits
    model.weights[0][:, :, :2].mul_(0.01)  # a few units well below them
    before = clone(model)
    c = torch.tensor([0.5, math.inf, 2.0])
    apply_max_norm(model, c)

    for m, limit in enumerate(c.tolist()):
        if math.isinf(limit):  # no max-norm: bit-identical
            assert all(torch.equal(a[m], b[m]) for a, b in
                       zip(model.parameters(), before.parameters()))
            continue
        for w, w0 in zip(model.weights[:-1], before.weights[:-1]):
            kernel = w0[m].double()  # a Keras kernel [in, out]; MaxNorm's axis 0
            norms = kernel.pow(2).sum(axis=0, keepdims=True).sqrt()
            keras = kernel * (norms.clamp(0, limit) / (KERAS_EPSILON + norms))
            torch.testing.assert_close(w[m].double(), keras, rtol=1e-6, atol=1e-7)
            assert float(unit_norms(w)[m].max()) <= limit * (1 + 1e-6)
            assert float(unit_norms(w0)[m].max()) > limit  # the constraint really acted
        # the output layer is never constrained, biases never touched
        assert torch.equal(model.weights[-1][m], before.weights[-1][m])
        assert float(unit_norms(model.weights[-1])[m].max()) > limit
        assert all(torch.equal(b[m], b0[m]) for b, b0 in zip(model.biases, before.biases))
    # units below the limit keep their weights (up to Keras's epsilon)
    torch.testing.assert_close(model.weights[0][0, :, :2], before.weights[0][0, :, :2],
                               rtol=1e-5, atol=0)
    # all limits infinite: nothing at all happens
    again = clone(model)
    apply_max_norm(again, torch.full((3,), math.inf))
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), model.parameters()))


def test_max_norm_holds_after_training_and_spares_unlimited_models(engine):
    X, y = blob_data(40, 5, 2, spread=1.0)
    folds = make_folds(X, y, 2, seed=0)
    sizes = [5, 12, 6, 1]
    init = random_model(6, sizes, seed=5)
    for w in init.weights:
        w.mul_(3.0)  # start above every limit, output layer included
    configs = [mlp_config(learning_rate=0.1, momentum=0.9, max_norm=0.3),
               mlp_config(learning_rate=0.1, momentum=0.9),
               mlp_config(learning_rate=0.1, momentum=0.9, max_norm=1.0)]
    results = train_trials(configs, folds,
                           TrainSettings(hidden=(12, 6), epochs=5, batch_size=8, engine=engine),
                           seed=0, init=init)
    for result, config in zip(results, configs):
        assert result.failure is None and result.model is not None
        hidden = torch.cat([unit_norms(w).flatten() for w in result.model.weights[:-1]])
        output = unit_norms(result.model.weights[-1])
        if config["max_norm"] is None:
            assert float(hidden.max()) > 1.0  # unconstrained weights stay large
        else:
            assert float(hidden.max()) <= config["max_norm"] * (1 + 1e-6)
            assert float(output.max()) > config["max_norm"]  # output layer never constrained


def test_max_norm_is_applied_once_per_real_optimizer_step(engine):
    """With learning rate 0 only the constraint moves the weights. Keras's formula shrinks a
    unit at the limit by c / (eps + c) per application: with c = 1e-6 that is ~9% a step, so
    counting applications is easy. A fold that runs out of rows before the others (fewer
    minibatches) takes fewer steps and must get fewer applications."""
    X, y = blob_data(41, 3, 2)
    folds = make_folds(X, y, 5, seed=0)
    settings = TrainSettings(hidden=(4,), epochs=2, batch_size=8, engine=engine)
    steps = [2 * math.ceil(int(n) / 8) for n in folds.n_train]
    assert len(set(steps)) == 2  # some folds have 4 minibatches an epoch, some 5
    c = 1e-6
    init = random_model(5, [3, 4, 1], seed=1)
    result = train_trials([mlp_config(learning_rate=0.0, momentum=0.0, max_norm=c)], folds,
                          settings, seed=0, init=init)[0]
    assert result.model is not None
    for f, s in enumerate(steps):
        norms = unit_norms(init.weights[0])[f]
        for _ in range(s):
            norms = norms * torch.clamp(norms, max=c) / (KERAS_EPSILON + norms)
        torch.testing.assert_close(unit_norms(result.model.weights[0])[f], norms, rtol=1e-3,
                                   atol=0)
    assert torch.equal(result.model.weights[1], init.weights[1])  # lr 0: output untouched


# ----------------------------------------------------------------------------- 5. SGD vs reference


def test_epoch_order_shuffles_each_models_own_real_rows():
    n_train = torch.tensor([5, 7, 3, 7])
    order = epoch_order(seeded(0), n_train, 7)
    assert order.shape == (4, 7)
    for row, n in zip(order.tolist(), n_train.tolist()):
        assert sorted(row[:n]) == list(range(n))  # every real row once
        assert sorted(row[n:]) == list(range(n, 7))  # padding last
    assert order[1].tolist() != order[3].tolist()  # same size, yet each model its own shuffle
    g = seeded(0)
    assert torch.equal(epoch_order(g, n_train, 7), order)  # the seed decides the order
    later = [epoch_order(g, n_train, 7) for _ in range(3)]
    assert any(not torch.equal(o, order) for o in later)  # and each epoch reshuffles


def test_epoch_order_breaks_tied_keys_by_position_whatever_sorts_it():
    """Keys are float32 (24 random bits): a 40,000-model epoch of Sonar's 188 positions has
    some dozens of ties, which an unstable sort orders as its implementation happens to (and
    NumPy's differ by CPU and version). The order is the keys' stable order, everywhere."""
    n_train = torch.full((40_000,), 187)
    order = epoch_order(seeded(5), n_train, 188)
    keys = torch.rand(40_000, 188, generator=seeded(5))
    keys[:, 187] = 2.0  # the padding position sorts last
    ranked = np.sort(keys.numpy(), axis=1)
    assert int((ranked[:, 1:] == ranked[:, :-1]).sum()) >= 10  # the draw has ties to break
    assert torch.equal(order, torch.from_numpy(np.argsort(keys.numpy(), axis=1, kind="stable")))


def reference_train(configs: list[mlp_config], folds, settings: TrainSettings, seed: int,
                    init: BatchedMLP) -> list[list[nn.Linear]]:
    """Every fold of every trial trained alone: nn.Linear layers, torch.optim.SGD, Keras MaxNorm
    after every step, the per-epoch order replayed from a generator seeded like the trainer's."""
    k = folds.k
    nets, optimizers = [], []
    for m in range(len(configs) * k):
        layers = []
        for w, b in zip(init.weights, init.biases):
            linear = nn.Linear(w.shape[1], w.shape[2])
            with torch.no_grad():
                linear.weight.copy_(w[m].T)
                linear.bias.copy_(b[m, 0])
            layers.append(linear)
        nets.append(layers)
        config = configs[m // k]
        optimizers.append(torch.optim.SGD([p for lin in layers for p in lin.parameters()],
                                          lr=config["learning_rate"], momentum=config["momentum"]))
    g = seeded(seed)
    n_train_per_model = folds.n_train.repeat(len(configs))
    for _ in range(settings.epochs):
        order = epoch_order(g, n_train_per_model, folds.x_train.shape[1])
        for m, layers in enumerate(nets):
            config, f = configs[m // k], m % k
            n = int(folds.n_train[f])
            rows = order[m, :n]
            for start in range(0, n, settings.batch_size):
                batch = rows[start:start + settings.batch_size]
                logits = reference_logits(layers, folds.x_train[f, batch])
                y = folds.y_train[f, batch]
                if logits.shape[1] == 1:
                    loss = F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
                else:
                    loss = F.cross_entropy(logits, y)
                optimizers[m].zero_grad()
                loss.backward()
                optimizers[m].step()
                if config["max_norm"] is not None:
                    with torch.no_grad():
                        for linear in layers[:-1]:  # torch's weight is [out, in]: a row per unit
                            norms = linear.weight.norm(dim=1, keepdim=True)
                            linear.weight.mul_(norms.clamp(0, config["max_norm"])
                                               / (KERAS_EPSILON + norms))
    return nets


def reference_logits(layers: list[nn.Linear], x: torch.Tensor) -> torch.Tensor:
    h = x
    for i, linear in enumerate(layers):
        h = linear(h)
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


@pytest.mark.slow
@pytest.mark.parametrize(("rows", "classes"), [(37, 2), (41, 3)])
def test_matches_a_per_fold_torch_reference(rows, classes, engine):
    """Keras SGD (v = m*v - lr*g; w += v) = torch.optim.SGD(momentum=m) for a constant lr.
    Unequal folds (37 or 41 rows in 5 folds, batch 8) leave short last minibatches whose loss
    is the mean over their real rows, and (41 rows) a fold with one minibatch fewer."""
    X, y = blob_data(rows, 5, classes, seed=rows, spread=1.0)
    folds = make_folds(X, y, 5, seed=3)
    assert len(set(folds.n_train.tolist())) == 2 and len(set(folds.n_test.tolist())) == 2
    configs = [mlp_config(learning_rate=0.01, momentum=0.8),
               mlp_config(learning_rate=0.1, momentum=0.9, max_norm=0.5),
               mlp_config(learning_rate=0.05, momentum=0.0, max_norm=2.0),
               mlp_config(learning_rate=0.2, momentum=0.5, max_norm=1.0)]
    settings = TrainSettings(hidden=(8, 6), epochs=15, batch_size=8, eval_every=5, engine=engine)
    sizes = layer_sizes(5, settings.hidden, classes)
    init = glorot_init(len(configs) * 5, sizes, seeded(123))
    pristine = clone(init)

    results = train_trials(configs, folds, settings, seed=42, init=init)
    # init is copied, not trained in place
    assert all(torch.equal(a, b) for a, b in zip(init.parameters(), pristine.parameters()))
    nets = reference_train(configs, folds, settings, 42, pristine)

    moved = 0.0
    for t, result in enumerate(results):
        assert result.failure is None and result.epochs == 15 and result.model is not None
        accuracies, losses, train_acc = [], [], []
        for f in range(5):
            layers = nets[t * 5 + f]
            for i, linear in enumerate(layers):
                got_w, got_b = result.model.weights[i][f], result.model.biases[i][f, 0]
                torch.testing.assert_close(got_w, linear.weight.detach().T, rtol=0, atol=1e-5)
                torch.testing.assert_close(got_b, linear.bias.detach(), rtol=0, atol=1e-5)
                moved = max(moved, float((got_w - pristine.weights[i][t * 5 + f]).abs().max()))
            with torch.no_grad():
                n_te, n_tr = int(folds.n_test[f]), int(folds.n_train[f])
                logits = reference_logits(layers, folds.x_test[f, :n_te])
                y_te = folds.y_test[f, :n_te]
                accuracies.append(float((predictions(logits[None])[0] == y_te).double().mean()))
                losses.append(float(row_losses(logits[None], y_te[None]).mean()))
                train_logits = reference_logits(layers, folds.x_train[f, :n_tr])
                train_acc.append(float((predictions(train_logits[None])[0]
                                        == folds.y_train[f, :n_tr]).double().mean()))
        assert result.fold_accuracies == pytest.approx(accuracies, abs=1e-6)
        assert result.test_log_loss == pytest.approx(float(np.mean(losses)), rel=1e-4)
        assert result.train_accuracy == pytest.approx(float(np.mean(train_acc)), abs=1e-6)
        assert result.accuracy_mean == pytest.approx(float(np.mean(accuracies)), abs=1e-6)
        assert result.accuracy_std == pytest.approx(float(np.std(accuracies)), abs=1e-6)
    assert moved > 0.1  # the weights really travelled: this compares training, not init


def test_train_step_is_the_keras_momentum_rule_and_skips_inactive_models():
    """Two steps of ``train_step`` against v = m*v - lr*g; w += v with autograd's gradients."""
    g = seeded(0)
    start = random_model(3, [4, 5, 1], seed=1, bias_scale=0.1)
    net = nets.TrainState(start)
    x = torch.randn(3, 6, 4, generator=g)
    y = (torch.rand(3, 6, generator=g) > 0.5).float()
    lr, mom = torch.tensor([0.1, 0.5, 0.01]), torch.tensor([0.9, 0.0, 0.5])
    active = torch.tensor([1.0, 1.0, 0.0])
    ref = [p.clone() for p in start.parameters()]
    vel = [torch.zeros_like(p) for p in ref]
    for _ in range(2):
        params = [p.clone().requires_grad_(True) for p in ref]
        logits = forward(BatchedMLP(params[0::2], params[1::2]), x)
        loss = F.binary_cross_entropy_with_logits(logits.squeeze(-1), y, reduction="none")
        loss.mean(1).sum().backward()
        for i, p in enumerate(params):
            a = active.view(-1, *[1] * (p.dim() - 1))
            m, r = mom.view_as(a), lr.view_as(a)
            vel[i] = torch.where(a > 0, m * vel[i] - r * p.grad, vel[i])
            ref[i] = ref[i] + a * vel[i]
        nets.train_step(net, x, y.unsqueeze(2), torch.full((3, 6, 1), 1 / 6), None, None,
                        torch.where(active > 0, mom, 1.0).view(3, 1, 1),
                        torch.where(active > 0, -lr, 0.0).view(3, 1, 1), active.view(3, 1, 1),
                        None, None)
    for got, want, first in zip(net.model.parameters(), ref, start.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert torch.equal(got[2], first[2])  # inactive: untouched


def test_padding_rows_never_influence_training(engine):
    X, y = blob_data(37, 4, 2, spread=1.0)
    folds = make_folds(X, y, 5, seed=0)
    # padding positions point at an extra row of wild values with a label of its own
    wild = torch.full((folds.rows.shape[0], 1, folds.n_features), 1e3)
    rows = torch.cat([folds.rows, wild], 1)
    labels = torch.cat([folds.labels, torch.tensor([1])])
    train_idx, test_idx = folds.train_idx.clone(), folds.test_idx.clone()
    for f, (n_tr, n_te) in enumerate(zip(folds.n_train.tolist(), folds.n_test.tolist())):
        train_idx[f, n_tr:] = len(labels) - 1
        test_idx[f, n_te:] = len(labels) - 1
    noisy = dataclasses.replace(folds, rows=rows, labels=labels, train_idx=train_idx,
                                test_idx=test_idx)
    assert int(folds.n_train.min()) < folds.max_train  # there is padding to corrupt
    configs = [mlp_config("both", 0.2, 0.3, 0.05, 0.9, 2.0), mlp_config()]
    settings = TrainSettings(hidden=(6,), epochs=6, batch_size=8, eval_every=3, engine=engine)
    a = train_trials(configs, folds, settings, seed=3)
    b = train_trials(configs, noisy, settings, seed=3)
    for ra, rb in zip(a, b):
        assert ra.fold_accuracies == rb.fold_accuracies and ra.curve == rb.curve
        assert ra.test_log_loss == rb.test_log_loss and ra.train_accuracy == rb.train_accuracy
        assert all(torch.equal(p, q) for p, q in zip(ra.model.parameters(), rb.model.parameters()))


def test_init_of_the_wrong_shape_is_refused():
    X, y = blob_data(30, 4, 2)
    folds = make_folds(X, y, 3, seed=0)
    settings = TrainSettings(hidden=(5,), epochs=1)
    with pytest.raises(ValueError, match="init has weight shapes"):
        train_trials([mlp_config()], folds, settings, seed=0,
                     init=glorot_init(2, [4, 5, 1], seeded(0)))  # 2 models for 1 trial x 3 folds
    with pytest.raises(ValueError, match="init has weight shapes"):
        train_trials([mlp_config()], folds, settings, seed=0,
                     init=glorot_init(3, [4, 6, 1], seeded(0)))


# ----------------------------------------------------------------------------- 6. folds


def test_standardisation_is_fitted_on_the_training_fold_only():
    X, y = blob_data(40, 3, 2, spread=1.0)
    X = X * np.array([1.0, 10.0, 0.1], dtype=np.float32) + np.array([5.0, -3.0, 0.0],
                                                                    dtype=np.float32)
    train0, test0 = stratified_folds(y, 4, 9)[0]
    wild = X.copy()
    wild[test0] = np.random.default_rng(1).normal(size=(len(test0), 3)) * 1e4 + 1e5
    a = make_folds(X, y, 4, seed=9)
    b = make_folds(wild, y, 4, seed=9)
    n_tr, n_te = int(a.n_train[0]), int(a.n_test[0])
    # fold 0's training rows know nothing of its test rows
    assert torch.equal(a.x_train[0], b.x_train[0])
    # its test rows are scaled with the training rows' mean and (population) std
    mean = X[train0].astype(np.float64).mean(0)
    std = X[train0].astype(np.float64).std(0)
    np.testing.assert_allclose(b.x_test[0, :n_te].numpy(), (wild[test0] - mean) / std,
                               rtol=1e-5)
    np.testing.assert_allclose(a.x_train[0, :n_tr].numpy(), (X[train0] - mean) / std,
                               rtol=1e-5, atol=1e-5)
    # the training rows really are standardised
    np.testing.assert_allclose(a.x_train[0, :n_tr].numpy().mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(a.x_train[0, :n_tr].numpy().std(0), 1.0, rtol=1e-4)
    # in the other folds those rows are training rows, so there the change does show
    assert not torch.equal(a.x_train[1], b.x_train[1])


def test_make_folds_pads_stratified_folds_with_their_sizes():
    X, y = blob_data(37, 4, 2)
    folds = make_folds(X, y, 5, seed=2)
    splits = stratified_folds(y, 5, 2)
    assert folds.k == 5 and folds.n_features == 4 and folds.n_classes == 2
    assert folds.n_train.tolist() == [len(tr) for tr, _ in splits]
    assert folds.n_test.tolist() == [len(te) for _, te in splits]
    assert folds.x_train.shape == (5, max(folds.n_train.tolist()), 4)
    for f, (train, test) in enumerate(splits):
        n_tr, n_te = len(train), len(test)
        assert folds.y_train[f, :n_tr].tolist() == y[train].tolist()
        assert folds.y_test[f, :n_te].tolist() == y[test].tolist()
        assert torch.count_nonzero(folds.x_train[f, n_tr:]) == 0
        assert torch.count_nonzero(folds.x_test[f, n_te:]) == 0
    assert make_folds(X, y, 5, seed=2, n_classes=4).n_classes == 4


# ----------------------------------------------------------------------------- 7. determinism


def test_same_seed_same_results_other_seed_other_weights(engine):
    X, y = blob_data(48, 5, 2, spread=1.0)
    folds = make_folds(X, y, 4, seed=0)
    configs = [mlp_config("both", 0.2, 0.5, 0.05, 0.9, 3.0), mlp_config("hidden", 0.0, 0.3)]
    settings = TrainSettings(hidden=(10, 6), epochs=8, batch_size=8, eval_every=4, engine=engine)
    first = train_trials(configs, folds, settings, seed=5)
    second = train_trials(configs, folds, settings, seed=5)
    other = train_trials(configs, folds, settings, seed=6)
    for a, b, c in zip(first, second, other):
        assert a.fold_accuracies == b.fold_accuracies  # exactly
        assert a.test_log_loss == b.test_log_loss and a.curve == b.curve
        assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
        assert not torch.equal(a.model.weights[0], c.model.weights[0])
        assert a.test_log_loss != c.test_log_loss
    # the initial weights too: another seed, another draw
    assert not torch.equal(glorot_init(2, [5, 3], seeded(5)).weights[0],
                           glorot_init(2, [5, 3], seeded(6)).weights[0])


# ----------------------------------------------------------------------------- 8. divergence


@pytest.mark.parametrize(("learning_rate", "momentum"), [
    (1e6, 0.9),  # blows up in the first epoch
    (0.1, 1.9),  # momentum above 1: the velocity grows geometrically, NaN after ~10 epochs
])
def test_a_diverging_trial_fails_while_its_batch_mates_train_on(learning_rate, momentum, engine):
    X, y = blob_data(60, 5, 2, spread=1.0)
    folds = make_folds(X, y, 3, seed=0)
    settings = TrainSettings(hidden=(16, 8), epochs=25, batch_size=8, eval_every=5, engine=engine)
    seen: list[list[float | None]] = []

    def on_checkpoint(epoch, accuracies):
        seen.append(list(accuracies))
        # a careless pruner that also names trials no longer training: that must not mark
        # the failed trial pruned as well
        return [t for t, a in enumerate(accuracies) if a is None]

    configs = [mlp_config(learning_rate=0.02, momentum=0.8),
               mlp_config(learning_rate=learning_rate, momentum=momentum),
               mlp_config("hidden", hidden_rate=0.2, learning_rate=0.05, momentum=0.9)]
    results = train_trials(configs, folds, settings, seed=0, on_checkpoint=on_checkpoint)
    bad = results[1]
    match = FAIL.match(bad.failure or "")
    assert match, bad.failure
    epoch, fold = int(match.group(2)), int(match.group(3))
    assert 1 <= epoch < 25 and 1 <= fold <= 3
    assert bad.epochs == epoch and not bad.pruned and not bad.interrupted
    assert bad.fold_accuracies == [] and bad.model is None
    assert all(e < epoch for e, _ in bad.curve)  # never scored after it blew up
    assert all(a[1] is None for a in seen[len(bad.curve):])
    for good in (results[0], results[2]):
        assert good.failure is None and good.epochs == 25 and len(good.fold_accuracies) == 3
        assert good.accuracy_mean > 0.7  # well above chance (one draw of masks)
        assert [e for e, _ in good.curve] == [5, 10, 15, 20, 25]


def test_weights_that_overflow_in_the_last_step_of_an_epoch_fail_that_epoch(engine):
    """One minibatch an epoch: the loss is computed before the step that overflows the weights
    (a learning rate beyond float32), so only a check of the weights catches it in epoch 1,
    before a meaningless accuracy of the broken model is reported."""
    X, y = blob_data(30, 4, 2)
    folds = make_folds(X, y, 3, seed=0)
    settings = TrainSettings(hidden=(6,), epochs=3, batch_size=64, eval_every=1, engine=engine)
    seen: list[list[float | None]] = []
    results = train_trials([mlp_config(learning_rate=1e39), mlp_config()], folds, settings,
                           seed=0, on_checkpoint=lambda e, a: seen.append(list(a)) or [])
    assert FAIL.match(results[0].failure or "")
    assert "at epoch 1, fold 1" in results[0].failure
    assert results[0].curve == [] and [a[0] for a in seen] == [None, None]
    assert results[1].failure is None and results[1].epochs == 3


@pytest.mark.parametrize(("value", "kind"), [(math.inf, "infinite"), (math.nan, "NaN")])
def test_the_failure_names_the_kind_the_epoch_and_the_first_failing_fold(monkeypatch, value, kind):
    """Poison the weights of folds 2 and 3 of trial 1 in the second minibatch of epoch 3."""
    X, y = blob_data(36, 4, 2)
    folds = make_folds(X, y, 3, seed=0)  # 24 training rows a fold: 3 minibatches of 8
    settings = TrainSettings(hidden=(5,), epochs=6, batch_size=8, eval_every=2, engine="torch")
    real_step = trainer.train_step
    steps = []

    def poisoned(net, *args):
        real_step(net, *args)
        steps.append(1)
        if len(steps) == 2 * 3 + 2:
            w = net.model.weights[0]
            w[4, 0, 0] = w[5, 0, 1] = value  # model t*k + f: trial 1, folds 2 and 3

    monkeypatch.setattr(trainer, "train_step", poisoned)
    results = train_trials([mlp_config(), mlp_config(), mlp_config()], folds, settings, seed=0)
    assert results[1].failure == f"loss became {kind} at epoch 3, fold 2"
    assert results[1].epochs == 3 and [e for e, _ in results[1].curve] == [2]
    assert results[0].failure is None and results[2].failure is None
    assert results[0].epochs == results[2].epochs == 6


# ----------------------------------------------------------------------------- 9. pruning, stop


def test_on_checkpoint_prunes_trials_and_the_rest_continue(engine):
    X, y = blob_data(40, 4, 2)
    folds = make_folds(X, y, 2, seed=0)
    settings = TrainSettings(hidden=(6,), epochs=10, batch_size=8, eval_every=2, engine=engine)
    seen: list[tuple[int, list[float | None]]] = []

    def on_checkpoint(epoch, accuracies):
        seen.append((epoch, list(accuracies)))
        if epoch == 4:
            return [1]
        if epoch == 6:
            return [1]  # already stopped: must change nothing
        return []

    configs = [mlp_config(), mlp_config(learning_rate=0.05), mlp_config(momentum=0.5)]
    results = train_trials(configs, folds, settings, seed=0, on_checkpoint=on_checkpoint)
    assert [e for e, _ in seen] == [2, 4, 6, 8]  # not at the last epoch: that is the result
    for epoch, accuracies in seen:
        assert (accuracies[1] is None) == (epoch > 4)
        assert accuracies[0] is not None and accuracies[2] is not None
        assert all(a is None or 0.0 <= a <= 1.0 for a in accuracies)
    pruned = results[1]
    assert pruned.pruned and pruned.epochs == 4 and pruned.failure is None
    assert [e for e, _ in pruned.curve] == [2, 4] and pruned.fold_accuracies == []
    assert [a for _, a in pruned.curve] == [seen[0][1][1], seen[1][1][1]]
    for r in (results[0], results[2]):
        assert not r.pruned and r.epochs == 10 and len(r.fold_accuracies) == 2
        assert [e for e, _ in r.curve] == [2, 4, 6, 8, 10]
        assert r.curve[-1][1] == pytest.approx(r.accuracy_mean)
    # pruning everything ends training at once
    everyone = train_trials(configs, folds, settings, seed=0,
                            on_checkpoint=lambda e, a: [0, 1, 2])
    assert all(r.pruned and r.epochs == 2 for r in everyone)


def test_should_stop_interrupts_the_unfinished_trials(engine):
    X, y = blob_data(40, 4, 2)
    folds = make_folds(X, y, 2, seed=0)
    settings = TrainSettings(hidden=(6,), epochs=10, batch_size=8, eval_every=1, engine=engine)
    asked = []

    def should_stop():
        asked.append(True)
        return len(asked) > 3  # asked before each epoch: stop before epoch 4

    configs = [mlp_config(), mlp_config(learning_rate=0.05), mlp_config()]
    results = train_trials(configs, folds, settings, seed=0, should_stop=should_stop,
                           on_checkpoint=lambda e, a: [2] if e == 2 else [])
    assert len(asked) == 4
    for r in results[:2]:
        assert r.interrupted and not r.pruned and r.failure is None and r.epochs == 3
        assert r.fold_accuracies == [] and r.model is None
    assert results[2].pruned and not results[2].interrupted and results[2].epochs == 2
    never = train_trials(configs[:1], folds, settings, seed=0, should_stop=lambda: False)
    assert not never[0].interrupted and never[0].epochs == 10


# ----------------------------------------------------------------------------- 10. softmax


def test_row_losses_are_sigmoid_and_softmax_cross_entropy():
    g = seeded(0)
    logits1 = torch.randn(2, 6, 1, generator=g)
    y1 = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 1]])
    p = torch.sigmoid(logits1[..., 0].double())
    want = -(y1 * p.log() + (1 - y1) * (1 - p).log())
    torch.testing.assert_close(row_losses(logits1, y1).double(), want, rtol=1e-5, atol=1e-6)
    assert torch.equal(predictions(logits1), (logits1[..., 0] > 0).long())

    logits3 = torch.randn(2, 6, 3, generator=g)
    y3 = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 2, 1, 0, 0, 1]])
    softmax = torch.softmax(logits3.double(), -1)
    want3 = -softmax.gather(-1, y3[..., None])[..., 0].log()
    torch.testing.assert_close(row_losses(logits3, y3).double(), want3, rtol=1e-5, atol=1e-6)
    assert torch.equal(predictions(logits3), logits3.argmax(-1))


def test_three_classes_train_with_softmax(engine):
    X, y = blob_data(90, 4, 3, seed=1, spread=2.0)
    folds = make_folds(X, y, 3, seed=0)
    assert folds.n_classes == 3
    settings = TrainSettings(hidden=(16,), epochs=30, batch_size=8, eval_every=10, engine=engine)
    result = train_trials([mlp_config(learning_rate=0.05, momentum=0.9)], folds, settings,
                          seed=0)[0]
    assert result.failure is None and result.model is not None
    assert result.model.weights[-1].shape == (3, 16, 3)
    assert result.accuracy_mean > 0.85  # chance is 1/3
    assert result.test_log_loss < math.log(3)


# ----------------------------------------------------------------------------- 11. Sonar


@pytest.mark.slow
def test_brownlee_baseline_learns_sonar(sonar_dir, engine):
    dataset = load_sonar()
    assert dataset.X.shape == (208, 60)
    folds = make_folds(dataset.X, dataset.y, 10, seed=7, n_classes=dataset.n_classes)
    settings = TrainSettings(hidden=(60, 30), epochs=30, batch_size=16, eval_every=10,
                             engine=engine)
    result = train_trials([mlp_config()], folds, settings, seed=0)[0]  # lr .01, momentum .8
    assert result.failure is None and len(result.fold_accuracies) == 10
    assert result.accuracy_mean > 0.70, result.fold_accuracies
    assert result.train_accuracy > result.accuracy_mean - 0.05


# ----------------------------------------------------------------------------- 12. devices


def test_cuda_without_a_device_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DropsweepError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DropsweepError, match="must be auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_training_on_cuda_matches_the_cpu_in_kind():
    X, y = blob_data(40, 4, 2)
    device = resolve_device("cuda")
    assert resolve_device("auto") == device
    folds = make_folds(X, y, 2, seed=0, device=device)
    assert folds.x_train.device.type == "cuda"
    settings = TrainSettings(hidden=(8,), epochs=20, batch_size=8, eval_every=10)
    result = train_trials([mlp_config("both", 0.1, 0.2, 0.05, 0.9, 3.0)], folds, settings,
                          seed=0)[0]
    assert result.failure is None and result.model.weights[0].device.type == "cuda"
    assert result.accuracy_mean > 0.8


@pytest.mark.slow
def test_brownlee_baseline_accuracy_matches_a_plain_per_fold_loop_over_five_seeds(sonar_dir,
                                                                                    engine):
    """Same folds, five seeds each: the batched path and the obvious nn.Linear loop agree
    within 2 points of mean accuracy (the exactness test above shows why they must)."""
    data = load_sonar()
    epochs, seeds = 50, range(5)
    folds = make_folds(data.X, data.y, 10, 7)
    batched = train_trials([mlp_config()] * len(seeds), folds,
                           TrainSettings(epochs=epochs, engine=engine),
                           seed=0)
    batched_mean = float(np.mean([r.accuracy_mean for r in batched]))

    plain = []
    for seed in seeds:
        torch.manual_seed(seed)
        accs = []
        for f in range(10):
            n_tr, n_te = int(folds.n_train[f]), int(folds.n_test[f])
            x_tr, y_tr = folds.x_train[f, :n_tr], folds.y_train[f, :n_tr].float()
            x_te, y_te = folds.x_test[f, :n_te], folds.y_test[f, :n_te]
            net = nn.Sequential(nn.Linear(60, 60), nn.ReLU(), nn.Linear(60, 30), nn.ReLU(),
                                nn.Linear(30, 1))
            for layer in net[::2]:
                nn.init.xavier_uniform_(layer.weight)  # Glorot uniform, as Keras
                nn.init.zeros_(layer.bias)
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.8)
            for _ in range(epochs):
                perm = torch.randperm(n_tr)
                for i in range(0, n_tr, 16):
                    rows = perm[i:i + 16]
                    opt.zero_grad()
                    F.binary_cross_entropy_with_logits(net(x_tr[rows]).squeeze(-1),
                                                       y_tr[rows]).backward()
                    opt.step()
            with torch.no_grad():
                accs.append(float(((net(x_te).squeeze(-1) > 0).long() == y_te).float().mean()))
        plain.append(np.mean(accs))
    assert abs(batched_mean - float(np.mean(plain))) < 0.02, (batched_mean, plain)


def test_a_long_epoch_trains_in_slices_that_report_progress_and_stop_between(engine,
                                                                              monkeypatch):
    """Ctrl-C is looked at between slices of an epoch, not only between epochs: a
    Fashion-MNIST epoch is minutes. Here every minibatch is its own slice."""
    import dropsweep.train.loop as shared

    monkeypatch.setattr(shared, "SLICE_MACS", 1.0)
    X, y = blob_data(50, 4, 2)
    folds = make_folds(X, y, 2, seed=0)  # 25 training rows a fold: 4 minibatches of 8
    seen: list[float] = []
    settings = TrainSettings(hidden=(5,), epochs=3, batch_size=8, engine=engine)
    results = train_trials([mlp_config(), mlp_config("both", 0.2, 0.5)], folds, settings, 0,
                           should_stop=lambda: len(seen) >= 6, on_progress=seen.append)
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]  # stopped two minibatches into epoch 2
    assert all(r.interrupted and r.epochs == 1 for r in results)


def test_slicing_an_epoch_changes_nothing_in_the_results(engine, monkeypatch):
    import dropsweep.train.loop as shared

    X, y = blob_data(60, 5, 3)
    folds = make_folds(X, y, 3, seed=0)
    configs = [mlp_config("both", 0.2, 0.4, 0.05, 0.9, 2.0), mlp_config("input", 0.3)]
    settings = TrainSettings(hidden=(6, 4), epochs=4, batch_size=8, eval_every=2,
                             engine=engine)
    whole = train_trials(configs, folds, settings, seed=5)
    monkeypatch.setattr(shared, "SLICE_MACS", 1.0)
    sliced = train_trials(configs, folds, settings, seed=5)
    for a, b in zip(whole, sliced):
        assert a.fold_accuracies == b.fold_accuracies and a.curve == b.curve
        assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_evaluation_in_chunks_scores_as_one_pass(monkeypatch):
    """Held-out rows are gathered EVAL_ROWS at a time, so memory stays bounded; the counts
    are exact either way."""
    X, y = blob_data(90, 4, 3)
    folds = make_folds(X, y, 3, seed=0)
    settings = TrainSettings(hidden=(5,), epochs=2, batch_size=8, engine="torch")
    one = train_trials([mlp_config()], folds, settings, seed=1)[0]
    monkeypatch.setattr(trainer, "EVAL_ROWS", 7)
    chunked = train_trials([mlp_config()], folds, settings, seed=1)[0]
    assert one.fold_accuracies == chunked.fold_accuracies
    assert one.train_accuracy == chunked.train_accuracy
    assert one.test_log_loss == pytest.approx(chunked.test_log_loss, rel=1e-6)


# ----------------------------------------------------------------------------- Adam


def in_row_order(generator, n_train, max_train, sort=None):
    """Every epoch the rows in their stored order: a trial's order then depends neither on
    its batch mates nor on the epoch, so a batch can be held to its trials trained alone."""
    return torch.arange(max_train).expand(n_train.numel(), -1).clone()


def in_row_orders(generator, n_train, max_train, epochs, sort=None):
    """:func:`in_row_order` for each of a span's epochs (drawn at once on the kernel)."""
    return in_row_order(generator, n_train, max_train).expand(epochs, -1, -1).clone()


def pick(model: BatchedMLP, models: slice) -> BatchedMLP:
    return BatchedMLP([w[models].clone() for w in model.weights],
                      [b[models].clone() for b in model.biases])


def test_a_batch_mixing_adam_and_sgd_trains_each_as_if_alone(monkeypatch):
    monkeypatch.setattr(trainer, "epoch_order", in_row_order)
    monkeypatch.setattr(trainer, "epoch_orders", in_row_orders)
    X, y = blob_data(37, 5, 3, seed=5, spread=1.0)
    folds = make_folds(X, y, 5, seed=1)  # unequal folds: a fold sits out a minibatch
    configs = [mlp_config(optimizer="adam", learning_rate=0.01, max_norm=1.0),
               mlp_config(learning_rate=0.05, momentum=0.9)]
    settings = TrainSettings(hidden=(8, 6), epochs=6, batch_size=8, eval_every=3,
                             engine="auto")
    init = glorot_init(10, layer_sizes(5, settings.hidden, 3), seeded(4))
    both = train_trials(configs, folds, settings, seed=0, init=init)
    for t, config in enumerate(configs):
        alone = train_trials([config], folds, settings, seed=0,
                             init=pick(init, slice(5 * t, 5 * t + 5)))[0]
        for got, want in zip(both[t].model.parameters(), alone.model.parameters()):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert both[t].fold_accuracies == pytest.approx(alone.fold_accuracies, abs=1e-6)
    moved = max(float((p - q).abs().max()) for p, q in
                zip(both[0].model.parameters(), pick(init, slice(0, 5)).parameters()))
    assert moved > 0.05  # Adam really trained


def test_an_adam_trial_is_keras_s_adam_step_by_step(monkeypatch):
    """Against a loop written from Keras's Adam (epsilon added to the uncorrected sqrt(v)):
    plain tensors, autograd's gradients, one fold at a time."""
    monkeypatch.setattr(trainer, "epoch_order", in_row_order)
    X, y = blob_data(30, 4, 2, seed=2, spread=1.0)
    folds = make_folds(X, y, 3, seed=0)
    lr, b1, b2, eps = 0.003, 0.9, 0.999, 1e-7
    settings = TrainSettings(hidden=(5,), epochs=3, batch_size=8, eval_every=3,
                             engine="torch")
    init = glorot_init(3, layer_sizes(4, settings.hidden, 2), seeded(9))
    got = train_trials([mlp_config(optimizer="adam", learning_rate=lr)], folds, settings,
                       seed=0, init=init)[0].model
    for f in range(3):
        params = [p[f].clone() for p in init.parameters()]
        m = [torch.zeros_like(p) for p in params]
        v = [torch.zeros_like(p) for p in params]
        n, t = int(folds.n_train[f]), 0
        for _ in range(settings.epochs):
            for start in range(0, n, settings.batch_size):
                x = folds.x_train[f, start:min(n, start + settings.batch_size)]
                target = folds.y_train[f, start:min(n, start + settings.batch_size)].float()
                leaves = [p.clone().requires_grad_() for p in params]
                h = torch.relu(x @ leaves[0] + leaves[1])
                logits = (h @ leaves[2] + leaves[3]).squeeze(-1)
                F.binary_cross_entropy_with_logits(logits, target).backward()
                t += 1
                alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
                for i, leaf in enumerate(leaves):
                    g = leaf.grad
                    m[i] = m[i] + (g - m[i]) * (1 - b1)
                    v[i] = v[i] + (g * g - v[i]) * (1 - b2)
                    params[i] = params[i] - alpha * m[i] / (v[i].sqrt() + eps)
        for mine, want in zip((p[f] for p in got.parameters()), params):
            torch.testing.assert_close(mine, want, rtol=0, atol=1e-6)


def test_adam_trains_on_torch_and_the_c_kernel_refuses_it():
    X, y = blob_data(30, 4, 2)
    folds = make_folds(X, y, 3, seed=0)
    adam = [mlp_config(optimizer="adam", learning_rate=0.001), mlp_config()]
    engine = trainer.MLPEngine(adam, folds, TrainSettings(hidden=(4,), engine="auto"), 0)
    assert not engine.compiled and engine.state()["engine"] == "torch"
    with pytest.raises(RuntimeError, match="trains SGD only"):
        trainer.MLPEngine(adam, folds, TrainSettings(hidden=(4,), engine="c"), 0)
