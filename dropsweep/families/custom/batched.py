"""The custom family's batched form: every model of a batch in one ``torch.func`` call.

The models' parameters and buffers are stacked (``torch.func.stack_module_state``), one
``vmap(functional_call)`` computes every model's loss on its own minibatch ``[models, rows,
...]`` and autograd their gradients on the stacked leaves; Keras's SGD/Adam (:func:`dropsweep.families.optimizers.step_models`)
and max-norm then update the stacked tensors in place. nn.Dropout's ``p`` is a Python
float, the same for every model under vmap, so the functional copy's sites are
:class:`RateDropout` modules whose rate is a (stacked, per-model) buffer; masks come from
``torch.rand`` under ``randomness="different"``, one draw per (example, channel) at a
``Dropout1d/2d/3d``, as the originals draw.

Splits may have different row counts: a minibatch is padded to the longest, its padding
rows weighted 0 in the loss (exact for modules whose rows do not mix) and a model with no
rows left does not step (as in Keras). :func:`unbatchable` says why a module cannot go this
way (BatchNorm's batch statistics would see the padding rows; anything vmap raises on);
the engine then trains model by model (:class:`dropsweep.families.custom.engine.CustomEngine`).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from dropsweep.train.checkpoints import Unusable, expect_made
from dropsweep.families.cnn.blocks import max_norm
from dropsweep.families.custom.model import dropout_rates
from dropsweep.families.custom.settings import Network, Settings
from dropsweep.families.optimizers import step_models
from dropsweep.train.memory import BYTES_PER_FLOAT, GATHER_ROWS
from dropsweep.data.protocols import Folds
from dropsweep.train.loop import batches_per_slice, chunked_scores, epoch_order, non_finite, per_model

SPATIAL = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
EVAL_BYTES = 256 * 2**20  # what one evaluation chunk's activations may take
# Autograd on the stacked leaves, or torch.func.grad inside the vmap: the first measured
# 1.1-1.8x faster at 1 to 32 models of a small MLP and at 1 to 8 of a small CNN, level (0.92-
# 1.04x) at 32 of the CNN (benchmarks/custom_batched.py, two runs).
GRADS = ("autograd", "func")


class RateDropout(nn.Module):
    """An inverted dropout whose rate is a buffer, so each model of a vmap has its own;
    ``spatial``: one draw per (example, channel), like Dropout1d/2d/3d."""

    def __init__(self, spatial: bool, rate: float = 0.0) -> None:
        super().__init__()
        self.spatial = spatial
        self.active = True  # False when no model drops here: no draws at all
        self.register_buffer("rate", torch.tensor(float(rate)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.active:
            return x
        keep = 1.0 - self.rate
        shape = (*x.shape[:2], *([1] * (x.dim() - 2))) if self.spatial else x.shape
        kept = torch.rand(shape, dtype=x.dtype, device=x.device) < keep
        return x * kept.to(x.dtype) / keep


def functional_copy(net: nn.Module, sites: Mapping[str, Sequence[str]]) -> nn.Module:
    """A copy of ``net`` whose Dropout sites are :class:`RateDropout` (rate 0)."""
    out = copy.deepcopy(net)
    for names in sites.values():
        for name in names:
            parent, _, last = name.rpartition(".")
            old = out.get_submodule(name)
            setattr(out.get_submodule(parent) if parent else out, last,
                    RateDropout(isinstance(old, SPATIAL)))
    return out


def _site_names(sites: Mapping[str, Sequence[str]]) -> list[str]:
    return [n for names in sites.values() for n in names]


def logits_of(base: nn.Module, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
    """Every model's logits on its own rows ``[models, rows, ...]``, as evaluation computes
    them: vmap's default randomness, so a random draw in ``forward`` is an error there."""
    def forward(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    return vmap(forward)(params, buffers, x)


def unbatchable(network: Network, device: torch.device) -> str | None:
    """Why this module cannot train as a stacked batch, in a few words; None when one small
    training step and one evaluation of two models on two rows under vmap work (a random
    draw in ``forward`` passes the first, whose dropout draws, and not the second)."""
    for name, module in network.net.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            return (f"{type(module).__name__} '{name}' updates running statistics from each "
                    "minibatch, which a padded stacked minibatch would skew")
    template = functional_copy(network.net, network.sites).to(device)
    params, buffers = stack_module_state([template, copy.deepcopy(template)])
    base = copy.deepcopy(template).to("meta").train()
    x = torch.rand(2, 2, *network.input_shape, device=device)
    y = torch.zeros(2, 2, dtype=torch.long, device=device)

    def loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    try:
        with torch.random.fork_rng(devices=[]):
            vmap(grad(loss), randomness="different")(params, buffers, x, y)
            with torch.no_grad():
                logits_of(base.eval(), params, buffers, x)
    except Exception as exc:  # whatever vmap refuses: .item(), data-dependent control flow
        first = (str(exc).strip().splitlines() or [""])[0]
        return (f"vmap raises {type(exc).__name__}: "
                f"{first if len(first) <= 140 else first[:140].rstrip() + '...'}")
    return None


class BatchedEngine:
    """Every model's parameters, buffers, optimizer slots and hyperparameters stacked
    along a leading ``models`` axis (:class:`dropsweep.train.loop.Engine`)."""

    def __init__(self, configs: Sequence[Mapping[str, Any]], folds: Folds, network: Network,
                 settings: Settings, seed: int, grads: str = "autograd") -> None:
        if grads not in GRADS:
            raise ValueError(f"grads must be one of {GRADS}, got {grads!r}")
        device, k = folds.rows.device, folds.k
        self.folds, self.settings, self.network = folds, settings, network
        self.bs, self.form, self.grads = settings.batch_size, "batched", grads
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
            self.mask_state = torch.get_rng_state()
        self.trial_of = torch.arange(len(configs), device=device).repeat_interleave(k)
        self.fold_of = torch.arange(k, device=device).repeat(len(configs))
        template = functional_copy(network.net, network.sites).to(device)
        copies, self.rates = [], []  # rates as floats too: what a trained module's p says
        for c in configs:
            rates = dropout_rates(c, list(network.sites))
            for _ in range(k):
                model = copy.deepcopy(template)
                for g, names in network.sites.items():
                    for name in names:
                        model.get_submodule(name).rate.fill_(rates[g])
                copies.append(model)
                self.rates.append(rates)
        params, buffers = stack_module_state(copies)
        self.params = {n: p.detach() for n, p in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(template).to("meta")
        self.sites = _site_names(network.sites)
        self.slots = {n: (torch.zeros_like(p), torch.zeros_like(p))
                      for n, p in self.params.items()}
        self.steps = torch.zeros(len(copies), dtype=torch.int64, device=device)
        self.lr = per_model([c["learning_rate"] for c in configs], k, device)
        self.adam = per_model([c["optimizer"] == "adam" for c in configs], k, device,
                              torch.bool)
        self.mom = per_model([c["momentum"] if c["optimizer"] == "sgd" else 0.0
                              for c in configs], k, device)
        self.c_max = per_model([math.inf if c["max_norm"] is None else c["max_norm"]
                                for c in configs], k, device)
        self._derive()

    # ------------------------------------------------------------------ the batch

    def _derive(self) -> None:
        """Everything that depends only on which models are in the batch."""
        folds, bs, device = self.folds, self.bs, self.trial_of.device
        self.n_train = folds.n_train[self.fold_of]
        self.n_batches = math.ceil(folds.max_train / bs)
        self.counts = (self.n_train[:, None]
                       - torch.arange(self.n_batches, device=device)[None] * bs).clamp(0, bs)
        for name in self.sites:  # a site no model drops at draws nothing
            self.base.get_submodule(name).active = bool((self.buffers[f"{name}.rate"] > 0).any())
        params = sum(math.prod(p.shape[1:]) for p in self.params.values())  # per model
        macs = 3.0 * self.size * bs * (params + self.network.floats)  # a rough forward+backward
        self.slice_batches = batches_per_slice(macs)

    @property
    def size(self) -> int:
        return int(self.trial_of.numel())

    def keep(self, idx: torch.Tensor) -> None:
        self.params = {n: p[idx] for n, p in self.params.items()}
        self.buffers = {n: b[idx] for n, b in self.buffers.items()}
        self.slots = {n: (s[0][idx], s[1][idx]) for n, s in self.slots.items()}
        self.rates = [self.rates[i] for i in idx.tolist()]
        for name in ("steps", "lr", "adam", "mom", "c_max", "trial_of", "fold_of"):
            setattr(self, name, getattr(self, name)[idx])
        self._derive()

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Gathered rows ``[models, rows, features]`` as ``[models, rows, *input_shape]``
        (images are stored height, width, channels: PyTorch wants channels first)."""
        shape = self.network.input_shape
        if len(shape) == 1:
            return x
        c, h, w = shape
        return x.view(*x.shape[:2], h, w, c).permute(0, 1, 4, 2, 3).contiguous()

    # ------------------------------------------------------------------ an epoch

    def start_epoch(self) -> None:
        self.order = epoch_order(self.generator, self.n_train, self.folds.max_train)

    def _loss(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor,
              weight: torch.Tensor) -> torch.Tensor:
        """One model's mean cross-entropy over its real rows (padding weighs 0)."""
        logits = functional_call(self.base, (params, buffers), (x,))
        return (F.cross_entropy(logits, y, reduction="none") * weight).sum()

    def _gradients(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        self.base.train()
        if self.grads == "func":
            return vmap(grad(self._loss), randomness="different")(
                self.params, self.buffers, x, y, weight)
        leaves = {n: p.detach().requires_grad_() for n, p in self.params.items()}
        with torch.enable_grad():
            losses = vmap(self._loss, randomness="different")(leaves, self.buffers, x, y, weight)
            got = torch.autograd.grad(losses.sum(), list(leaves.values()), allow_unused=True)
        return {n: torch.zeros_like(p) if g is None else g
                for (n, p), g in zip(self.params.items(), got)}

    def train_batches(self, first: int, end: int) -> None:
        bs, device = self.bs, self.trial_of.device
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.mask_state)
            for b in range(first, end):
                positions = self.order[:, b * bs:(b + 1) * bs]
                x, y = self.folds.gather(self.fold_of, positions)
                count = self.counts[:, b]
                real = torch.arange(positions.shape[1], device=device)[None] < count[:, None]
                weight = real.to(torch.float32) / count.clamp(min=1)[:, None]
                stepping = None if bool((count > 0).all()) else count > 0
                grads = self._gradients(self.inputs(x), y, weight)
                self.steps += 1 if stepping is None else stepping.to(self.steps.dtype)
                for n, p in self.params.items():
                    step_models(p, self.slots[n], grads[n], adam=self.adam, lr=self.lr,
                                momentum=self.mom, step=self.steps, stepping=stepping)
                self._constrain(stepping)
            self.mask_state = torch.get_rng_state()

    @torch.no_grad()
    def _constrain(self, stepping: torch.Tensor | None) -> None:
        """Max-norm on the chosen layers' stacked weights, for models that have a limit."""
        limited = torch.isfinite(self.c_max)  # inf: no max-norm
        if stepping is not None:
            limited = limited & stepping
        if not self.network.constrained or not bool(limited.any()):
            return
        c = torch.where(limited, self.c_max, torch.ones_like(self.c_max))
        for name in self.network.constrained:
            w = self.params[f"{name}.weight"]
            on = limited.view(-1, *([1] * (w.dim() - 1)))
            w.copy_(torch.where(on, max_norm(w, c, self.settings.max_norm_axis), w))

    def end_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return non_finite([*self.params.values(), *(
            b for n, b in self.buffers.items()
            if b.is_floating_point() and n.rpartition(".")[0] not in self.sites)])

    def evaluate(self, held_out: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Accuracy and mean loss per model in eval mode (no dropout), in chunks whose
        activations fit EVAL_BYTES."""
        fit = EVAL_BYTES // max(1, BYTES_PER_FLOAT * self.size * 2 * self.network.floats)
        rows = int(max(1, min(GATHER_ROWS, fit)))
        self.base.eval()
        return chunked_scores(self.folds, self.fold_of, held_out, rows, self._scores)

    def _scores(self, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits_of(self.base, self.params, self.buffers, self.inputs(x))
        right = (logits.argmax(2) == y) & valid
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                 reduction="none").view_as(y)
        return (right.to(logits.dtype).sum(1),
                torch.where(valid, losses, torch.zeros_like(losses)).sum(1))

    def trained(self, models: torch.Tensor) -> list[nn.Module]:
        """Each model as the user's own module (its sites' ``p`` its rates)."""
        out = []
        for i in models.tolist():
            model = copy.deepcopy(self.network.net).to(self.trial_of.device)
            for g, names in self.network.sites.items():
                for name in names:
                    model.get_submodule(name).p = self.rates[i][g]
            wanted = model.state_dict()
            model.load_state_dict({n: t[i] for n, t in {**self.params, **self.buffers}.items()
                                   if n in wanted}, strict=False)
            out.append(model)
        return out

    # ------------------------------------------------------------------ checkpoints

    _PER_MODEL = ("steps", "lr", "adam", "mom", "c_max", "trial_of", "fold_of")

    def state(self) -> dict[str, Any]:
        """The stacked tensors, slots, step counts, hyperparameters and both generators."""
        return {"family": "custom", "device": self.trial_of.device.type, "form": self.form,
                "params": {n: p.cpu().clone() for n, p in self.params.items()},
                "buffers": {n: b.cpu().clone() for n, b in self.buffers.items()},
                "slots": {n: [s.cpu().clone() for s in pair] for n, pair in self.slots.items()},
                **{name: getattr(self, name).cpu().clone() for name in self._PER_MODEL},
                "rates": [dict(r) for r in self.rates],
                "generator": self.generator.get_state(), "masks": self.mask_state.clone()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state`; refused (:class:`Unusable`) from another device kind
        or form."""
        device = self.trial_of.device
        expect_made(state, "custom", device.type, self.form)
        try:
            if set(state["params"]) != set(self.params) or set(state["buffers"]) != set(
                    self.buffers):
                raise ValueError("its tensors are not this module's")
            params = {n: state["params"][n].to(device) for n in self.params}
            buffers = {n: state["buffers"][n].to(device) for n in self.buffers}
            slots = {n: (state["slots"][n][0].to(device), state["slots"][n][1].to(device))
                     for n in self.params}
            for n, p in self.params.items():
                if params[n].shape[1:] != p.shape[1:]:
                    raise ValueError(f"{n} has shape {tuple(params[n].shape[1:])}")
            per_model = {name: state[name].to(device) for name in self._PER_MODEL}
            rates = [{g: float(r[g]) for g in self.network.sites} for r in state["rates"]]
            for name, t in per_model.items():
                setattr(self, name, t)
            self.params, self.buffers, self.slots, self.rates = params, buffers, slots, rates
            self.generator.set_state(state["generator"])
            self.mask_state = state["masks"].clone()
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise Unusable(f"it does not fit this batch ({exc})") from exc
        self._derive()
