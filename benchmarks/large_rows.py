"""Fashion-MNIST-shaped trials: speed, memory and how fast a stop is heard, where rows are many.

Synthetic rows of the real shape (60,000 x 784 uint8 pixels, 10 classes, a 10% hold-out
validation split: 54,000 training rows) and the TensorFlow article's MLP (784-200-100-60-10,
dropout 0.2 on the input and hidden layers, SGD lr 0.01, batch 32). Everything runs side by
side in one process, so the ratios are meaningful on a shared machine.

    python benchmarks/large_rows.py speed    # plain loop vs dropsweep (1, 4, 16 trials), FLOP bound
    python benchmarks/large_rows.py memory   # peak memory of 16 trials trained at once
    python benchmarks/large_rows.py stop     # seconds from a stop request to the batch returning
    python benchmarks/large_rows.py all
    python benchmarks/large_rows.py npz fashion-shaped.npz   # such data for `dropsweep search`

A training epoch is timed between two progress reports (the end of epoch 1 and of epoch 2),
so neither the set-up nor the evaluation is in it; the plain loop's epoch likewise.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from trial_speed import matmul_gflops, print_ratios, trial_flops  # noqa: E402

from dropsweep.families.mlp import kernel  # noqa: E402
from dropsweep.families.mlp import config as mlp_config  # noqa: E402
from dropsweep.families.mlp.engine import TrainSettings, train_trials  # noqa: E402
from dropsweep.data.protocols import Folds, make_holdout  # noqa: E402
from dropsweep.sweep.space import Config  # noqa: E402

HIDDEN = (200, 100, 60)
SIZES = [784, *HIDDEN, 10]
BATCH = 32


def fashion_like(rows: int = 60_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pixels with some class structure (so training is not pure noise), as uint8."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, rows)
    centres = rng.integers(0, 256, (10, 784))
    x = np.empty((rows, 784), dtype=np.uint8)
    for start in range(0, rows, 5000):  # in pieces: the float temporaries stay small
        part = slice(start, start + 5000)
        noise = rng.normal(0, 60, (len(y[part]), 784))
        x[part] = np.clip(centres[y[part]] + noise, 0, 255)
    return x, y.astype(np.int64)


def folds_of(rows: int) -> Folds:
    x, y = fashion_like(rows)
    return make_holdout(x, y, 0.1, seed=0, n_classes=10, scale="unit", pixel_max=255.0)


def article(n: int, seed: int = 0) -> list[Config]:
    """The article's configuration and ``n - 1`` others around it, as a sweep draws them."""
    rng = np.random.default_rng(seed)
    first = [mlp_config("both", 0.2, 0.2, 0.01, 0.0, None)]
    return (first + [mlp_config("both", float(rng.uniform(0.0, 0.5)),
                                float(rng.uniform(0.0, 0.7)), float(10 ** rng.uniform(-3, -1)),
                                float(rng.uniform(0.0, 0.9)), [None, 3.0][i % 2])
                     for i in range(1, n)])[:n]


def plain_epoch(folds: Folds) -> float:
    """Seconds for one epoch of the loop a user would write: one ``nn.Sequential`` with
    ``nn.Dropout(0.2)``, ``torch.optim.SGD``, index slicing of rows scaled once."""
    x = folds.rows[0][folds.train_idx[0]].to(torch.float32) / 255.0
    y = folds.labels[folds.train_idx[0]]
    layers: list[nn.Module] = [nn.Dropout(0.2)]
    for a, b in zip(SIZES[:-2], SIZES[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(0.2)]
    model = nn.Sequential(*layers, nn.Linear(SIZES[-2], SIZES[-1]))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def epoch() -> float:
        start = time.perf_counter()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), BATCH):
            rows = perm[i:i + BATCH]
            opt.zero_grad()
            loss_fn(model(x[rows]), y[rows]).backward()
            opt.step()
        return time.perf_counter() - start

    for i in range(0, 64 * BATCH, BATCH):  # warm up
        opt.zero_grad()
        loss_fn(model(x[i:i + BATCH]), y[i:i + BATCH]).backward()
        opt.step()
    return epoch()


def dropsweep_epoch(folds: Folds, trials: int, engine: str,
                    configs: list[Config] | None = None) -> float:
    """Seconds for one training epoch of ``trials`` trials batched (epoch 2, between the
    progress reports that end epochs 1 and 2)."""
    settings = TrainSettings(hidden=HIDDEN, epochs=2, batch_size=BATCH, eval_every=2,
                             engine=engine)
    ends: dict[int, float] = {}

    def on_progress(epochs: float) -> None:
        if epochs == int(epochs):
            ends[int(epochs)] = time.perf_counter()

    train_trials(configs or article(trials), folds, settings, seed=0, on_progress=on_progress)
    return ends[2] - ends[1]


def gemm_bound(folds: Folds, repeats: int = 200) -> float:
    """Seconds per epoch of the training matmuls alone at minibatch 32 (forward, weight and
    input gradients, no element-wise work): what 32-row products reach on this CPU."""
    ws = [torch.randn(a, b) for a, b in zip(SIZES[:-1], SIZES[1:])]
    acts = [torch.randn(BATCH, a) for a in SIZES]
    for _ in range(10):
        _gemms(ws, acts)
    start = time.perf_counter()
    for _ in range(repeats):
        _gemms(ws, acts)
    per_batch = (time.perf_counter() - start) / repeats
    return per_batch * int(folds.n_train[0]) / BATCH


def _gemms(ws: list[torch.Tensor], acts: list[torch.Tensor]) -> None:
    for l, w in enumerate(ws):
        acts[l] @ w  # forward
        acts[l].T @ acts[l + 1]  # weight gradient
        if l:
            acts[l + 1] @ w.T  # input gradient


