"""Many small conv nets trained at once: which batched form is fastest here (issue 14, item 5).

The Keras CIFAR-10 example's network (Conv2D 3x3 -> MaxPool 2 -> Conv2D 3x3 -> MaxPool 2 ->
Flatten -> Dense -> Dense 10, ReLU, valid padding), M copies each with its own minibatch,
one SGD step each (forward, backward, update), three ways:

* a plain loop: one ``nn.Sequential`` per model, one after the other (the reference);
* grouped convolutions: the M models' minibatches stacked along the channels, each conv one
  ``F.conv2d(..., groups=M)``, each dense layer one batched matrix product (``baddbmm``);
* ``torch.func``: the models' parameters stacked (``stack_module_state``) and one
  ``vmap(functional_call)`` over them.

Every candidate is first checked against the loop (same weights, same minibatches: the
updated weights agree to 1e-5), then timed side by side in one run; the ratios are what
count on this shared machine.

    python benchmarks/cnn_engines.py                 # 32x32x3 (CIFAR-10's shape), conv [64, 64]
    python benchmarks/cnn_engines.py --small         # 16x16x3, conv [16, 16]: seconds
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap


def keras_net(channels: int, size: int, conv: tuple[int, int], dense: int) -> nn.Sequential:
    """The example's network (PyTorch layout: channels first)."""
    after = ((size - 2) // 2 - 2) // 2  # two valid 3x3 convs, two 2x2 pools
    return nn.Sequential(
        nn.Conv2d(channels, conv[0], 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(conv[0], conv[1], 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(conv[1] * after * after, dense), nn.ReLU(), nn.Linear(dense, 10))


def loop_step(models: list[nn.Sequential], x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
    """x: [M, bs, C, H, W]: model m steps on x[m]."""
    for m, model in enumerate(models):
        model.zero_grad()
        F.cross_entropy(model(x[m]), y[m]).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad


class Grouped:
    """M copies of the network as one: conv weights [M*out, in, kh, kw] (groups = M),
    dense weights [M, in, out]."""

    def __init__(self, models: list[nn.Sequential]) -> None:
        convs = [[m[i] for m in models] for i in (0, 3)]
        denses = [[m[i] for m in models] for i in (7, 9)]
        self.M = len(models)
        self.conv_w = [torch.cat([c.weight.detach() for c in layer]).requires_grad_()
                       for layer in convs]
        self.conv_b = [torch.cat([c.bias.detach() for c in layer]).requires_grad_()
                       for layer in convs]
        self.dense_w = [torch.stack([d.weight.detach().T for d in layer]).requires_grad_()
                        for layer in denses]
        self.dense_b = [torch.stack([d.bias.detach()[None] for d in layer]).requires_grad_()
                        for layer in denses]

    def params(self) -> list[torch.Tensor]:
        return [*self.conv_w, *self.conv_b, *self.dense_w, *self.dense_b]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        M, bs = x.shape[:2]
        h = x.transpose(0, 1).reshape(bs, M * x.shape[2], *x.shape[3:])  # models as channels
        for w, b in zip(self.conv_w, self.conv_b):
            h = F.max_pool2d(F.relu(F.conv2d(h, w, b, groups=M)), 2)
        h = h.reshape(bs, M, -1).transpose(0, 1)  # [M, bs, features], channel-major
        h = F.relu(torch.baddbmm(self.dense_b[0], h, self.dense_w[0]))
        return torch.baddbmm(self.dense_b[1], h, self.dense_w[1])  # [M, bs, 10]

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        logits = self.forward(x)
        # each model's mean loss, summed: model m's gradient is its own loss's
        loss = F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1), reduction="sum") / y.shape[1]
        gs = torch.autograd.grad(loss, self.params())
        with torch.no_grad():
            for p, g in zip(self.params(), gs):
                p -= lr * g

    def as_models(self, like: nn.Sequential) -> list[nn.Sequential]:
        out = []
        for m in range(self.M):
            net = copy.deepcopy(like)
            with torch.no_grad():
                for i, (w, b) in zip((0, 3), zip(self.conv_w, self.conv_b)):
                    per = w.shape[0] // self.M
                    net[i].weight.copy_(w[m * per:(m + 1) * per])
                    net[i].bias.copy_(b[m * per:(m + 1) * per])
                for i, (w, b) in zip((7, 9), zip(self.dense_w, self.dense_b)):
                    net[i].weight.copy_(w[m].T)
                    net[i].bias.copy_(b[m, 0])
            out.append(net)
        return out


class Vmapped:
    """M copies as stacked parameters and one ``vmap`` of the functional network."""

    def __init__(self, models: list[nn.Sequential]) -> None:
        self.params, _ = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")

        def loss(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(functional_call(self.base, params, (x,)), y)

        self.grads = vmap(grad(loss), randomness="different")

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        gs = self.grads(self.params, x, y)
        with torch.no_grad():
            for name, g in gs.items():
                self.params[name] -= lr * g


def agree(reference: list[nn.Sequential], got: list[nn.Sequential]) -> float:
    return max(float((p - q).detach().abs().max()) for a, b in zip(reference, got)
               for p, q in zip(a.parameters(), b.parameters()))


def timed(step: Callable[[], None], repeats: int) -> float:
    step()  # warm up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="16x16 images, conv [16, 16]")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    size, conv, dense = (16, (16, 16), 64) if args.small else (32, (64, 64), 256)
    bs, lr = 32, 0.01
    torch.manual_seed(0)
    print(f"one SGD step of M conv nets ({size}x{size}x3, conv {list(conv)}, dense {dense}, "
          f"batch {bs} each), torch {torch.__version__}, {torch.get_num_threads()} thread(s)")

    # exactness: three steps from the same weights on the same minibatches
    M = 4
    models = [keras_net(3, size, conv, dense) for _ in range(M)]
    xs = [torch.randn(M, bs, 3, size, size) for _ in range(3)]
    ys = [torch.randint(0, 10, (M, bs)) for _ in range(3)]
    ref = copy.deepcopy(models)
    grouped, vm = Grouped(copy.deepcopy(models)), Vmapped(copy.deepcopy(models))
    for x, y in zip(xs, ys):
        loop_step(ref, x, y, lr)
        grouped.step(x, y, lr)
        vm.step(x, y, lr)
    unstacked = []
    for m in range(M):
        net = copy.deepcopy(models[0])
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(vm.params[name][m])
        unstacked.append(net)
    print(f"after 3 steps, largest difference from the loop: grouped "
          f"{agree(ref, grouped.as_models(models[0])):.1e}, vmap {agree(ref, unstacked):.1e}")

    print(f"\n{'M':>3} {'loop s/step':>12} {'grouped':>10} {'vmap':>10} "
          f"{'grouped vs loop':>16} {'vmap vs loop':>13}")
    for M in (1, 8, 32):
        models = [keras_net(3, size, conv, dense) for _ in range(M)]
        x, y = torch.randn(M, bs, 3, size, size), torch.randint(0, 10, (M, bs))
        loop = timed(lambda: loop_step(models, x, y, lr), args.repeats)
        g = Grouped(models)
        grouped_t = timed(lambda: g.step(x, y, lr), args.repeats)
        v = Vmapped(models)
        vmap_t = timed(lambda: v.step(x, y, lr), args.repeats)
        print(f"{M:3d} {loop:12.4f} {grouped_t:10.4f} {vmap_t:10.4f} {loop / grouped_t:15.2f}x "
              f"{loop / vmap_t:12.2f}x")


if __name__ == "__main__":
    main()
