"""Keras's SGD and Adam, one step and a few, against the formulas written out (numpy,
float64), per model; and where Keras's Adam and PyTorch's part ways."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dropsweep.families.optimizers import adam_step, sgd_step


def keras_adam(w, grads, lr, b1=0.9, b2=0.999, eps=1e-7):
    """Keras's Adam.update_step, written out, for a sequence of gradients."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        w = w - alpha * m / (np.sqrt(v) + eps)
    return w


def test_adam_is_keras_s_step_by_step_with_a_learning_rate_per_model():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4, 5))
    grads = [rng.normal(size=(3, 4, 5)) for _ in range(4)]
    lrs = [1e-3, 3e-4, 0.01]
    w = torch.tensor(w0, dtype=torch.float64)
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        adam_step(w, m, v, torch.tensor(g), torch.tensor(lrs, dtype=torch.float64), t)
        for k, lr in enumerate(lrs):
            np.testing.assert_allclose(w[k].numpy(), keras_adam(w0[k], [x[k] for x in
                                                                       grads[:t]], lr),
                                       rtol=1e-12, atol=1e-14)


def test_keras_adds_epsilon_before_the_bias_correction_and_pytorch_after():
    """With small gradients the two differ by far more than rounding: Keras's first step
    moves 0.0032 x lr here, PyTorch's 0.091 x lr."""
    w = torch.zeros(1, 1, dtype=torch.float64)
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    g = torch.full_like(w, 1e-8)
    adam_step(w, m, v, g, 1.0, 1)
    keras = keras_adam(np.zeros((1, 1)), [np.full((1, 1), 1e-8)], 1.0)
    assert float(w) == pytest.approx(float(keras[0, 0]), rel=1e-12)
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=1.0, eps=1e-7)
    p.grad = torch.full_like(p, 1e-8)
    opt.step()
    assert float(w) == pytest.approx(-0.00315, rel=0.01)
    assert float(p.detach()) == pytest.approx(-0.0909, rel=0.01)


def test_sgd_is_keras_s_momentum_rule():
    rng = np.random.default_rng(1)
    w0, grads = rng.normal(size=(2, 3)), [rng.normal(size=(2, 3)) for _ in range(3)]
    lr, mom = np.array([0.1, 0.01]), np.array([0.9, 0.5])
    w, vel = torch.tensor(w0), torch.zeros(2, 3, dtype=torch.float64)
    want, wv = w0.copy(), np.zeros((2, 3))
    for g in grads:
        sgd_step(w, vel, torch.tensor(g), torch.tensor(lr), torch.tensor(mom))
        wv = mom[:, None] * wv - lr[:, None] * g
        want = want + wv
    np.testing.assert_allclose(w.numpy(), want, rtol=1e-12)


def test_a_mixed_batch_steps_each_model_with_its_own_optimizer():
    """Models 0 and 2 Adam, 1 SGD, model 2 with no rows left at the second step: each ends
    exactly where its own optimizer alone takes it, model 2 with one Adam step fewer."""
    from dropsweep.families.optimizers import step_models

    rng = np.random.default_rng(2)
    w0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(3)]
    lr = torch.tensor([1e-3, 0.1, 3e-3], dtype=torch.float64)
    mom = torch.tensor([0.0, 0.9, 0.0], dtype=torch.float64)
    adam = torch.tensor([True, False, True])
    w = torch.tensor(w0)
    slots = (torch.zeros_like(w), torch.zeros_like(w))
    steps = torch.zeros(3, dtype=torch.int64)
    for i, g in enumerate(grads):
        stepping = torch.tensor([True, True, i != 1])
        steps += stepping
        step_models(w, slots, torch.tensor(g), adam=adam, lr=lr, momentum=mom, step=steps,
                    stepping=stepping)
    np.testing.assert_allclose(w[0].numpy(), keras_adam(w0[0], [g[0] for g in grads], 1e-3),
                               rtol=1e-12)
    np.testing.assert_allclose(w[2].numpy(), keras_adam(w0[2], [grads[0][2], grads[2][2]],
                                                        3e-3), rtol=1e-12)
    want, v = w0[1].copy(), np.zeros(4)
    for g in grads:
        v = 0.9 * v - 0.1 * g[1]
        want = want + v
    np.testing.assert_allclose(w[1].numpy(), want, rtol=1e-12)
