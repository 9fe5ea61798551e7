"""Conv nets: dropsweep's engine in each form, and the form it chooses, against the plain loop
a user would write — three shapes at 1, 8 and 32 models, side by side in one run (issue 27).

Shapes (Keras's CIFAR-10 example's kind of network: conv 3x3 blocks with ReLU and 2x2
max-pooling, a hidden dense layer, 10 classes, Adam, each model its own minibatch):

* digits: ``sweeps/digits-cnn.yaml``'s network, 8x8x1, conv [16, 32] (same padding),
  dense 64, minibatch 32;
* 16x16x3: conv [64, 64], dense 256, minibatch 250 (``benchmarks/gpu_cnn.py``'s CPU size);
* 32x32x3 (CIFAR-10's): conv [64, 64], dense 256, minibatch 250.

For each: the plain loop (one ``nn.Sequential`` per model, each with ``torch.optim.Adam``,
stepped one after the other, fed the same minibatch tensors as the engine: channels-last
views of the pixels, which were measured faster for it than contiguous images), each of the
engine's forms (``loop``, ``grouped``, ``patches``: ``ConvNets.step``, Keras's Adam), and
the form :func:`dropsweep.train.forms.fastest` chooses, timed afresh (no cache) as a batch
does. Seconds per minibatch step are the best of ``--repeats`` interleaved runs of
``--steps`` steps (load elsewhere on a shared machine only ever slows a run); the ratios are
plain / engine: above 1 the engine trains more trials per hour.

    python benchmarks/cnn_engines.py                 # the table (minutes)
    python benchmarks/cnn_engines.py --quick         # tiny shapes, one step (the test runs it)
    python benchmarks/cnn_engines.py --device cuda   # on a GPU (benchmarks/gpu_all.py runs it)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dropsweep

from dropsweep.families.cnn.engine import form_key  # noqa: E402
from dropsweep.families.cnn.network import FORMS, ConvNets, ConvSpec  # noqa: E402
from dropsweep.train import forms  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    side: int
    channels: int
    conv: tuple[int, ...]
    dense: int
    batch: int
    padding: str = "valid"

    def spec(self) -> ConvSpec:
        return ConvSpec(in_shape=(self.channels, self.side, self.side), conv=self.conv,
                        dense=(self.dense,), padding=self.padding)


SHAPES = (Shape("digits 8x8x1", 8, 1, (16, 32), 64, 32, "same"),
          Shape("16x16x3", 16, 3, (64, 64), 256, 250),
          Shape("32x32x3", 32, 3, (64, 64), 256, 250))
QUICK = (Shape("quick 8x8x1", 8, 1, (4, 6), 12, 16, "same"),
         Shape("quick 12x12x3", 12, 3, (8, 8), 16, 16))
MODELS = (1, 8, 32)


def plain_net(spec: ConvSpec) -> nn.Sequential:
    """The network as a user writes it: plain layers, ReLU before pooling."""
    c, layers = spec.in_shape[0], []
    pad = spec.kernel // 2 if spec.padding == "same" else 0
    for out in spec.conv:
        layers += [nn.Conv2d(c, out, spec.kernel, padding=pad), nn.ReLU(),
                   nn.MaxPool2d(spec.pool)]
        c = out
    layers.append(nn.Flatten())
    width = spec.flat()
    for out in spec.dense:
        layers += [nn.Linear(width, out), nn.ReLU()]
        width = out
    layers.append(nn.Linear(width, spec.classes))
    return nn.Sequential(*layers)


def data_for(shape: Shape, models: int, device: torch.device, steps: int
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` minibatches per model, as the engine gathers them: uint8 pixels scaled to
    [0, 1] and viewed ``[models, rows, C, H, W]`` (channels-last memory)."""
    g = torch.Generator(device=device).manual_seed(0)
    out = []
    for _ in range(steps):
        pixels = torch.randint(0, 256, (models, shape.batch, shape.side, shape.side,
                                        shape.channels), dtype=torch.uint8, generator=g,
                               device=device)
        out.append((pixels.float().div_(255).permute(0, 1, 4, 2, 3),
                    torch.randint(0, 10, (models, shape.batch), generator=g, device=device)))
    return out


def plain_step(shape: Shape, models: int, device: torch.device
               ) -> Callable[[torch.Tensor, torch.Tensor], None]:
    nets = [plain_net(shape.spec()).to(device) for _ in range(models)]
    optims = [torch.optim.Adam(net.parameters(), lr=1e-3) for net in nets]

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        for m, (net, optim) in enumerate(zip(nets, optims)):
            optim.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[m]), y[m]).backward()
            optim.step()

    return step


