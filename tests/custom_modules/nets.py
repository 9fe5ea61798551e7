"""Small networks for tests/test_custom_family.py, built the way a user would write them."""

from __future__ import annotations

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
