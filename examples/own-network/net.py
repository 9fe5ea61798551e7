"""Your own network, ready for dropsweep: a small residual conv net for 8x8 digit images.

dropsweep calls ``build(input_shape, n_classes, **args)`` (``args`` from the sweep file's
``model.args``) and sweeps the rate of every ``nn.Dropout``/``nn.Dropout2d`` in what it
returns. Name the dropout modules so that the sweep file can group them by pattern:

* ``drop_in``      on the input image (pixel dropout);
* ``blocks.*.drop`` a ``Dropout2d`` inside each residual block (whole feature maps);
* ``head.drop``    before the classifier (dense dropout).

The rates written here do not matter: dropsweep sets each site's rate per trial (0 where
the trial's placement does not drop there). Nothing else about the module is special: it is
plain PyTorch, and the weights ``dropsweep export --model`` writes load into ``build(...)``.
"""

from __future__ import annotations

from torch import nn


class Block(nn.Module):
    """conv-ReLU-conv with an identity shortcut, then channel dropout."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.drop = nn.Dropout2d(0.0)

    def forward(self, x):
        return self.drop((x + self.conv2(self.conv1(x).relu())).relu())


class Head(nn.Module):
    """Global average pooling, dense dropout, the classifier."""

    def __init__(self, channels: int, hidden: int, n_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, hidden)
        self.drop = nn.Dropout(0.0)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.out(self.drop(self.fc(x.mean(dim=(2, 3))).relu()))


class ResNet(nn.Module):
    def __init__(self, in_channels: int, n_classes: int, channels: int, blocks: int,
                 hidden: int) -> None:
        super().__init__()
        self.drop_in = nn.Dropout(0.0)
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(Block(channels) for _ in range(blocks))
        self.pool = nn.MaxPool2d(2)
        self.head = Head(channels, hidden, n_classes)

    def forward(self, x):
        x = self.stem(self.drop_in(x)).relu()
        for i, block in enumerate(self.blocks):
            x = block(x) if i != 1 else block(self.pool(x))  # halve the maps once
        return self.head(x)


def build(input_shape: tuple[int, ...], n_classes: int, channels: int = 16, blocks: int = 2,
          hidden: int = 32) -> nn.Module:
    """The network for images of ``input_shape`` = (channels, height, width)."""
    return ResNet(input_shape[0], n_classes, channels, blocks, hidden)
