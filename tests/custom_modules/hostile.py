"""Modules a careless user might write that the start-up checks must catch (issue 24)."""

from __future__ import annotations

import math

import torch
from torch import nn


class Noisy(nn.Module):
    """Adds a little noise in every forward pass, evaluation included: vmap refuses a
    random operation outside a training step's randomness mode."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)
        self.drop = nn.Dropout(0.0)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc(self.drop(x + 0.01 * torch.randn_like(x)))


def noisy(input_shape, n_classes):
    return Noisy(math.prod(input_shape), n_classes)


class Fixed(nn.Module):
    """No parameters at all: a fixed projection of the first features, nothing to train."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.drop = nn.Dropout(0.0)

    def forward(self, x):
        return self.drop(x.flatten(1))[:, :self.classes]


def no_parameters(input_shape, n_classes):
    return Fixed(n_classes)


class PairsOnly(nn.Module):
    """Right for two rows, wrong for any other number: its output's rows are the batch's
    first two, whatever the batch."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)
        self.drop = nn.Dropout(0.0)

    def forward(self, x):
        return self.fc(self.drop(x.flatten(1)))[:2]


def pairs_only(input_shape, n_classes):
    return PairsOnly(math.prod(input_shape), n_classes)


def frozen(input_shape, n_classes):
    """A first layer frozen, as for pretrained features: a per-model step would fail on it,
    a stacked one would train it anyway."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.ReLU(),
                        nn.Dropout(0.0), nn.Linear(16, n_classes))
    net[1].weight.requires_grad_(False)
    return net


class TwoDropouts(nn.Module):
    """Dropout on the input and after the hidden layer, each with a rate of its own."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.drop_in = nn.Dropout(0.2)
        self.hidden = nn.Linear(features, 16)
        self.drop_hidden = nn.Dropout(0.5)
        self.out = nn.Linear(16, classes)

    def forward(self, x):
        return self.out(self.drop_hidden(self.hidden(self.drop_in(x.flatten(1))).relu()))


def two_dropouts(input_shape, n_classes):
    return TwoDropouts(math.prod(input_shape), n_classes)
