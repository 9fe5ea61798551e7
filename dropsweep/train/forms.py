"""Which form of an engine trains a batch fastest here: measured, not assumed.

A conv net's models train one after another (``loop``) or as grouped convolutions
(``grouped``, ``patches``); a custom module's, model by model or stacked under
``torch.func`` (``batched``). Which is faster depends on the network, the minibatch, the
number of models, the device and its libraries: a fixed rule (work per row) chose the
slower form at some shapes here. So the
first batch of a shape times a few minibatch steps of each form, the forms taking turns, on
throwaway engines (their own weights and generators: the batch's results do not depend on
the timing's draws) and keeps the fastest; the choice is cached per shape, models, device,
torch and threads, in memory and in ``forms.json`` in dropsweep's cache, so later batches,
resumed ones and other processes on the machine take the same form without timing again;
a choice made among fewer forms than a batch now has (a form added since) is timed again.
As with cuDNN's benchmark mode, two machines may choose differently, and the forms' sums
differ in the last bits; a checkpoint records its form and a resumed batch keeps it
(:func:`resumed`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from dropsweep.data.fetch import cache_dir

CACHE_FILE = "forms.json"
ROUNDS = 3  # timed minibatch steps per form, taking turns after one warm-up; the best kept

# (cache file, key): what this process chose or read, and among which forms (None: unknown)
_MEMO: dict[tuple[Path, str], tuple[str, frozenset[str] | None]] = {}


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says: a cache in
    a home directory shared by machines of different CPUs keeps one choice for each."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(device: torch.device) -> dict[str, Any]:
    """What makes one machine's timing another's: the device, torch, the CPU threads."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": device.type, "device_name": name, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def cache_key(family: str, shape: Mapping[str, Any], device: torch.device) -> str:
    """One string for (family, shape, machine): the cache's key."""
    return json.dumps({"family": family, **shape, **machine_key(device)}, sort_keys=True,
                      default=str)


def _path() -> Path:
    return cache_dir() / CACHE_FILE


def _table(path: Path) -> dict[str, Any]:
    """The cache file's choices; none where there is no file yet or a damaged one (then
    the forms are timed again and the file rewritten whole)."""
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def cached(key: str, forms: Sequence[str] | None = None) -> str | None:
    """The form chosen before for ``key``, in this process or recorded in the cache file;
    given ``forms``, only a choice timed among all of them (none recorded before the file
    listed the forms it timed)."""
    path = _path()
    if (path, key) not in _MEMO:
        entry = _table(path).get(key)
        form = entry.get("form") if isinstance(entry, dict) else None
        if not isinstance(form, str):
            return None
        among = entry.get("timed")
        _MEMO[path, key] = form, (frozenset(among) if isinstance(among, list) else None)
    form, among = _MEMO[path, key]
    if forms is not None and (among is None or not among.issuperset(forms)):
        return None
    return form


def remember(key: str, form: str, seconds: Mapping[str, float]) -> None:
    """Record the choice and its timings; a cache that cannot be written only costs a
    timing in the next process (written whole or not at all)."""
    path = _path()
    _MEMO[path, key] = form, frozenset(seconds)
    table = _table(path)
    table[key] = {"form": form, "seconds_per_step": {
        f: round(s, 6) for f, s in seconds.items() if math.isfinite(s)},
        "timed": sorted(seconds)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".forms-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            json.dump(table, out, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def resumed(resume: Mapping[str, Any] | None, forms: Sequence[str]) -> str | None:
    """The form the engine state a batch resumes from (``TrainHooks.resume``) was made in,
    if it is one of ``forms``: a resumed batch keeps it, whatever a timing would say now."""
    made = (resume or {}).get("engine", {})
    form = made.get("form") if isinstance(made, Mapping) else None
    return form if form in forms else None


def timed(steps: Mapping[str, Callable[[], None]], device: torch.device, rounds: int = ROUNDS
          ) -> dict[str, float]:
    """Each form's best time for one call of its step (warmed up already), the forms taking
    turns round by round (load from elsewhere on a shared machine then slows every form
    alike, not the one that happened to run during it)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    best = {form: math.inf for form in steps}
    for _ in range(rounds):
        for form, step in steps.items():
            start = time.perf_counter()
            step()
            sync()
            best[form] = min(best[form], time.perf_counter() - start)
    return best


def fastest(key: str, forms: Sequence[str], stepper: Callable[[str], Callable[[], None]],
            device: torch.device, timer: Callable[..., dict[str, float]] = timed) -> str:
    """The form of ``forms`` whose steps ran fastest (``stepper(form)`` builds a throwaway
    engine in that form and returns one minibatch step of it), cached under ``key``. A form
    that runs out of memory or fails is out; if every one does, the first is used."""
    known = cached(key, forms)
    if known in forms:
        return known
    steps: dict[str, Callable[[], None]] = {}
    for form in forms:
        try:
            step = stepper(form)
            step()  # the warm-up; a form that cannot run here is out before the timing
            steps[form] = step
        except (RuntimeError, torch.OutOfMemoryError):
            if device.type == "cuda":
                torch.cuda.empty_cache()
    seconds = {form: math.inf for form in forms}
    if steps:
        try:
            seconds.update(timer(steps, device))
        except (RuntimeError, torch.OutOfMemoryError):
            pass
    del steps
    if device.type == "cuda":
        torch.cuda.empty_cache()
    best = min(forms, key=lambda f: seconds[f])
    remember(key, best, seconds)
    return best


def engine_stepper(make: Callable[[], Any]) -> Callable[[], None]:
    """One minibatch step, again and again, of a fresh engine (:class:`dropsweep.train.loop.
    Engine`) ``make()`` builds: the timing's weights and draws are its own."""
    engine = make()
    engine.start_epoch()
    position = itertools.count()

    def step() -> None:
        b = next(position) % max(1, engine.n_batches)
        engine.train_batches(b, b + 1)

    return step
