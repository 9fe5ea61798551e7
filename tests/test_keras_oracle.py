"""Keras itself as the oracle (issue 14, item 9).

Wherever dropsweep claims to compute something "as Keras computes it", a test here runs
Keras 3 too — on its PyTorch backend (``KERAS_BACKEND=torch``, no TensorFlow) — from the same
initial weights and data, and compares: the He/Glorot-uniform initialisers, Adam, MaxNorm on
either axis of a conv kernel and on a dense one, spatial dropout's mask, valid/same padding
and pooling shapes, a few training steps of the whole Keras CIFAR-10 example's network, and
3 epochs of Brownlee's three Sonar set-ups (dropout off) on both MLP engines.

Keras is an optional test extra (``pip install -e '.[keras]'``); without it the whole file
skips with the reason. Layouts: Keras keeps conv kernels ``(rows, cols, in, out)`` and dense
kernels ``(in, out)`` and images channels-last; dropsweep's conv nets keep PyTorch's
``[out, in, rows, cols]`` / ``[out, in]`` and channels-first, its MLP ``[in, out]``.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported: no TensorFlow needed

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

keras = pytest.importorskip(
    "keras", minversion="3.5",
    reason="Keras 3 is the oracle of these tests: pip install -e '.[keras]' (runs on torch)")

from conftest import SONAR_DIR  # noqa: E402
from dropsweep.data.dataset import load_sonar  # noqa: E402
from dropsweep.families.cnn import network as cnn_network  # noqa: E402
from dropsweep.families.cnn.blocks import (  # noqa: E402
    fans,
    feature_sizes,
    init_limit,
    max_norm,
    spatial_mask,
    uniform_init,
)
from dropsweep.families.cnn.network import ConvNets, ConvSpec  # noqa: E402
from dropsweep.families.mlp import config as mlp_config  # noqa: E402
from dropsweep.families.mlp import kernel  # noqa: E402
from dropsweep.families.mlp.engine import TrainSettings, train_trials  # noqa: E402
from dropsweep.families.mlp.network import glorot_init, layer_sizes  # noqa: E402
from dropsweep.families.optimizers import adam_step  # noqa: E402
from dropsweep.data.protocols import make_folds  # noqa: E402
from dropsweep.train.loop import epoch_order  # noqa: E402

# Keras's numpy conversions on numpy 2 (get_weights, set_weights) warn about __array__'s
# copy keyword: Keras's business, not these tests'.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

if keras.backend.backend() != "torch":  # imported earlier by someone else, on another backend
    pytest.skip(f"keras was already imported on the {keras.backend.backend()} backend",
                allow_module_level=True)


def numpy(t) -> np.ndarray:
    """A Keras result (a torch tensor or a Keras Variable on this backend) as numpy."""
    if isinstance(t, keras.Variable):
        t = t.value
    return torch.as_tensor(t).detach().cpu().numpy()


@pytest.fixture(autouse=True)
def _one_thread():
    """Everything here is tiny: one intra-op thread (a busy 2-core machine), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- initialisers


@pytest.mark.parametrize("kind,keras_init", [("he_uniform", "HeUniform"),
                                             ("glorot_uniform", "GlorotUniform")])