def engine_step(shape: Shape, models: int, device: torch.device, form: str
                ) -> Callable[[torch.Tensor, torch.Tensor], None]:
    nets = ConvNets(shape.spec(), models, torch.Generator(device=device).manual_seed(0),
                    device)
    lr = torch.full((models,), 1e-3, device=device)
    return lambda x, y: nets.step(x, y, optimizer="adam", lr=lr, form=form)


def seconds(step: Callable[[torch.Tensor, torch.Tensor], None],
            data: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> float:
    """Seconds per step over ``data``, after one warm-up step."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step(*data[0])
    sync()
    start = time.perf_counter()
    for x, y in data:
        step(x, y)
    sync()
    return (time.perf_counter() - start) / len(data)


def chosen_form(shape: Shape, models: int, device: torch.device,
                data: list[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """What a batch of this shape would choose: forms.fastest, timed afresh."""
    def stepper(form: str) -> Callable[[], None]:
        step = engine_step(shape, models, device, form)
        return lambda: step(*data[0])

    return forms.fastest(form_key(shape.spec(), models, shape.batch, device), FORMS, stepper,
                         device)


def measure(shape: Shape, models: int, device: torch.device, steps: int, repeats: int
            ) -> dict[str, Any]:
    data = data_for(shape, models, device, steps)
    steppers = {"plain": plain_step(shape, models, device),
                **{form: engine_step(shape, models, device, form) for form in FORMS}}
    best = {name: math.inf for name in steppers}
    for _ in range(repeats):  # interleaved: load elsewhere slows one run, not one form
        for name, step in steppers.items():
            best[name] = min(best[name], seconds(step, data, device))
    chosen = chosen_form(shape, models, device, data)
    return {"shape": shape.name, "models": models, "seconds_per_step": best,
            "chosen": chosen, **{f"{form}_vs_plain": best["plain"] / best[form]
                                 for form in FORMS},
            "chosen_vs_plain": best["plain"] / best[chosen]}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"| shape | models | plain loop s/step | {' | '.join(FORMS)} | chosen | "
             f"{' | '.join(form + ' vs plain' for form in FORMS)} | chosen vs plain |",
             f"|---|---:|---:|{'---:|' * len(FORMS)}---|{'---:|' * len(FORMS)}---:|"]
    for r in rows:
        s = r["seconds_per_step"]
        times = " | ".join(f"{s[form]:.4f}" for form in FORMS)
        ratios = " | ".join(f"{r[form + '_vs_plain']:.2f}x" for form in FORMS)
        lines.append(f"| {r['shape']} | {r['models']} | {s['plain']:.4f} | {times} | "
                     f"{r['chosen']} | {ratios} | **{r['chosen_vs_plain']:.2f}x** |")
    return "\n".join(lines)


def run(shapes: tuple[Shape, ...], models: tuple[int, ...], device: torch.device, steps: int,
        repeats: int, out: Callable[[str], None] = print) -> list[dict[str, Any]]:
    out(f"conv nets on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); best of {repeats} "
        f"interleaved runs of {steps} step(s), Adam")
    rows = []
    with scratch_cache():
        for shape in shapes:
            for m in models:
                try:
                    rows.append(measure(shape, m, device, steps, repeats))
                except torch.OutOfMemoryError:
                    out(f"{shape.name} at {m} models: out of memory on {device}")
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                r = rows[-1]
                each = ", ".join(f"{form} {r[f'{form}_vs_plain']:.2f}x" for form in FORMS)
                out(f"{shape.name:>14} {m:3d} models: chosen {r['chosen']:7s} "
                    f"{r['chosen_vs_plain']:.2f}x the plain loop ({each})")
    out(table(rows))
    return rows


@contextmanager
def scratch_cache() -> Iterator[None]:
    """dropsweep's cache (forms.json among it) in a scratch directory for the duration: a
    benchmark times the forms afresh, and neither reads nor leaves a choice."""
    was = os.environ.get("DROPSWEEP_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DROPSWEEP_CACHE_DIR"] = cache
        try:
            yield
        finally:
            if was is None:
                os.environ.pop("DROPSWEEP_CACHE_DIR", None)
            else:
                os.environ["DROPSWEEP_CACHE_DIR"] = was


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs, best kept")
    parser.add_argument("--models", type=int, nargs="+", default=list(MODELS))
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 1 step, 1 run")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        rows = run(QUICK, (1, 4), device, 1, 1)
    else:
        rows = run(SHAPES, tuple(args.models), device, args.steps, args.repeats)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
