"""The batched conv nets against plain per-model ``nn.Conv2d``/``nn.Linear`` networks with
the same initial weights and minibatches (dropout off): the same weights after several
steps, for Keras's SGD and Adam, with and without max-norm, in every form (issue 14)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dropsweep.families.cnn.blocks import max_norm
from dropsweep.families.cnn.network import FORMS, ConvNets, ConvSpec, Rates
from dropsweep.families.optimizers import adam_step, sgd_step

SPEC = ConvSpec(in_shape=(2, 12, 12), conv=(4, 6), dense=(8,), classes=3)


def reference(nets: ConvNets, m: int) -> nn.Sequential:
    """Model ``m`` as the plain network a user would write, with its weights."""
    s = nets.spec
    layers: list[nn.Module] = []
    c = s.in_shape[0]
    for out in s.conv:
        layers += [nn.Conv2d(c, out, s.kernel), nn.ReLU(), nn.MaxPool2d(s.pool)]
        c = out
    layers.append(nn.Flatten())
    width = s.flat()
    for out in (*s.dense, s.classes):
        layers += [nn.Linear(width, out), nn.ReLU()]
        width = out
    net = nn.Sequential(*layers[:-1]).double()
    convs = [l for l in net if isinstance(l, nn.Conv2d)]
    denses = [l for l in net if isinstance(l, nn.Linear)]
    with torch.no_grad():
        for layer, w, b in zip(convs + denses, nets.conv_w + nets.dense_w,
                               nets.conv_b + nets.dense_b):
            layer.weight.copy_(w[m])
            layer.bias.copy_(b[m])
    return net


def reference_step(net: nn.Sequential, slots: dict, x, y, optimizer, lr, mom, c, axis, t):
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    params = list(net.parameters())
    for i, p in enumerate(params):
        s = slots.setdefault(i, [torch.zeros_like(p)[None], torch.zeros_like(p)[None]])
        w, g = p.data[None], p.grad[None]
        if optimizer == "sgd":
            sgd_step(w, s[0], g, lr, mom)
        else:
            adam_step(w, s[0], s[1], g, lr, t)
    if c is not None:
        with torch.no_grad():
            for layer in list(net)[:-1]:  # conv kernels and hidden dense layers
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    layer.weight.copy_(max_norm(layer.weight[None], c, axis)[0])


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("optimizer,c,axis", [("sgd", None, "keras"), ("sgd", 0.5, "keras"),
                                              ("adam", None, "keras"),
                                              ("adam", 0.5, "filter")])
def test_the_batch_trains_exactly_as_plain_per_model_networks(form, optimizer, c, axis):
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(0)
        nets = ConvNets(SPEC, 3, g)
        refs = [reference(nets, m) for m in range(3)]
        lr = torch.tensor([0.05, 0.01, 0.002])
        mom = torch.tensor([0.9, 0.0, 0.5])
        limits = None if c is None else torch.tensor([c, float("inf"), c])
        slots = [dict() for _ in range(3)]
        for t in range(1, 5):
            x = torch.randn(3, 8, *SPEC.in_shape, generator=g)
            y = torch.randint(0, 3, (3, 8), generator=g)
            nets.step(x, y, optimizer=optimizer, lr=lr, momentum=mom, max_norm_c=limits,
                      max_norm_axis=axis, form=form)
            for m in range(3):
                reference_step(refs[m], slots[m], x[m], y[m], optimizer, float(lr[m]),
                               float(mom[m]), None if limits is None or m == 1 else c,
                               axis, t)
        for m in range(3):
            want = list(refs[m].parameters())
            convs, denses = want[:4], want[4:]
            got = [nets.conv_w[0][m], nets.conv_b[0][m], nets.conv_w[1][m], nets.conv_b[1][m],
                   nets.dense_w[0][m], nets.dense_b[0][m], nets.dense_w[1][m],
                   nets.dense_b[1][m]]
            for a, b in zip(got, convs + denses):
                torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-7)
        if c is not None:  # the constraint bound the constrained models, and bit
            dims = (3,) if axis == "keras" else (2, 3, 4)
            norms = nets.conv_w[0].pow(2).sum(dim=dims).sqrt()
            assert float(norms[[0, 2]].max()) <= c + 1e-6
            assert float(norms[[0, 2]].max()) > c - 1e-4  # some were clipped to c
    finally:
        torch.set_default_dtype(torch.float32)


def test_dropout_sites_and_spatial_maps_in_a_forward_pass():
    g = torch.Generator().manual_seed(1)
    nets = ConvNets(SPEC, 2, g)
    x = torch.randn(2, 5, *SPEC.in_shape, generator=g)
    plain = nets.logits(x)
    none = Rates(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.tensor([True, False]))
    assert torch.equal(nets.logits(x, none, g), plain)  # rates 0: no dropout at all
    both = Rates(torch.tensor([0.0, 0.3]), torch.tensor([0.5, 0.0]), torch.zeros(2),
                 torch.tensor([True, False]))
    dropped = nets.logits(x, both, g)
    assert not torch.equal(dropped[0], plain[0]) and not torch.equal(dropped[1], plain[1])
    for form in FORMS[1:]:
        torch.testing.assert_close(nets.logits(x, form=form), plain)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("spec", [
    ConvSpec(in_shape=(1, 8, 8), conv=(5, 7), dense=(6,), classes=4, padding="same"),
    ConvSpec(in_shape=(3, 11, 9), conv=(4,), dense=(), classes=3),  # odd maps: pooling floors
    ConvSpec(in_shape=(2, 13, 13), conv=(3, 4), dense=(5,), classes=3, kernel=5,
             padding="same"),
])
def test_every_form_computes_the_plain_networks_logits_and_gradients(form, spec):
    """Same and valid padding, a 5x5 kernel, maps whose pooling drops a row: each model's
    logits and the gradients of its loss are those of its plain per-model network."""
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(4)
        nets = ConvNets(spec, 3, g)
        x = torch.randn(3, 6, *spec.in_shape, generator=g)
        params = [p.clone().requires_grad_() for p in nets.parameters()]
        logits = nets.logits(x, form=form, params=params)
        grads = torch.autograd.grad(logits.pow(2).sum(), params)
        for m in range(3):
            mine = [p[m].clone().requires_grad_() for p in nets.parameters()]
            want = nets.one(x[m], mine)
            torch.testing.assert_close(logits[m], want, rtol=1e-9, atol=1e-12)
            for got, expected in zip(grads, torch.autograd.grad(want.pow(2).sum(), mine)):
                torch.testing.assert_close(got[m], expected, rtol=1e-9, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_a_network_too_deep_for_its_input_is_refused():
    with pytest.raises(ValueError, match="conv block 2's 2x2 pooling leaves no feature map"):
        ConvSpec(in_shape=(1, 8, 8), conv=(4, 4)).flat()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_with_dropout_every_form_draws_the_same_masks_and_trains_the_same(optimizer):
    """Training in the loop form goes model by model (one model's activations alive at a
    time) with the whole batch's masks drawn first, in the forward pass's order: so it
    computes what the grouped forms do, dropout and spatial maps included, and a
    per-model row weight (a split with fewer rows) counts the same."""
    torch.set_default_dtype(torch.float64)
    try:
        runs = {}
        for form in FORMS:
            g = torch.Generator().manual_seed(3)
            nets = ConvNets(SPEC, 3, g)
            rates = Rates(torch.tensor([0.2, 0.0, 0.1]), torch.tensor([0.3, 0.5, 0.0]),
                          torch.tensor([0.5, 0.0, 0.4]), torch.tensor([True, False, False]))
            weight = torch.ones(3, 8) / 8
            weight[2, 5:] = 0.0
            weight[2, :5] = 1 / 5
            for _ in range(3):
                x = torch.randn(3, 8, *SPEC.in_shape, generator=g)
                y = torch.randint(0, 3, (3, 8), generator=g)
                nets.step(x, y, optimizer=optimizer, lr=torch.tensor([0.05, 0.01, 0.02]),
                          momentum=torch.tensor([0.9, 0.0, 0.5]), rates=rates, generator=g,
                          form=form, row_weight=weight)
            runs[form] = nets.tensors()
        for form in FORMS[1:]:
            for a, b in zip(runs["loop"], runs[form]):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        start = ConvNets(SPEC, 3, torch.Generator().manual_seed(3)).tensors()
        assert not torch.equal(runs["loop"][0], start[0])  # it trained
    finally:
        torch.set_default_dtype(torch.float32)