@pytest.mark.parametrize("keras_shape", [(3, 3, 16, 32), (3, 3, 3, 256), (400, 120)])
def test_uniform_initialisers_have_keras_s_fans_and_limits(kind, keras_init, keras_shape):
    """He-uniform (limit sqrt(6 / fan_in)) and Glorot-uniform (sqrt(6 / (fan_in + fan_out)))
    as Keras draws them, for a Conv2D kernel (fans kh*kw*in, kh*kw*out) and a Dense one:
    Keras's own fans equal ``blocks.fans``; Keras's draws fill (-limit, limit) of
    ``init_limit`` (max |w| just under it, variance limit^2 / 3), and so do dropsweep's."""
    from keras.src.initializers.random_initializers import compute_fans

    ours_shape = ([keras_shape[3], keras_shape[2], keras_shape[0], keras_shape[1]]
                  if len(keras_shape) == 4 else [keras_shape[1], keras_shape[0]])
    assert tuple(int(f) for f in compute_fans(keras_shape)) == fans(ours_shape)
    limit = init_limit(kind, ours_shape)
    drawn = numpy(getattr(keras.initializers, keras_init)(seed=1)(keras_shape)).astype(np.float64)
    ours = uniform_init(kind, 1, ours_shape, torch.Generator().manual_seed(1))[0].double().numpy()
    for w in (drawn, ours):
        assert w.size >= 4000  # enough draws that the max is within 1% of the limit
        assert 0.99 * limit < np.abs(w).max() <= limit * (1 + 1e-6)
        assert w.var() == pytest.approx(limit**2 / 3, rel=0.05)
        assert abs(w.mean()) < 0.05 * limit


# ----------------------------------------------------------------------------- Adam


def keras_float32_bias_correction(t: int) -> float:
    """``sqrt(1 - beta_2^t) / (1 - beta_1^t)`` as Keras's Adam computes it for float32
    weights: the powers of float32(0.999) and float32(0.9), in float32."""
    f = torch.float32
    b1 = torch.tensor(0.9, dtype=f) ** torch.tensor(float(t), dtype=f)
    b2 = torch.tensor(0.999, dtype=f) ** torch.tensor(float(t), dtype=f)
    return float(torch.sqrt(1 - b2) / (1 - b1))


