"""The conv-net family's Keras-faithful blocks, each against Keras's formula written out on
hand-made tensors (Keras layouts in numpy; the blocks work in PyTorch's)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dropsweep.families.cnn.blocks import (
    feature_sizes,
    fans,
    init_limit,
    max_norm,
    spatial_mask,
    uniform_init,
)


def test_fans_and_limits_are_keras_s_for_dense_and_conv_kernels():
    assert fans([64, 3, 3, 3]) == (27, 576)  # Conv2D(64, 3x3) on RGB: kh*kw*in, kh*kw*out
    assert fans([256, 1600]) == (1600, 256)  # Dense(256) on 1600 inputs
    assert init_limit("he_uniform", [64, 3, 3, 3]) == pytest.approx(math.sqrt(6 / 27))
    assert init_limit("glorot_uniform", [64, 3, 3, 3]) == pytest.approx(math.sqrt(6 / 603))
    with pytest.raises(ValueError, match="init must be one of"):
        init_limit("lecun_normal", [2, 2])


def test_uniform_draws_fill_the_interval():
    g = torch.Generator().manual_seed(0)
    w = uniform_init("he_uniform", 4, [64, 3, 3, 3], g)
    limit = math.sqrt(6 / 27)
    assert w.shape == (4, 64, 3, 3, 3)
    assert float(w.abs().max()) <= limit and float(w.abs().max()) > 0.99 * limit
    assert float(w.var()) == pytest.approx(limit**2 / 3, rel=0.05)  # U(-a, a): a^2/3


def keras_max_norm(kernel: np.ndarray, c: float, axis) -> np.ndarray:
    """Keras's MaxNorm.__call__, written out: w * clip(n, 0, c) / (epsilon + n)."""
    norms = np.sqrt(np.sum(np.square(kernel), axis=axis, keepdims=True))
    return kernel * np.clip(norms, 0, c) / (1e-7 + norms)


@pytest.mark.parametrize("axis,keras_axis", [("keras", 0), ("filter", (0, 1, 2))])
def test_max_norm_on_a_conv_kernel_is_keras_s_with_either_axis(axis, keras_axis):
    rng = np.random.default_rng(0)
    # Keras's Conv2D kernel layout: (rows, cols, in, out); large enough that some clip
    kernel = rng.normal(0, 1.5, (3, 3, 2, 4)).astype(np.float32)
    want = keras_max_norm(kernel, 2.0, keras_axis)
    torch_layout = torch.from_numpy(kernel).permute(3, 2, 0, 1)[None]  # [1, out, in, rows, cols]
    got = max_norm(torch_layout, 2.0, axis)[0].permute(2, 3, 1, 0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(want, kernel)  # something was clipped
    # the two axes really differ: 'keras' bounds each column, 'filter' each whole filter
    other = keras_max_norm(kernel, 2.0, (0, 1, 2) if axis == "keras" else 0)
    assert not np.allclose(got, other)
    column_norms = np.sqrt((got**2).sum(axis=keras_axis))
    assert column_norms.max() <= 2.0 + 1e-5


def test_max_norm_on_a_dense_kernel_bounds_each_unit_and_takes_a_limit_per_model():
    rng = np.random.default_rng(1)
    kernels = rng.normal(0, 1.0, (2, 9, 5)).astype(np.float32)  # Keras Dense: (in, out)
    limits = [1.0, 4.0]
    torch_layout = torch.from_numpy(kernels).transpose(1, 2)  # [models, out, in]
    got = max_norm(torch_layout, torch.tensor(limits), "keras").transpose(1, 2).numpy()
    for m, c in enumerate(limits):
        np.testing.assert_allclose(got[m], keras_max_norm(kernels[m], c, 0), rtol=1e-6,
                                   atol=1e-7)


def test_spatial_dropout_drops_whole_feature_maps_at_the_rate_and_scales_the_rest():
    g = torch.Generator().manual_seed(3)
    rates = torch.tensor([0.2, 0.5])
    mask = spatial_mask(2, 4000, 16, rates, g)
    assert mask.shape == (2, 4000, 16, 1, 1)
    maps = torch.ones(2, 4000, 16, 5, 5) * mask  # broadcast over each map
    flat = maps.flatten(3)
    assert torch.equal(flat.min(3).values, flat.max(3).values)  # a map is kept or dropped whole
    for m, rate in enumerate(rates.tolist()):
        kept = mask[m] > 0
        assert float(kept.float().mean()) == pytest.approx(1 - rate, abs=0.01)
        assert torch.allclose(mask[m][kept], torch.tensor(1 / (1 - rate)))
        assert float(maps[m].mean()) == pytest.approx(1.0, abs=0.02)  # inverted: mean kept


def test_feature_sizes_follow_keras_and_refuse_maps_below_one_pixel():
    assert feature_sizes(32, 32, 2) == [(15, 15), (6, 6)]  # the CIFAR-10 example
    assert feature_sizes(8, 8, 2, padding="same") == [(4, 4), (2, 2)]
    assert feature_sizes(8, 8, 1) == [(3, 3)]
    with pytest.raises(ValueError, match=r"conv block 2's 2x2 pooling leaves no feature map "
                                         r"\(8x8 input, valid padding\)"):
        feature_sizes(8, 8, 2)
    with pytest.raises(ValueError, match="conv block 1's 3x3 convolution leaves no feature"):
        feature_sizes(2, 2, 1)


@pytest.mark.parametrize("shape", [(2, 4, 3, 5), (2, 4, 3, 3, 3, 3)])  # Conv1d, Conv3d
def test_max_norm_bounds_kernels_of_any_rank_per_filter_or_along_keras_s_axis(shape):
    """The custom family constrains a user's Conv1d/Conv3d with the same function."""
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3
    per_filter = max_norm(w, 1.0, "filter")
    filter_norms = per_filter.pow(2).sum(dim=tuple(range(2, w.dim()))).sqrt()
    assert float(filter_norms.max()) == pytest.approx(1.0, abs=1e-5)
    keras = max_norm(w, 1.0, "keras")  # along the kernel's first spatial axis (Keras axis 0)
    column_norms = keras.pow(2).sum(dim=3).sqrt()
    assert float(column_norms.max()) == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(per_filter, keras)
