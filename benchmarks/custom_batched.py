"""The custom family's two forms side by side (issue 15, item 2): the per-model loop and
the batched ``torch.func`` form, for M models of a small MLP and a small CNN on
digits-shaped data (8x8x1 pixels, 10 classes, synthetic), every model its own minibatch.

One timed run is one epoch of every form (the engines' own ``train_batches``, SGD with
momentum, dropout on); the forms alternate within a round and each keeps its best of the
rounds, so the machine's load hits them alike. Two batched variants: autograd on the
stacked leaves (the engine's), and ``torch.func.grad`` inside the vmap.
The ratios count on a shared machine, not the seconds.

    python benchmarks/custom_batched.py            # M = 1, 8, 32; 5 rounds
    python benchmarks/custom_batched.py --quick    # M = 1, 8; 1 round, fewer rows: seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dropsweep

from dropsweep.families.custom.batched import BatchedEngine  # noqa: E402
from dropsweep.families.custom.engine import CustomEngine, Network, Settings  # noqa: E402
from dropsweep.data.protocols import make_folds  # noqa: E402
from dropsweep.sweep.space import Config  # noqa: E402
from dropsweep.train import forms  # noqa: E402

from cnn_engines import scratch_cache  # noqa: E402  (a sibling script)


def mlp() -> tuple[nn.Module, dict[str, list[str]], tuple[int, ...]]:
    net = nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Dropout(), nn.Linear(64, 10))
    return net, {"input": ["1"], "hidden": ["4"]}, (1, 8, 8)


def cnn() -> tuple[nn.Module, dict[str, list[str]], tuple[int, ...]]:
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Dropout2d(), nn.Flatten(), nn.Linear(8 * 16, 32), nn.ReLU(),
                        nn.Dropout(), nn.Linear(32, 10))
    return net, {"maps": ["3"], "dense": ["7"]}, (1, 8, 8)


def engines(kind: str, models: int, rows: int, device: torch.device | str = "cpu"
            ) -> dict[str, object]:
    torch.manual_seed(0)
    net, sites, shape = {"mlp": mlp, "cnn": cnn}[kind]()
    rng = np.random.default_rng(0)
    X = rng.integers(0, 17, size=(rows, 64), dtype=np.uint8)
    y = np.arange(rows) % 10
    folds = make_folds(X, y, 2, seed=0, device=device, n_classes=10, scale="unit",
                       pixel_max=16.0, image_shape=(8, 8, 1))
    floats = 2 * 64 + 3 * 64 if kind == "mlp" else 3 * 8 * 64 + 64
    network = Network(net, sites, [], shape, floats)
    configs = [Config({"placement": "input+hidden" if kind == "mlp" else "maps+dense",
                       "input_rate": 0.2, "hidden_rate": 0.5, "maps_rate": 0.2,
                       "dense_rate": 0.5, "optimizer": "sgd", "learning_rate": 0.01,
                       "momentum": 0.9, "max_norm": None})] * ((models + 1) // 2)
    every = torch.arange(models)
    out: dict[str, object] = {}
    for name, make in (("loop", lambda: CustomEngine(configs, folds, network,
                                                     Settings(1, 32, 1), 0)),
                       ("autograd", lambda: BatchedEngine(configs, folds, network,
                                                          Settings(1, 32, 1, form="batched"),
                                                          0)),
                       ("func", lambda: BatchedEngine(
                           configs, folds, network, Settings(1, 32, 1, form="batched"), 0,
                           grads="func"))):
        engine = make()
        engine.keep(every)
        out[name] = engine
    return out


def chosen(kind: str, models: int, rows: int) -> str:
    """The form a batch of this module would take here: dropsweep.train.forms's timing of
    fresh engines (no cache: a scratch directory), as the custom family runs it."""
    made = {"loop": "loop", "batched": "autograd"}
    with scratch_cache():
        return forms.fastest(f"{kind} {models}", ("loop", "batched"), lambda form: (
            forms.engine_stepper(lambda: engines(kind, models, rows)[made[form]])),
            torch.device("cpu"))


def epoch_seconds(engine) -> float:
    started = time.perf_counter()
    engine.start_epoch()
    engine.train_batches(0, engine.n_batches)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: seconds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes, rounds, rows = ((1, 8), 1, 256) if args.quick else ((1, 8, 32), args.rounds, 1200)
    print(f"one epoch of {rows // 2} rows per model, batch 32, SGD with momentum, dropout on; "
          f"best of {rounds} interleaved rounds, {args.threads} thread(s)")
    print(f"{'net':<5}{'models':>7}{'loop s':>10}{'batched s':>11}{'grad s':>12}"
          f"{'loop/batched':>14}{'loop/grad':>15}  chosen (forms.fastest, timed afresh)")
    for kind in ("mlp", "cnn"):
        for m in sizes:
            forms = engines(kind, m, rows)
            for engine in forms.values():  # warm up: first calls trace and allocate
                epoch_seconds(engine)
            best = {name: float("inf") for name in forms}
            for _ in range(rounds):
                for name, engine in forms.items():
                    best[name] = min(best[name], epoch_seconds(engine))
            print(f"{kind:<5}{m:>4} models{best['loop']:>7.3f}{best['autograd']:>11.3f}"
                  f"{best['func']:>12.3f}{best['loop'] / best['autograd']:>13.2f}x"
                  f"{best['loop'] / best['func']:>14.2f}x  {chosen(kind, m, rows)}")


if __name__ == "__main__":
    main()