def exact_bias_correction(t: int) -> float:
    return math.sqrt(1 - 0.999**t) / (1 - 0.9**t)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adam_steps_are_keras_s(dtype):
    """Keras's Adam (defaults: beta_1 0.9, beta_2 0.999, epsilon 1e-7 added to the
    uncorrected sqrt(v)) applied by Keras itself to a Variable, five steps with gradients
    from 1e-6 to 10 (epsilon's placement matters for the small ones), against
    ``optimizers.adam_step``.

    Two things of Keras's arithmetic, not of its formula, show and are accounted for:

    * Keras keeps the learning rate in a float32 variable whatever the weights' dtype, so
      its float64 Adam steps with float32(0.01) = 0.0099999998: given 0.01 itself,
      ``adam_step`` differs by 7e-9 relative; given the float32 value, by rounding (1e-12).
    * For float32 weights Keras computes the bias correction ``sqrt(1 - beta_2^t) / (1 -
      beta_1^t)`` in float32 from float32(0.999) = 0.99900001287: ``1 - beta_2^t`` loses
      about 1.3e-5 relative to cancellation at t = 1, so Keras's step size is about 6e-6
      relative off the formula's (dropsweep computes it in float64, the formula's value).
      Over these five steps its error reaches 1.0e-5 (float32 powers add their own). With
      Keras's float32 correction substituted, the two agree to float32 rounding (1e-7
      relative, seen: one ulp); without it, each weight differs from Keras's by at most that
      error times the distance it has travelled, plus two ulps (seen: under one)."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 6)).astype(dtype)
    scale = np.logspace(-6, 1, 6).astype(dtype)  # gradients from 1e-6 to 10 by column
    grads = [(rng.normal(size=(4, 6)) * scale).astype(dtype) for _ in range(5)]
    var = keras.Variable(w0, dtype=dtype)
    adam = keras.optimizers.Adam(learning_rate=0.01)
    lr = float(np.float32(0.01))
    same = torch.tensor(w0)[None]  # Keras's arithmetic reproduced
    exact = same.clone()  # dropsweep as it runs
    slots = [torch.zeros_like(same) for _ in range(4)]
    path = np.zeros(w0.shape)  # how far each weight has travelled, step by step
    worst = 0.0  # the largest relative error of Keras's float32 bias correction so far
    for t, g in enumerate(grads, start=1):
        adam.apply([keras.ops.convert_to_tensor(g)], [var])
        before = exact.clone()
        keras_lr = lr
        if dtype == "float32":
            keras_lr = lr * keras_float32_bias_correction(t) / exact_bias_correction(t)
        adam_step(same, slots[0], slots[1], torch.tensor(g)[None], keras_lr, t)
        adam_step(exact, slots[2], slots[3], torch.tensor(g)[None], lr, t)
        want = numpy(var)
        if dtype == "float64":
            np.testing.assert_allclose(same[0].numpy(), want, rtol=1e-12, atol=0)
            assert torch.equal(same, exact)
        else:
            np.testing.assert_allclose(same[0].numpy(), want, rtol=3e-7, atol=0)
            path += (exact - before)[0].abs().double().numpy()
            worst = max(worst, abs(keras_float32_bias_correction(t) / exact_bias_correction(t)
                                   - 1))
            drift = np.abs(exact[0].double().numpy() - want)
            ulp = np.spacing(np.abs(want)).astype(np.float64)
            assert (drift <= worst * path + 2 * ulp).all()
    assert not np.allclose(numpy(var), w0)


# ----------------------------------------------------------------------------- MaxNorm


@pytest.mark.parametrize("axis,keras_axis", [("keras", 0), ("filter", [0, 1, 2])])
def test_max_norm_on_a_conv_kernel_is_keras_s(axis, keras_axis):
    """``keras.constraints.MaxNorm(2.0, axis)`` on a Conv2D kernel (rows, cols, in, out) —
    axis 0 (Keras's default, each length-rows column) and [0, 1, 2] (each filter) — equals
    ``max_norm(..., 'keras' | 'filter')`` on the same kernel in PyTorch's layout."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 1.5, (3, 3, 2, 4)).astype(np.float32)  # large enough that some clip
    want = numpy(keras.constraints.MaxNorm(2.0, axis=keras_axis)(kernel))
    ours = torch.from_numpy(kernel).permute(3, 2, 0, 1)[None]  # [1, out, in, rows, cols]
    got = max_norm(ours, 2.0, axis)[0].permute(2, 3, 1, 0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(want, kernel)  # something was clipped
    other = numpy(keras.constraints.MaxNorm(2.0, axis=[0, 1, 2] if axis == "keras" else 0)(
        kernel))
    assert not np.allclose(got, other)  # and the two axes really differ


def test_max_norm_on_a_dense_kernel_is_keras_s():
    """``MaxNorm(c)`` (axis 0) on a Dense kernel (in, out) bounds each unit's incoming
    weights: ``max_norm`` on the ``[out, in]`` layout, one limit per model."""
    rng = np.random.default_rng(1)
    kernels = rng.normal(0, 1.0, (2, 9, 5)).astype(np.float32)
    limits = [1.0, 4.0]
    got = max_norm(torch.from_numpy(kernels).transpose(1, 2), torch.tensor(limits), "keras")
    for m, c in enumerate(limits):
        want = numpy(keras.constraints.MaxNorm(c)(kernels[m]))
        np.testing.assert_allclose(got[m].T.numpy(), want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(got[0].T.numpy(), kernels[0])


# ----------------------------------------------------------------------------- spatial dropout


def _map_structure(mask: np.ndarray, rate: float) -> np.ndarray:
    """For a channels-last mask (batch, h, w, channels): asserts each feature map is kept or
    dropped whole, kept ones scaled by 1 / (1 - rate); returns the (batch, channels) keeps."""
    per_map = mask[:, :1, :1, :]
    assert np.array_equal(mask, np.broadcast_to(per_map, mask.shape))
    values = np.unique(per_map)
    assert set(values.tolist()) <= {0.0, np.float32(1 / (1 - rate))}
    return per_map[:, 0, 0, :] > 0


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_spatial_dropout_masks_have_keras_s_structure(rate):
    """Keras's ``SpatialDropout2D(rate)`` and ``Dropout(rate, noise_shape=(batch, 1, 1,
    channels))`` in training drop whole feature maps, one draw per (example, channel),
    scaling kept maps by 1 / (1 - rate); dropsweep's spatial dropout (``blocks.spatial_mask``
    and the conv site's mask in ``ConvNets``) does the same, at the same keep rate."""
    batch, h, w, channels = 400, 5, 5, 16
    ones = np.ones((batch, h, w, channels), dtype=np.float32)
    keras.utils.set_random_seed(0)
    keeps = [_map_structure(numpy(keras.layers.SpatialDropout2D(rate)(ones, training=True)),
                            rate),
             _map_structure(numpy(keras.layers.Dropout(rate, noise_shape=(batch, 1, 1, channels))(
                 ones, training=True)), rate)]
    g = torch.Generator().manual_seed(0)
    rates = torch.tensor([rate])
    ours = spatial_mask(1, batch, channels, rates, g)[0]  # [rows, channels, 1, 1]
    ours = ours.expand(batch, channels, h, w).permute(0, 2, 3, 1).numpy()
    keeps.append(_map_structure(ours, rate))
    site = cnn_network._mask((batch, channels, h, w), rates, g, torch.tensor([True]))[0]
    keeps.append(_map_structure(site.permute(0, 2, 3, 1).numpy(), rate))
    n = batch * channels  # 6400 maps: the keep rate to within ~4 standard errors
    for kept in keeps:
        assert kept.mean() == pytest.approx(1 - rate, abs=4 * math.sqrt(rate * (1 - rate) / n))
        assert 0 < kept.mean() < 1 and kept.any(0).all()  # every channel kept somewhere


# ----------------------------------------------------------------------------- shapes


def keras_conv_stack(in_shape: tuple[int, int, int], conv: tuple[int, ...], padding: str,
                     kernel: int = 3, pool: int = 2) -> keras.Sequential:
    layers = [keras.Input((in_shape[1], in_shape[2], in_shape[0]))]
    for out in conv:
        layers += [keras.layers.Conv2D(out, kernel, padding=padding),
                   keras.layers.MaxPooling2D(pool)]
    return keras.Sequential([*layers, keras.layers.Flatten()])


@pytest.mark.parametrize("in_shape,conv", [((1, 8, 8), (4,)), ((1, 28, 28), (8, 16)),
                                           ((3, 32, 32), (64, 64)), ((3, 13, 11), (4, 6))])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("kernel,pool", [(3, 2), (5, 3)])
def test_feature_map_sizes_are_keras_s(in_shape, conv, padding, kernel, pool):
    """Conv2D (valid or same) then MaxPooling2D (Keras's default: valid, floor), block after
    block: each block's spatial size is ``feature_sizes``'s and the Flatten width is
    ``ConvSpec.flat()``; where the maps would vanish, Keras refuses the network too."""
    spec = ConvSpec(in_shape=in_shape, conv=conv, dense=(), kernel=kernel, pool=pool,
                    padding=padding)
    try:
        sizes = feature_sizes(in_shape[1], in_shape[2], len(conv), kernel, pool, padding)
    except ValueError:
        with pytest.raises(ValueError):
            keras_conv_stack(in_shape, conv, padding, kernel, pool)
        return
    model = keras_conv_stack(in_shape, conv, padding, kernel, pool)
    pools = [l for l in model.layers if isinstance(l, keras.layers.MaxPooling2D)]
    assert [tuple(l.output.shape[1:3]) for l in pools] == sizes
    assert model.output_shape == (None, spec.flat())


# ----------------------------------------------------------------------------- the conv net


def keras_cnn(spec: ConvSpec, c: float | None, axis: str) -> keras.Sequential:
    """The Keras CIFAR-10 example's network for ``spec``, as its code writes it."""
    def conv_limit():
        if c is None:
            return None
        return keras.constraints.MaxNorm(c, axis=0 if axis == "keras" else [0, 1, 2])

    layers = [keras.Input((spec.in_shape[1], spec.in_shape[2], spec.in_shape[0]))]
    for out in spec.conv:
        layers += [keras.layers.Conv2D(out, spec.kernel, activation="relu",
                                       padding=spec.padding, kernel_initializer=spec.init,
                                       kernel_constraint=conv_limit()),
                   keras.layers.MaxPooling2D(spec.pool)]
    layers.append(keras.layers.Flatten())
    for out in spec.dense:
        layers.append(keras.layers.Dense(
            out, activation="relu", kernel_initializer=spec.init,
            kernel_constraint=None if c is None else keras.constraints.MaxNorm(c)))
    layers.append(keras.layers.Dense(spec.classes, activation="softmax"))
    return keras.Sequential(layers)


def to_keras(nets: ConvNets) -> list[np.ndarray]:
    """Model 0's weights in Keras's layouts, the first dense layer's inputs reordered from
    our (channels, h, w) flattening to Keras's channels-last (h, w, channels)."""
    s = nets.spec
    h, w = feature_sizes(s.in_shape[1], s.in_shape[2], len(s.conv), s.kernel, s.pool,
                         s.padding)[-1]
    out: list[np.ndarray] = []
    for k, b in zip(nets.conv_w, nets.conv_b):
        out += [k[0].permute(2, 3, 1, 0).numpy(), b[0].numpy()]
    for i, (k, b) in enumerate(zip(nets.dense_w, nets.dense_b)):
        k = k[0]
        if i == 0:
            k = k.reshape(k.shape[0], s.conv[-1], h, w).permute(2, 3, 1, 0).reshape(-1, k.shape[0])
        else:
            k = k.T
        out += [k.numpy(), b[0].numpy()]
    return [np.ascontiguousarray(a) for a in out]


@pytest.mark.parametrize("optimizer,c,axis", [("sgd", None, "keras"), ("sgd", 0.3, "keras"),
                                              ("sgd", 0.6, "filter"), ("adam", None, "keras"),
                                              ("adam", 0.3, "keras"), ("adam", 0.6, "filter")])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_net_trains_as_keras_s_cifar10_example(optimizer, c, axis, padding):
    """The example's network — Conv2D(relu, he_uniform, max_norm) -> MaxPooling2D -> ... ->
    Flatten -> Dense(relu, max_norm) -> Dense(softmax), sparse categorical cross-entropy
    (the mean over the batch) — built in Keras with the weights of a one-model ``ConvNets``,
    then five ``train_on_batch`` steps with SGD(momentum) or Adam, with and without max-norm
    on either conv axis, against ``ConvNets.step`` on the same minibatches (dropout off).

    float32 on both sides (Keras's torch backend computes Dense's matmul in float32 even
    for float64 weights, so float64 is no cleaner oracle). With SGD, every weight agrees to
    1e-5 relative (atol 1e-6) after five steps: rounding only (Keras clips the softmax
    probabilities at 1e-7 before the log, which no row here reaches).

    With Adam, all but a few weights agree as closely; the few are weights whose gradient
    was tiny at some step, where Adam's step is in epsilon's regime (sqrt(v) comparable to
    epsilon 1e-7) and so proportional to the gradient itself, carrying the gradient's float32
    rounding into the step instead of normalising it away. Traced (same padding, seed 7):
    the first dense layer's weight (Keras row 61, unit 0) had gradient -1.025e-6 at step 3
    in float64; Keras's float32 gradient was -1.000e-6 (2.4% off, ours 0.1%), and its weight
    ended 1.5e-5 (0.5% of lr) from the float64 one, ours 1.2e-6. Hence: 99.5% of the Adam
    weights to 1e-5 relative, and every one within 1% of the learning rate."""
    spec = ConvSpec(in_shape=(3, 16, 16), conv=(4, 6), dense=(16,), classes=10,
                    padding=padding)
    g = torch.Generator().manual_seed(7)
    nets = ConvNets(spec, 1, g)
    model = keras_cnn(spec, c, axis)
    model.set_weights(to_keras(nets))
    lr = 0.05 if optimizer == "sgd" else 0.003
    keras_opt = (keras.optimizers.SGD(learning_rate=lr, momentum=0.9) if optimizer == "sgd"
                 else keras.optimizers.Adam(learning_rate=lr))
    model.compile(optimizer=keras_opt, loss="sparse_categorical_crossentropy")
    start = [p.clone() for p in nets.parameters()]
    for _ in range(5):
        x = torch.randn(1, 12, *spec.in_shape, generator=g)
        y = torch.randint(0, spec.classes, (1, 12), generator=g)
        model.train_on_batch(x[0].permute(0, 2, 3, 1).numpy(), y[0].numpy())
        nets.step(x, y, optimizer=optimizer, lr=torch.tensor([lr]),
                  momentum=torch.tensor([0.9]),
                  max_norm_c=None if c is None else torch.tensor([c]), max_norm_axis=axis)
    close, total = 0, 0
    for got, want in zip(to_keras(nets), model.get_weights()):
        if optimizer == "sgd":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=0.01 * lr)
            close += int(np.isclose(got, want, rtol=1e-5, atol=1e-6).sum())
            total += got.size
    assert close >= 0.995 * total
    moved = max(float((a - b).abs().max()) for a, b in zip(nets.parameters(), start))
    assert moved > 0.01  # training, not the initial weights, is compared
    if c is not None:  # the constraint had work to do: initial kernels exceed it
        dims = (3,) if axis == "keras" else (2, 3, 4)
        assert float(start[0].pow(2).sum(dim=dims).sqrt().max()) > c


# ----------------------------------------------------------------------------- the MLP

# sweeps/brownlee.yaml's three set-ups with their dropout rates set to 0: what is left is
# Keras's SGD with momentum, MaxNorm(3) on the hidden layers, and the training loop itself.
# In 3 epochs no hidden unit's norm reaches 3 (1.85 at most), so a fourth set-up, MaxNorm(1),
# makes the constraint act (the initial units' norms are about 1 already).
BROWNLEE = [
    mlp_config(learning_rate=0.01, momentum=0.8),
    mlp_config(placement="input", learning_rate=0.1, momentum=0.9, max_norm=3.0),
    mlp_config(placement="hidden", learning_rate=0.1, momentum=0.9, max_norm=3.0),
]
BINDING = mlp_config(learning_rate=0.1, momentum=0.9, max_norm=1.0)
SET_UPS = [*BROWNLEE, BINDING]
FOLDS_COMPARED = (0,)  # one fold of Sonar's 10: 187 training rows, a last minibatch of 11


@pytest.fixture(scope="module")
def brownlee_in_keras():
    """Sonar's folds, the initial weights, the trainer's seed, and each set-up's weights
    after 3 epochs of Keras (per trial, per compared fold), computed once for both engines."""
    if not (SONAR_DIR / "sonar.csv").exists():
        pytest.skip(f"the real Sonar file is not at {SONAR_DIR} (set DROPSWEEP_DATA_DIR)")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only waits (see _one_thread)
    try:
        with pytest.MonkeyPatch.context() as env:  # module scope: conftest's is per test
            env.setenv("DROPSWEEP_DATA_DIR", str(SONAR_DIR))
            return _brownlee_in_keras()
    finally:
        torch.set_num_threads(before)


def _brownlee_in_keras():
    dataset = load_sonar()
    folds = make_folds(dataset.X, dataset.y, 10, seed=7, n_classes=dataset.n_classes)
    assert int(folds.n_train[0]) == 187
    k, seed = folds.k, 11
    init = glorot_init(len(SET_UPS) * k, layer_sizes(60, (60, 30), 2),
                       torch.Generator().manual_seed(5))
    # the trainer's row order, replayed: model t*k + f is fold f of trial t, and every epoch
    # draws one order for all models from the generator seeded with the trainer's seed
    generator = torch.Generator().manual_seed(seed)
    n_train = folds.n_train.repeat(len(SET_UPS))
    orders = [epoch_order(generator, n_train, folds.max_train) for _ in range(3)]
    want: dict[tuple[int, int], list[np.ndarray]] = {}
    for t, config in enumerate(SET_UPS):
        for f in FOLDS_COMPARED:
            m = t * k + f

            def limit():
                c = config["max_norm"]
                return None if c is None else keras.constraints.MaxNorm(c)

            model = keras.Sequential([
                keras.Input((60,)),
                keras.layers.Dense(60, activation="relu", kernel_constraint=limit()),
                keras.layers.Dense(30, activation="relu", kernel_constraint=limit()),
                keras.layers.Dense(1, activation="sigmoid")])
            model.set_weights([a for w, b in zip(init.weights, init.biases)
                               for a in (w[m].numpy(), b[m, 0].numpy())])
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=config["learning_rate"],
                                                         momentum=config["momentum"]),
                          loss="binary_crossentropy")
            for order in orders:
                rows = folds.train_idx[f, order[m, :int(folds.n_train[f])]]
                x = folds.rows[folds.table_of[f], rows].numpy()
                y = folds.labels[rows].numpy().astype(np.float32)
                model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
            want[(t, f)] = [np.asarray(a) for a in model.get_weights()]
    return folds, init, seed, want


