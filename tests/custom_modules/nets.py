"""Small networks for tests/test_custom_family.py, built the way a user would write them."""

from __future__ import annotations

import math

from torch import nn


class MLP(nn.Module):
    """Dropout on the input and after the hidden layer."""

    def __init__(self, features: int, classes: int, hidden: int) -> None:
        super().__init__()
        self.drop_in = nn.Dropout(0.0)
        self.hidden = nn.Linear(features, hidden)
        self.drop_hidden = nn.Dropout(0.0)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.out(self.drop_hidden(self.hidden(self.drop_in(x)).relu()))


def mlp(input_shape, n_classes, hidden=16):
    return MLP(input_shape[0] if len(input_shape) == 1 else
               input_shape[0] * input_shape[1] * input_shape[2], n_classes, hidden)


class Flat(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.flatten(1))


def flat_mlp(input_shape, n_classes, hidden=16):
    return Flat(mlp(input_shape, n_classes, hidden))


def cnn(input_shape, n_classes, channels=4, bn=False):
    """A small conv net with channel dropout (Dropout2d) and a dense dropout."""
    c, h, w = input_shape
    layers = [nn.Conv2d(c, channels, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(channels))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Dropout2d(0.0), nn.Flatten(),
               nn.Linear(channels * (h // 2) * (w // 2), 16), nn.ReLU(), nn.Dropout(0.0),
               nn.Linear(16, n_classes)]
    return nn.Sequential(*layers)


def no_dropout(input_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes))


def not_a_module(input_shape, n_classes):
    return "a string"


def raises(input_shape, n_classes):
    raise ValueError("no network today")


def wrong_output(input_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.Dropout(), nn.LazyLinear(n_classes + 1))


NOT_CALLABLE = 3


class Residual(nn.Module):
    """A conv stem, one residual block with Dropout2d inside the branch, a dense head."""

    def __init__(self, channels: int, classes: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                    nn.Dropout2d(0.0), nn.Conv2d(width, width, 3, padding=1))
        self.drop = nn.Dropout(0.0)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = self.stem(x).relu()
        h = (h + self.branch(h)).relu()
        return self.head(self.drop(h.mean((2, 3))))


def residual(input_shape, n_classes, width=6):
    return Residual(input_shape[0], n_classes, width)


class Gated(nn.Module):
    """Dropout where a user might put it: on one of two parallel paths, before the sum."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.a = nn.Linear(features, 12)
        self.b = nn.Linear(features, 12)
        self.drop_a = nn.Dropout(0.0)
        self.out = nn.Linear(12, classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.out((self.drop_a(self.a(x).tanh()) + self.b(x)).relu())


def gated(input_shape, n_classes):
    return Gated(math.prod(input_shape), n_classes)


class Itemised(nn.Module):
    """Reads a number out of a tensor in forward: vmap refuses."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)
        self.drop = nn.Dropout(0.0)

    def forward(self, x):
        scale = 1.0 + 0.0 * x.abs().max().item()
        return self.fc(self.drop(x.flatten(1))) * scale


def itemised(input_shape, n_classes):
    return Itemised(math.prod(input_shape), n_classes)
