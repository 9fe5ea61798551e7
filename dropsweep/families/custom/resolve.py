"""The user's code, resolved: the entry point imported, its source hashed, the module built
and its dropout sites and max-norm layers found by name.

Importing the module named by ``model.module`` runs its code (as ``python -c "import
mod"`` would); nothing else in a sweep file can. Every failure is a :class:`ModelError`
naming the sweep key at fault, which the caller turns into the one-line error of its
context (a sweep being validated, a stored study being trained).
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

# What counts as a dropout site by default and may be matched by a site pattern.
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
CONSTRAINED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class ModelError(Exception):
    """A mistake in the model section or the user's code, with the key that names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def is_file_entry(module: str) -> bool:
    """``path/to/file.py:build`` (a file) rather than ``pkg.mod:build`` (an import)."""
    return module.rsplit(":", 1)[0].endswith(".py") or "/" in module or "\\" in module


def file_of(module: str, base: str) -> Path:
    path = Path(module.rsplit(":", 1)[0]).expanduser()
    return path if path.is_absolute() else (Path(base) if base else Path.cwd()) / path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry_point(module: str, base: str) -> tuple[Callable[..., Any], dict[str, str]]:
    """The build function ``module`` names and the SHA-256 of its source file, keyed by the
    file's name as the sweep would show it (the path as written, or the module's file)."""
    where, _, attr = module.rpartition(":")
    if not where or not attr:
        raise ModelError("model.module", f"must be 'package.module:function' or "
                                         f"'path/to/file.py:function', got '{module}'")
    if is_file_entry(module):
        path = file_of(module, base)
        if not path.is_file():
            raise ModelError("model.module", f"no such file: {path}")
        name = "dropsweep_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        except (Exception, SystemExit) as exc:
            raise ModelError("model.module", f"importing {where} failed: "
                                             f"{_one_line(exc)}") from None
        sources = {where: sha256(path)}
    else:
        try:
            mod = importlib.import_module(where)
        except (Exception, SystemExit) as exc:
            raise ModelError("model.module", f"cannot import {where}: "
                                             f"{_one_line(exc)}") from None
        sources = {}
    fn = getattr(mod, attr, None)
    if fn is None:
        raise ModelError("model.module", f"{where} has no attribute '{attr}'")
    if not callable(fn):
        raise ModelError("model.module", f"{where}:{attr} is not callable (a "
                                         f"{type(fn).__name__})")
    if not sources:
        home = sys.modules.get(getattr(fn, "__module__", "") or "", mod)
        try:
            found = inspect.getsourcefile(home)
        except TypeError:
            found = None
        if found is None:
            raise ModelError("model.module", f"cannot find the source file of {where}, so "
                                             "the study could not record what it ran")
        sources = {f"{home.__name__}:{Path(found).name}": sha256(Path(found))}
    return fn, sources