@pytest.mark.parametrize("engine", ["c", "torch"])
def test_brownlee_s_three_set_ups_train_as_in_keras(brownlee_in_keras, engine):
    """Brownlee's three Sonar set-ups (sweeps/brownlee.yaml: the baseline, and lr 0.1,
    momentum 0.9, MaxNorm(3) on both hidden layers — the output layer unconstrained — with
    the dropout rates set to 0), 3 epochs, batch 16: Keras's Dense(60, relu) -> Dense(30,
    relu) -> Dense(1, sigmoid), binary cross-entropy, SGD with momentum, fed each epoch's
    rows in the trainer's order (shuffle off; the last minibatch the partial one, as Keras
    has it), from the same initial weights as ``train_trials`` on each engine; compared on
    fold 0.

    The README's claim that dropsweep's training rules are Keras's, guarded on both engines
    by Keras itself rather than by a reference written to the same reading. A fourth set-up
    with MaxNorm(1) makes the constraint act (MaxNorm(3) does not within 3 epochs).

    Every weight agrees to 1e-6 absolute (seen: 1.5e-7 at most, float32 rounding over 36
    steps, against weights that moved by 0.03 to 0.66). Keras clips the sigmoid's output to
    [1e-7, 1 - 1e-7] inside binary cross-entropy, which stops the gradient of a saturated
    row; no row saturates in 3 epochs here, or the two would part by far more."""
    if engine == "c" and kernel.load() is None:
        pytest.skip("the C kernel cannot be built here (no C compiler)")
    folds, init, seed, want = brownlee_in_keras
    settings = TrainSettings(hidden=(60, 30), epochs=3, batch_size=16, eval_every=3,
                             engine=engine)
    results = train_trials(SET_UPS, folds, settings, seed=seed, init=init)
    for (t, f), keras_weights in want.items():
        model = results[t].model
        assert results[t].failure is None and model is not None
        got = [a for w, b in zip(model.weights, model.biases) for a in (w[f].numpy(),
                                                                       b[f, 0].numpy())]
        start = [a for w, b in zip(init.weights, init.biases)
                 for a in (w[t * folds.k + f].numpy(), b[t * folds.k + f, 0].numpy())]
        for a, b, s in zip(got, keras_weights, start):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
            assert np.abs(a - s).max() > 1e-3  # the weights travelled: training is compared
        if SET_UPS[t] is BINDING:  # the limit bound, in both: units at norm 1, none above
            for i in (0, 2):
                norms = np.sqrt((got[i] ** 2).sum(0))  # a unit's incoming weights: a column
                assert norms.max() <= 1.0 + 1e-6 and (norms > 1.0 - 1e-6).sum() >= 5
