"""Conv-net trials per hour on a GPU: M models batched as one against a plain per-model loop.

CIFAR-10-shaped synthetic data (50,000 rows of 32x32x3 uint8 pixels, 10 classes) and the
Keras CIFAR-10 example's network (conv [64, 64], kernel 3, valid padding, max-pool 2,
dense [256], Adam, minibatch 250), two ways:

* batched: dropsweep's conv-net engine's path, ``ConvNets.step`` over M models at once
  (each its own minibatch), in the form the engine picks for this shape;
* loop: M plain ``nn.Sequential`` networks (``nn.Conv2d``/``nn.ReLU``/``nn.MaxPool2d``/
  ``nn.Flatten``/``nn.Linear``), each with its own ``torch.optim.Adam``, stepped one after
  the other: a speed baseline (not Keras's Adam to the last digit).

Each is timed over ``--steps`` minibatch steps after one warm-up step; trials per hour are
extrapolated from that to one epoch-equivalent per trial (rows / minibatch steps, training
only: no evaluation), a trial being one model here. One command, minutes on one GPU:

    python benchmarks/gpu_cnn.py                   # CUDA if present
    python benchmarks/gpu_cnn.py --device cuda:1 --steps 50

Without CUDA it runs a small CPU version (2,000 rows of 16x16x3, fewer steps) and says that
its figures are not GPU figures; ``--quick`` is the smallest version (the test runs it).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dropsweep

from dropsweep.families.cnn.engine import choose_form  # noqa: E402
from dropsweep.families.cnn.network import ConvNets, ConvSpec  # noqa: E402

MODELS = (1, 8, 32)


@dataclass(frozen=True)
class Size:
    """The problem timed: rows and image side of the data, the network, the minibatch."""

    name: str
    rows: int
    side: int
    conv: tuple[int, int]
    dense: int
    batch: int
    steps: int  # default --steps
    channels: int = 3
    padding: str = "valid"


GPU = Size("the GPU version: CIFAR-10's shape", 50_000, 32, (64, 64), 256, 250, 20)
CPU = Size("the small-size version", 2_000, 16, (64, 64), 256, 250, 2)
QUICK = Size("the quick version (--quick)", 250, 16, (4, 4), 16, 25, 1)
# sweeps/digits-cnn.yaml's network and minibatch on the digits' searched rows (--digits)
DIGITS = Size("the digits-cnn sweep's shape (--digits)", 1_437, 8, (16, 32), 64, 32, 20,
              channels=1, padding="same")


def plain_net(spec: ConvSpec) -> nn.Sequential:
    """The example's network as plain layers (channels first)."""
    c, layers = spec.in_shape[0], []
    pad = spec.kernel // 2 if spec.padding == "same" else 0
    for out in spec.conv:
        layers += [nn.Conv2d(c, out, spec.kernel, padding=pad), nn.ReLU(),
                   nn.MaxPool2d(spec.pool)]
        c = out
    layers += [nn.Flatten(), nn.Linear(spec.flat(), spec.dense[0]), nn.ReLU(),
               nn.Linear(spec.dense[0], spec.classes)]
    return nn.Sequential(*layers)


def minibatches(pixels: torch.Tensor, labels: torch.Tensor, models: int, batch: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each model's own random minibatch, gathered on the device and scaled to [0, 1]:
    ``[models, batch, C, H, W]`` and ``[models, batch]``."""
    idx = torch.randint(0, pixels.shape[0], (models, batch), generator=generator,
                        device=pixels.device)
    return pixels[idx].float().div_(255).permute(0, 1, 4, 2, 3), labels[idx]


def timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per step, after one warm-up step."""
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def batched_step(spec: ConvSpec, models: int, data: tuple[torch.Tensor, torch.Tensor],
                 batch: int, device: torch.device, form: str) -> Callable[[], None]:
    generator = torch.Generator(device=device).manual_seed(0)
    nets = ConvNets(spec, models, generator, device)
    lr = torch.full((models,), 1e-3, device=device)

    def step() -> None:
        x, y = minibatches(*data, models, batch, generator)
        nets.step(x, y, optimizer="adam", lr=lr, form=form)

    return step


def loop_step(spec: ConvSpec, models: int, data: tuple[torch.Tensor, torch.Tensor],
              batch: int, device: torch.device) -> Callable[[], None]:
    generator = torch.Generator(device=device).manual_seed(0)
    nets = [plain_net(spec).to(device) for _ in range(models)]
    optims = [torch.optim.Adam(net.parameters(), lr=1e-3) for net in nets]

    def step() -> None:
        x, y = minibatches(*data, models, batch, generator)
        for m, (net, optim) in enumerate(zip(nets, optims)):
            optim.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[m]), y[m]).backward()
            optim.step()

    return step


