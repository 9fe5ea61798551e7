"""Every benchmark's GPU rows in one command, for a machine that has a GPU (issue 27, item 5).

On one CUDA device, side by side in one process (the ratios are what count):

1. the MLP engine (torch, the GPU's engine) at Sonar's shape — Brownlee's 60-60-30-1 net,
   10 folds, SGD, batch 16 — 16 trials batched, against the plain per-fold loop a user
   writes (one ``nn.Sequential`` and ``torch.optim.SGD`` per fold, on the GPU), s/trial;
2. the MLP engine at Fashion-MNIST's shape — 60,000 x 784 synthetic rows, the TensorFlow
   article's 784-200-100-60-10 net, batch 32 — 16 trials batched against the plain loop,
   one training epoch each (``benchmarks/large_rows.py``'s set-up);
3. the conv net at 32x32x3 (CIFAR-10's shape, conv [64, 64], dense 256, Adam, minibatch
   250) at 1, 8, 32 and 128 models: each form and the one chosen, against the plain loop
   (``benchmarks/cnn_engines.py``);
4. the custom family's two forms, a small MLP and CNN at 1, 8 and 32 models
   (``benchmarks/custom_batched.py``'s set-up), one epoch each.

It writes one JSON file (``--out``, default ``results/gpu_all.json``) and prints one table.
Sized to finish within about 8 minutes on one GPU (not measured here: the project's machine
has none). Without CUDA it prints one line and exits 0; ``--device cpu --quick`` runs every
part at toy sizes on the CPU (the test does), so the script is known to work before it
meets a GPU.

    python benchmarks/gpu_all.py                    # the first CUDA device
    python benchmarks/gpu_all.py --device cuda:1 --out gpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's dropsweep
sys.path.insert(0, str(ROOT / "benchmarks"))

import cnn_engines  # noqa: E402
import custom_batched  # noqa: E402
import large_rows  # noqa: E402
from trial_speed import sweep_like  # noqa: E402

from dropsweep.data.dataset import load_sonar  # noqa: E402
from dropsweep.data.protocols import Folds, make_folds, make_holdout  # noqa: E402
from dropsweep.families.mlp.engine import TrainSettings, train_trials  # noqa: E402

Row = dict[str, Any]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(run: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def plain_mlp_epochs(folds: Folds, sizes: list[int], batch: int, epochs: int, lr: float,
                     momentum: float, device: torch.device) -> None:
    """The loop a user writes: per split, one ``nn.Sequential`` and ``torch.optim.SGD``,
    minibatches by index from rows already on the device."""
    binary = sizes[-1] == 1
    for f in range(folds.k):
        n = int(folds.n_train[f])
        x, y = folds.gather(torch.tensor([f], device=device),
                            torch.arange(n, device=device)[None])
        x, y = x[0], y[0]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1])).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        for _ in range(epochs):
            perm = torch.randperm(len(x), device=device)
            for i in range(0, len(x), batch):
                rows = perm[i:i + batch]
                opt.zero_grad()
                out = model(x[rows])
                loss = (F.binary_cross_entropy_with_logits(out.squeeze(-1), y[rows].float())
                        if binary else F.cross_entropy(out, y[rows]))
                loss.backward()
                opt.step()


def mlp_sonar(device: torch.device, epochs: int, trials: int) -> Row:
    data = load_sonar()
    folds = make_folds(data.X, data.y, 10, 7, device=device)
    settings = TrainSettings(epochs=epochs, engine="torch")
    train_trials(sweep_like(1), folds, TrainSettings(epochs=1, engine="torch"), 0)  # warm up
    plain_mlp_epochs(folds, [60, 60, 30, 1], 16, 1, 0.01, 0.8, device)  # both
    plain = clock(lambda: plain_mlp_epochs(folds, [60, 60, 30, 1], 16, epochs, 0.01, 0.8,
                                           device), device)
    batched = clock(lambda: train_trials(sweep_like(trials), folds, settings, 0),
                    device) / trials
    return {"part": "mlp sonar", "what": f"{trials} trials batched, {epochs} epochs, s/trial",
            "plain": plain, "dropsweep": batched, "ratio": plain / batched}


def mlp_fashion(device: torch.device, rows: int, trials: int) -> Row:
    x, y = large_rows.fashion_like(rows)
    folds = make_holdout(x, y, 0.1, seed=0, device=device, n_classes=10, scale="unit",
                         pixel_max=255.0)
    sizes = large_rows.SIZES
    plain = clock(lambda: plain_mlp_epochs(folds, sizes, large_rows.BATCH, 1, 0.01, 0.0,
                                           device), device)
    settings = TrainSettings(hidden=large_rows.HIDDEN, epochs=1, batch_size=large_rows.BATCH,
                             eval_every=1, engine="torch")
    train_trials(large_rows.article(1), folds, settings, 0)  # warm up
    batched = clock(lambda: train_trials(large_rows.article(trials), folds, settings, 0),
                    device) / trials
    return {"part": "mlp fashion-shaped", "what": f"{trials} trials batched, 1 epoch of "
            f"{int(folds.n_train[0])} rows, s/trial", "plain": plain, "dropsweep": batched,
            "ratio": plain / batched}


def conv_nets(device: torch.device, shapes: tuple[cnn_engines.Shape, ...],
              models: tuple[int, ...], steps: int, repeats: int) -> list[Row]:
    rows = cnn_engines.run(shapes, models, device, steps, repeats, out=lambda line: None)
    return [{"part": f"cnn {r['shape']}", "what": f"{r['models']} models, chosen "
             f"{r['chosen']}, s/step", "plain": r["seconds_per_step"]["plain"],
             "dropsweep": r["seconds_per_step"][r["chosen"]], "ratio": r["chosen_vs_plain"],
             "forms": r["seconds_per_step"]} for r in rows]


def custom_forms(device: torch.device, models: tuple[int, ...], rows: int) -> list[Row]:
    out = []
    for kind in ("mlp", "cnn"):
        for m in models:
            engines = custom_batched.engines(kind, m, rows, device)
            for engine in engines.values():  # warm up
                custom_batched.epoch_seconds(engine)
            best = {name: min(clock(lambda e=e: custom_batched.epoch_seconds(e), device)
                              for _ in range(2)) for name, e in engines.items()}
            out.append({"part": f"custom {kind}", "what": f"{m} models, one epoch, s: the "
                        "engine's loop form (as plain) against its batched form",
                        "plain": best["loop"], "dropsweep": best["autograd"],
                        "ratio": best["loop"] / best["autograd"], "forms": best})
    return out


def table(rows: list[Row]) -> str:
    lines = ["| part | what | plain loop | dropsweep | ratio |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['part']} | {r['what']} | {r['plain']:.4f} | {r['dropsweep']:.4f} "
                     f"| {r['ratio']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a check)")
    parser.add_argument("--quick", action="store_true", help="toy sizes (seconds)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_all.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_all.py: no CUDA device here, nothing measured (it runs on a machine with a "
              "GPU; --device cpu --quick checks it on the CPU)")
        return 0
    quick = args.quick
    started = time.perf_counter()
    parts: list[Callable[[], list[Row]]] = [
        lambda: [mlp_sonar(device, 3 if quick else 300, 4 if quick else 16)],
        lambda: [mlp_fashion(device, 2_000 if quick else 60_000, 4 if quick else 16)],
        lambda: conv_nets(device, cnn_engines.QUICK[1:] if quick else cnn_engines.SHAPES[2:],
                          (1, 4) if quick else (1, 8, 32, 128), 1 if quick else 5,
                          1 if quick else 2),
        lambda: custom_forms(device, (1, 4) if quick else (1, 8, 32), 128 if quick else 1200),
    ]
    rows: list[Row] = []
    for part in parts:
        try:
            rows += part()
        except torch.OutOfMemoryError as exc:
            print(f"out of memory on {device}: {exc}".splitlines()[0])
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    result = {"device": str(device), "device_name": name, "torch": torch.__version__,
              "quick": quick, "seconds": round(time.perf_counter() - started, 1),
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print(f"on {device} ({name}), torch {torch.__version__}, "
          f"{result['seconds']:.0f} s; ratio: plain loop time / dropsweep's time")
    print(table(rows))
    print(f"written: {args.out}")
    return 0 if all(math.isfinite(r["ratio"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