def build(fn: Callable[..., Any], module: str, input_shape: tuple[int, ...], n_classes: int,
          args: Mapping[str, Any], seed: int | None = None) -> nn.Module:
    """``fn(input_shape, n_classes, **args)``, checked to be an ``nn.Module``; under
    ``seed`` its initial weights are the same every time (the global generator is
    restored after)."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            net = fn(tuple(input_shape), n_classes, **dict(args))
        except (Exception, SystemExit) as exc:
            raise ModelError("model.module", f"{module}{tuple(input_shape)!r}, {n_classes} "
                                             f"classes failed: {_one_line(exc)}") from None
    if not isinstance(net, nn.Module):
        raise ModelError("model.module", f"{module} must return an nn.Module, got "
                                         f"{type(net).__name__}")
    return net


def check_parameters(net: nn.Module, module: str) -> None:
    """A module must have something to train, and every parameter trains: the optimisers
    step them all (a frozen one would fail a per-model step and train in a stacked one)."""
    named = list(net.named_parameters())
    if not named:
        raise ModelError("model.module", f"the module {module} builds has no parameters to "
                                         "train")
    frozen = [n for n, p in named if not p.requires_grad]
    if frozen:
        raise ModelError("model.module", f"in the module {module} builds, {frozen[0]} does "
                                         "not require grad: dropsweep trains every parameter "
                                         "(leave frozen layers out of the module)")


def dropout_names(net: nn.Module) -> list[str]:
    return [n for n, m in net.named_modules() if n and isinstance(m, DROPOUTS)]


def default_sites(net: nn.Module, module: str) -> dict[str, str]:
    """One group per Dropout module, named by its path (``blocks.0.drop`` -> ``blocks_0_drop``;
    an ``nn.Sequential``'s ``4`` -> ``site_4``: a group name starts with a letter)."""
    names = dropout_names(net)
    if not names:
        raise ModelError("model.module", f"the module {module} builds has no dropout site "
                                         "(nn.Dropout, Dropout1d, Dropout2d or Dropout3d)")
    groups = {}
    for n in names:
        group = n.replace(".", "_")
        groups[group if group[:1].isalpha() else f"site_{group}"] = n
    return groups


def site_members(net: nn.Module, sites: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Each group's Dropout modules; a pattern matching none, or a module in two groups, is
    an error naming the group."""
    names = dropout_names(net)
    if not names:
        raise ModelError("model.module", "the module has no dropout site (nn.Dropout, "
                                         "Dropout1d, Dropout2d or Dropout3d)")
    members: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for group, pattern in sites:
        hit = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hit:
            raise ModelError(f"model.sites.{group}", f"'{pattern}' matches no Dropout module; "
                                                     f"the module has {', '.join(names)}")
        for n in hit:
            if n in owner:
                raise ModelError(f"model.sites.{group}", f"'{n}' is also in group "
                                                         f"'{owner[n]}': a site is in one group")
            owner[n] = group
        members[group] = hit
    return members


def unmatched(net: nn.Module, members: Mapping[str, Sequence[str]]
              ) -> tuple[tuple[str, float], ...]:
    """The Dropout modules in no group, each with the rate it keeps in every trial."""
    grouped = {n for names in members.values() for n in names}
    modules = dict(net.named_modules())
    return tuple((n, float(modules[n].p)) for n in dropout_names(net) if n not in grouped)


def constrained_layers(net: nn.Module, patterns: Sequence[str]) -> list[str]:
    """The Linear/Conv layers max-norm applies to; a pattern matching none is an error."""
    layers = [n for n, m in net.named_modules() if n and isinstance(m, CONSTRAINED)]
    chosen: list[str] = []
    for pattern in patterns:
        hit = [n for n in layers if fnmatch.fnmatchcase(n, pattern)]
        if not hit:
            raise ModelError("model.max_norm", f"'{pattern}' matches no Linear or Conv "
                                               f"layer; the module has "
                                               f"{', '.join(layers) or 'none'}")
        chosen += [n for n in hit if n not in chosen]
    return chosen


def check_output(net: nn.Module, module: str, input_shape: tuple[int, ...],
                 n_classes: int) -> dict[str, int]:
    """Run two, then three zero rows through ``net`` (eval mode, a copy): it must give
    logits ``[n, n_classes]`` for each (two sizes: an output that does not follow the batch
    would fail only in training). Returns each leaf module's output floats per row."""
    import copy

    probe = copy.deepcopy(net).eval()
    sizes: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                sizes[name] = out[0].numel()
        return record

    for name, m in probe.named_modules():
        if name and not list(m.children()):
            m.register_forward_hook(hook(name))
    for n in (2, 3):
        try:
            with torch.no_grad():
                out = probe(torch.zeros(n, *input_shape))
        except (Exception, SystemExit) as exc:
            raise ModelError("model.module", f"the module {module} builds fails on input "
                                             f"[n, {', '.join(map(str, input_shape))}]: "
                                             f"{_one_line(exc)}") from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, n_classes):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError("model.module", f"the module {module} builds must map [n, "
                                             f"{', '.join(map(str, input_shape))}] to logits "
                                             f"[n, {n_classes}], got {got} for n = {n}")
    return sizes