def speed(args: argparse.Namespace) -> None:
    folds = folds_of(args.rows)
    n_train = int(folds.n_train[0])
    print(f"Fashion-MNIST-shaped trial: {n_train:,} training rows x 784, MLP "
          f"{'-'.join(map(str, SIZES))}, batch {BATCH}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); seconds per trial per training epoch")
    train_trials(article(1), folds, TrainSettings(hidden=HIDDEN, epochs=1, batch_size=BATCH),
                 0)  # build the kernel first
    rows = [("plain PyTorch loop, one model (baseline)", plain_epoch(folds))]
    for engine in ("c", "torch"):
        for b in (1, 4, 16):
            rows.append((f"dropsweep {engine}: {b} trial{'s' if b > 1 else ''} batched",
                         dropsweep_epoch(folds, b, engine) / b))
    plain_sgd = [mlp_config("none", 0.0, 0.0, 0.01, 0.0, None)] * 16
    rows.append(("dropsweep c: 16 batched, no dropout or max-norm",
                 dropsweep_epoch(folds, 16, "c", plain_sgd) / 16))
    momentum = [mlp_config("none", 0.0, 0.0, 0.01, 0.9, None)] * 16
    rows.append(("  the same with momentum 0.9",
                 dropsweep_epoch(folds, 16, "c", momentum) / 16))
    chosen = kernel.tile_choices()  # by timing, in the rows above
    for plan in kernel.tile_plans():  # each of the kernel's tile plans, forced
        kernel.use_tiles(plan)
        rows.append((f"dropsweep c: 16 trials batched, {plan} tiles",
                     dropsweep_epoch(folds, 16, "c") / 16))
    kernel.use_tiles(None)
    gflops = matmul_gflops()
    bound = trial_flops(n_train, 1, 1, SIZES) / (gflops * 1e9)
    gemm = gemm_bound(folds)
    print_ratios(rows, bound, unit="s/epoch", width=48, digits=2)
    print(f"\nFLOP bound: {trial_flops(n_train, 1, 1, SIZES) / 1e9:.1f} GFLOP per epoch at "
          f"{gflops:.0f} GFLOP/s (2048x2048 fp32 matmul here) = {bound:.3f} s")
    print(f"Profile: the same epoch's matmuls alone, as 32-row torch products: {gemm:.3f} s "
          f"({gemm / bound:.1f}x the FLOP bound): products of 32 rows reach "
          f"{bound / gemm * gflops:.0f} GFLOP/s, not {gflops:.0f}")
    print("Tile plans chosen (by timing, or remembered from an earlier run; layer sizes, "
          "minibatch, threads, 8-bit): "
          + (", ".join(f"{key}: {plan}" for key, plan in chosen.items()) or "none yet"))


def memory(args: argparse.Namespace) -> None:
    """Peak resident memory of a process that holds the data and trains 16 trials at once
    (one epoch), each engine in its own process so the peaks do not mix."""
    print(f"Peak memory, 16 Fashion-MNIST-shaped trials trained at once ({args.rows:,} rows "
          "of 784 uint8 pixels, 10% validation), one epoch:")
    for engine in ("c", "torch"):
        out = subprocess.run([sys.executable, __file__, "_memory", engine, str(args.rows)],
                             capture_output=True, text=True, check=True)
        print(f"  {engine:6} {out.stdout.strip()}")


def _memory_child(engine: str, rows: int) -> None:
    folds = folds_of(rows)
    held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    train_trials(article(16), folds, TrainSettings(hidden=HIDDEN, epochs=1, batch_size=BATCH,
                                                   engine=engine), 0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    data = (folds.rows.numel() * folds.rows.element_size()) / 2**30
    print(f"peak {peak:.2f} GiB for the whole process (before training, with torch loaded "
          f"and the data made: {held:.2f} GiB; the rows on the device: {data:.3f} GiB)")


def stop(args: argparse.Namespace) -> None:
    """A stop requested mid-epoch (as Ctrl-C sets it) is heard at the next slice."""
    folds = folds_of(args.rows)
    print("Seconds from a stop request (3 s into training) to the batch of 16 returning:")
    for engine in ("c", "torch"):
        flag = threading.Event()
        asked: list[float] = []

        def request() -> None:
            time.sleep(3.0)
            asked.append(time.perf_counter())
            flag.set()

        threading.Thread(target=request, daemon=True).start()
        settings = TrainSettings(hidden=HIDDEN, epochs=10_000, batch_size=BATCH, engine=engine)
        results = train_trials(article(16), folds, settings, 0, should_stop=flag.is_set)
        returned = time.perf_counter()
        assert asked and all(r.interrupted for r in results)
        print(f"  {engine:6} {returned - asked[0]:.3f} s")


def write_npz(path: str, seed: int = 1) -> None:
    """Fashion-MNIST's shape as an npz for ``data.npz``: 60,000 training and 10,000 test
    images of 28x28 uint8 pixels, 10 classes (synthetic: for timing, not for accuracy)."""
    x, y = fashion_like(70_000, seed)
    np.savez(path, x=x[:60_000].reshape(-1, 28, 28), y=y[:60_000],
             x_test=x[60_000:].reshape(-1, 28, 28), y_test=y[60_000:])
    print(f"wrote {path}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_memory":
        _memory_child(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "npz":
        write_npz(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("speed", "memory", "stop", "all"))
    parser.add_argument("--rows", type=int, default=60_000, help="rows before the split")
    args = parser.parse_args()
    for name, run in (("speed", speed), ("memory", memory), ("stop", stop)):
        if args.what in (name, "all"):
            run(args)
            print()


if __name__ == "__main__":
    main()