def per_hour(seconds_per_step: float, models: int, size: Size) -> float:
    """Trials (one model, one epoch-equivalent each) an hour at this step time."""
    epoch = size.rows / size.batch * seconds_per_step
    return models * 3600 / epoch


def run(size: Size, steps: int, device: torch.device, repeats: int = 3) -> None:
    spec = ConvSpec(in_shape=(size.channels, size.side, size.side), conv=size.conv,
                    dense=(size.dense,), padding=size.padding)
    draw = torch.Generator(device=device).manual_seed(0)
    data = (torch.randint(0, 256, (size.rows, size.side, size.side, size.channels),
                          dtype=torch.uint8, generator=draw, device=device),
            torch.randint(0, 10, (size.rows,), generator=draw, device=device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    chosen = choose_form(spec)
    print(f"{size.name}: {size.rows:,} rows of {size.side}x{size.side}x{size.channels}, conv "
          f"{list(size.conv)} ({size.padding}), dense [{size.dense}], Adam, minibatch "
          f"{size.batch}; on {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU thread(s); the engine's form here: {chosen}")
    print(f"timed: the best of {repeats} interleaved runs of {steps} minibatch step(s) after "
          "one warm-up; trials/hour extrapolated to "
          f"one epoch-equivalent ({size.rows / size.batch:g} steps) of one model per trial, "
          "training only")
    print(f"{'models':>6} {'loop s/step':>12} {'grouped s/step':>15} {'engine loop s/step':>19}"
          f" {'loop trials/h':>14} {'engine trials/h':>16}")
    ratios = []
    for models in MODELS:
        try:
            steppers = {"plain": loop_step(spec, models, data, size.batch, device),
                        **{form: batched_step(spec, models, data, size.batch, device, form)
                           for form in ("grouped", "loop")}}
            best = {name: math.inf for name in steppers}
            for _ in range(repeats):  # interleaved, the best of each: load elsewhere on a
                for name, step in steppers.items():  # shared machine only ever slows one
                    best[name] = min(best[name], timed(step, steps, device))
            loop, forms = best.pop("plain"), best
        except torch.OutOfMemoryError:
            print(f"{models:6d} out of memory on {device}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        print(f"{models:6d} {loop:12.4f} {forms['grouped']:15.4f} {forms['loop']:19.4f} "
              f"{per_hour(loop, models, size):14,.0f} "
              f"{per_hour(forms[chosen], models, size):16,.0f}")
        ratios.append((models, loop / forms["grouped"], loop / forms["loop"]))
    for models, grouped, own in ratios:
        print(f"ratio batched/loop at {models} models: {grouped if chosen == 'grouped' else own:.2f}x"
              f" trials per hour with the engine's form ({chosen}); grouped {grouped:.2f}x, "
              f"engine loop {own:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, help="timed minibatch steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs, best kept")
    parser.add_argument("--quick", action="store_true", help="the smallest version (seconds)")
    parser.add_argument("--digits", action="store_true",
                        help="sweeps/digits-cnn.yaml's network and minibatch, 8x8x1 images")
    args = parser.parse_args(argv)
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        from dropsweep.train.devices import resolve_device

        device = resolve_device(name)
    size = (QUICK if args.quick else DIGITS if args.digits else GPU if device.type == "cuda"
            else CPU)
    if device.type != "cuda" and not args.digits:
        print(f"no CUDA device used: this ran {size.name} on the CPU; its figures are not "
              "GPU figures")
    run(size, args.steps or size.steps, device, 1 if args.quick else args.repeats)


if __name__ == "__main__":
    main()
