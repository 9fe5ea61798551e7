"""The custom family's engine: every split of several trials, each its own copy of the
user's module, trained model by model (the reference path).

Model ``t*k + f`` is split ``f`` of trial ``t``: a deep copy of the one network ``build``
made under the run's seed (every model starts from the same weights, as a common random
number), its Dropout sites' ``p`` set from the trial's rates (0 where its placement does
not drop; a ``Dropout2d`` still drops whole channels), Keras's SGD or Adam on its own
parameter list (:mod:`dropsweep.families.optimizers`), max-norm on the chosen layers after
every step. Minibatch order is :func:`dropsweep.train.loop.epoch_order`'s, so the batched
engines of the other families and a hand-written loop replay it. ``model.train()`` for
steps and ``model.eval()`` for scores, so BatchNorm works here.

``form`` says how a batch computes: ``"loop"`` here, or ``"batched"``
(:mod:`dropsweep.families.custom.batched`: ``torch.func`` over the stacked module states).
:func:`choose_form` rules the batched form out where the module cannot be batched, and then
says why in one line; where both work, the batch takes the one measured faster here for this
module, data shape and number of models (:mod:`dropsweep.train.forms`); checkpoints record
the form they were made by, and a resumed batch keeps it.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dropsweep.train.checkpoints import Unusable, expect_made
from dropsweep.data.dataset import Dataset, scaling
from dropsweep.errors import DropsweepError, SweepError
from dropsweep.families.cnn.blocks import max_norm
from dropsweep.families.custom.model import dropout_rates
from dropsweep.families.custom import resolve
from dropsweep.families.custom.batched import BatchedEngine, unbatchable
from dropsweep.families.custom.section import input_shape_of
from dropsweep.families.custom.settings import Network, Settings
from dropsweep.families.optimizers import adam_step, sgd_step
from dropsweep.train.memory import BYTES_PER_FLOAT, FLOATS_PER_PARAMETER, GATHER_ROWS, Need
from dropsweep.data.protocols import Folds, one_split
from dropsweep.train import forms
from dropsweep.train.hooks import NO_HOOKS, TrainHooks, to_stderr
from dropsweep.train.loop import (
    TrialResult,
    chunked_scores,
    epoch_order,
    run_epochs,
)

if TYPE_CHECKING:
    from dropsweep.families.base import Sections

FORMS = ("loop", "batched")
ENGINES = ("auto", *FORMS)
# What the loop costs against the batched form where both work, as the fallback line says
# (benchmarks/custom_batched.py, one epoch side by side, two runs on a loaded 2-core CPU:
# 32 models of a small MLP 5.3x and 6.1x, of a small CNN 2.6x and 3.4x; 8 models 1.7-3.3x;
# one model alone the loop was 2.2-2.5x faster: which form a batch takes is timed).
LOOP_COST = "2.5-6x the batched form's time at 32 models of a small MLP or CNN"
EVAL_ROWS = 256  # rows per model one evaluation chunk scores


def resolve_network(sections: Sections, input_shape: tuple[int, ...], n_classes: int,
                    seed: int) -> Network:
    """Import, check that the code is the code the study recorded, build under ``seed``,
    find its sites: a mistake or a changed source is one line naming the key."""
    model = sections.model
    try:
        fn, sources = resolve.entry_point(model.module, model.base)
        recorded = dict(model.sources)
        if recorded and sources != recorded:
            changed = sorted(set(sources) ^ set(recorded) | {
                k for k in sources if k in recorded and sources[k] != recorded[k]})
            raise resolve.ModelError("model.module", f"the source of {', '.join(changed)} "
                                     "changed since the study recorded it (SHA-256 differs): "
                                     "restore it, or start a new study")
        net = resolve.build(fn, model.module, input_shape, n_classes, model.args, seed)
        resolve.check_parameters(net, model.module)
        sites = resolve.site_members(net, model.sites)
        constrained = resolve.constrained_layers(net, model.max_norm)
        sizes = resolve.check_output(net, model.module, input_shape, n_classes)
    except resolve.ModelError as exc:
        raise SweepError(str(exc), **sections.where(exc.key)) from None
    return Network(net, sites, constrained, tuple(input_shape), max(1, sum(sizes.values())))


@torch.no_grad()
def constrain(weight: torch.Tensor, c: float, axis: str) -> None:
    """Keras ``MaxNorm(c)`` on one model's weight, in place: the batched formula of
    :func:`dropsweep.families.cnn.blocks.max_norm` on a batch of one."""
    weight.copy_(max_norm(weight[None], c, axis)[0])


class CustomEngine:
    """Copies of the user's module still training and their hyperparameters, kept aligned
    (:class:`dropsweep.train.loop.Engine`)."""

    def __init__(self, configs: Sequence[Mapping[str, Any]], folds: Folds, network: Network,
                 settings: Settings, seed: int) -> None:
        if settings.form != "loop":
            raise ValueError(f"CustomEngine is the loop form, not {settings.form!r}")
        device, k, n = folds.rows.device, folds.k, len(configs)
        self.folds, self.settings, self.network = folds, settings, network
        self.bs, self.form = settings.batch_size, settings.form
        # Row order from one generator; dropout masks from torch's global generator (what
        # nn.Dropout draws from), seeded apart and kept here between minibatches.
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
            self.mask_state = torch.get_rng_state()
        self.trial_of = torch.arange(n, device=device).repeat_interleave(k)
        self.fold_of = torch.arange(k, device=device).repeat(n)
        groups = list(network.sites)
        self.models: list[nn.Module] = []
        self.hyper: list[dict[str, Any]] = []
        for c in configs:
            rates = dropout_rates(c, groups)
            for _ in range(k):
                model = copy.deepcopy(network.net).to(device)
                modules = dict(model.named_modules())
                for g, names in network.sites.items():
                    for name in names:
                        modules[name].p = rates[g]
                self.models.append(model)
                self.hyper.append({
                    "adam": c["optimizer"] == "adam", "lr": float(c["learning_rate"]),
                    "momentum": float(c["momentum"]) if c["optimizer"] == "sgd" else 0.0,
                    "max_norm": None if c["max_norm"] is None else float(c["max_norm"])})
        self.slots = [[(torch.zeros_like(p), torch.zeros_like(p)) for p in m.parameters()]
                      for m in self.models]
        self.steps = [0] * len(self.models)
        self._derive()

    def _derive(self) -> None:
        folds, bs = self.folds, self.bs
        self.n_train = folds.n_train[self.fold_of]
        self.n_batches = math.ceil(folds.max_train / bs)
        self.slice_batches = max(1, self.n_batches // 8)  # model by model: a few looks an epoch

    def keep(self, idx: torch.Tensor) -> None:
        chosen = [int(i) for i in idx.tolist()]
        self.models = [self.models[i] for i in chosen]
        self.hyper = [self.hyper[i] for i in chosen]
        self.slots = [self.slots[i] for i in chosen]
        self.steps = [self.steps[i] for i in chosen]
        self.trial_of, self.fold_of = self.trial_of[idx], self.fold_of[idx]
        self._derive()

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """One model's gathered rows ``[rows, features]`` as ``[rows, *input_shape]`` (images
        are stored height, width, channels: PyTorch wants channels first)."""
        shape = self.network.input_shape
        if len(shape) == 1:
            return x
        c, h, w = shape
        return x.view(x.shape[0], h, w, c).permute(0, 3, 1, 2).contiguous()

    # ------------------------------------------------------------------ an epoch

    def start_epoch(self) -> None:
        self.order = epoch_order(self.generator, self.n_train, self.folds.max_train)

    def train_batches(self, first: int, end: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.mask_state)
            for m, model in enumerate(self.models):
                n = int(self.n_train[m])
                for b in range(first, end):
                    count = min(self.bs, n - b * self.bs)
                    if count <= 0:  # its split has no rows left this epoch: no step (Keras)
                        break
                    positions = self.order[m:m + 1, b * self.bs:b * self.bs + count]
                    x, y = self.folds.gather(self.fold_of[m:m + 1], positions)
                    self._step(m, model, self.inputs(x[0]), y[0])
            self.mask_state = torch.get_rng_state()

    def _step(self, m: int, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, backward, Keras's update, max-norm: one minibatch of one model."""
        hyper, params = self.hyper[m], list(model.parameters())
        model.train()
        with torch.enable_grad():
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        self.steps[m] += 1
        for p, g, (s1, s2) in zip(params, grads, self.slots[m]):
            if g is None:
                continue
            if hyper["adam"]:
                adam_step(p.data, s1, s2, g, hyper["lr"], self.steps[m])
            else:
                sgd_step(p.data, s1, g, hyper["lr"], hyper["momentum"])
        if hyper["max_norm"] is not None:
            modules = dict(model.named_modules())
            for name in self.network.constrained:
                constrain(modules[name].weight.data, hyper["max_norm"],
                          self.settings.max_norm_axis)

    def end_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        bad = torch.zeros(len(self.models), dtype=torch.bool)
        nan = torch.zeros_like(bad)
        for m, model in enumerate(self.models):
            for t in model.state_dict().values():
                if t.is_floating_point():
                    bad[m] |= not bool(torch.isfinite(t).all())
                    nan[m] |= bool(torch.isnan(t).any())
        return bad.to(self.trial_of.device), nan.to(self.trial_of.device)

    def evaluate(self, held_out: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Accuracy and mean loss per model, in eval mode (no dropout; BatchNorm's running
        statistics)."""
        for model in self.models:
            model.eval()
        return chunked_scores(self.folds, self.fold_of, held_out, min(GATHER_ROWS, EVAL_ROWS),
                              self._scores)

    def _scores(self, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        right, losses = [], []
        for m, model in enumerate(self.models):
            logits = model(self.inputs(x[m]))
            ok = (logits.argmax(1) == y[m]) & valid[m]
            loss = F.cross_entropy(logits, y[m], reduction="none")
            right.append(ok.to(logits.dtype).sum())
            losses.append(torch.where(valid[m], loss, torch.zeros_like(loss)).sum())
        return torch.stack(right), torch.stack(losses)

    def trained(self, models: torch.Tensor) -> list[nn.Module]:
        return [self.models[int(i)] for i in models.tolist()]

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """Weights and buffers, optimizer slots and step counts, both generators, who is
        still in the batch: tensors, lists and numbers (a checkpoint loads weights-only)."""
        return {"family": "custom", "device": self.trial_of.device.type, "form": self.form,
                "weights": [[t.detach().cpu().clone() for t in m.state_dict().values()]
                            for m in self.models],
                "slots": [[t.cpu().clone() for pair in s for t in pair] for s in self.slots],
                "steps": list(self.steps), "hyper": [dict(h) for h in self.hyper],
                "generator": self.generator.get_state(), "masks": self.mask_state.clone(),
                "trial_of": self.trial_of.cpu().clone(), "fold_of": self.fold_of.cpu().clone()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state`; refused (:class:`Unusable`) from another device kind
        or form."""
        device = self.trial_of.device
        expect_made(state, "custom", device.type, self.form)
        try:
            trial_of, fold_of = state["trial_of"].to(device), state["fold_of"].to(device)
            keep = [int(t) * self.folds.k + int(f) for t, f in zip(trial_of, fold_of)]
            models = [self.models[i] for i in keep]
            for model, weights in zip(models, state["weights"], strict=True):
                sd = model.state_dict()
                model.load_state_dict(dict(zip(sd, (w.to(device) for w in weights),
                                               strict=True)))
            slots = []
            for model, flat in zip(models, state["slots"], strict=True):
                n = len(list(model.parameters()))
                if len(flat) != 2 * n:
                    raise ValueError("optimizer slots do not match the parameters")
                slots.append([(flat[2 * i].to(device), flat[2 * i + 1].to(device))
                              for i in range(n)])
            self.models, self.slots = models, slots
            self.hyper, self.steps = [dict(h) for h in state["hyper"]], list(state["steps"])
            self.trial_of, self.fold_of = trial_of, fold_of
            self.generator.set_state(state["generator"])
            self.mask_state = state["masks"].clone()
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise Unusable(f"it does not fit this batch ({exc})") from exc
        self._derive()


# (module, args, sources, input shape, classes, engine, device) -> (form, why not batched)
_DECIDED: dict[tuple[Any, ...], tuple[str, str | None]] = {}


def choose_form(network: Network, engine: str = "auto",
                device: torch.device | str = "cpu") -> tuple[str, str | None]:
    """``"batched"`` unless the module cannot be batched (or ``engine`` is ``"loop"``);
    then ``"loop"`` and, when batched was wanted, the one line that says why and its cost."""
    if engine not in ENGINES:
        raise ValueError(f"the custom engine must be one of {ENGINES}, got {engine!r}")
    if engine == "loop":
        return "loop", None
    why = unbatchable(network, torch.device(device))
    if why is None:
        return "batched", None
    return "loop", (f"the custom family trains model by model, not as one stacked batch: "
                    f"{why} (benchmarks/custom_batched.py: the loop took {LOOP_COST})")


def decide_form(sections: Sections, network: Network, n_classes: int, engine: str,
                device: torch.device, notice: Callable[[str], None] = to_stderr) -> str:
    """:func:`choose_form` once per sweep (module, arguments, source, data shape): the
    fallback line goes to ``notice`` (the search's notices) the first time only."""
    key = (sections.model.module, repr(sections.model.args), sections.model.sources,
           network.input_shape, n_classes, engine, device.type)
    if key not in _DECIDED:
        _DECIDED[key] = choose_form(network, engine, device)
        if _DECIDED[key][1]:
            notice(_DECIDED[key][1])
    return _DECIDED[key][0]


def make_engine(configs: Sequence[Mapping[str, Any]], folds: Folds, network: Network,
                settings: Settings, seed: int) -> CustomEngine | BatchedEngine:
    if settings.form == "batched":
        return BatchedEngine(configs, folds, network, settings, seed)
    return CustomEngine(configs, folds, network, settings, seed)


def settings_of(sections: Sections, form: str = "loop") -> Settings:
    return Settings(epochs=sections.train.epochs, batch_size=sections.train.batch_size,
                    eval_every=sections.train.eval_every,
                    max_norm_axis=sections.model.max_norm_axis, form=form)


def shape_of(folds: Folds) -> tuple[int, ...]:
    from dropsweep.families.common import in_shape

    return in_shape(folds.image_shape) or (int(folds.rows.shape[-1]),)


def train_trials(configs: Sequence[Mapping[str, Any]], folds: Folds, sections: Sections, seed: int,
                 hooks: TrainHooks = NO_HOOKS) -> list[TrialResult]:
    """Train every split of every configuration; one result per configuration."""
    batch = batch_engine(configs, folds, sections, seed, hooks)
    settings = batch.settings
    return run_epochs(batch, len(configs), settings.epochs, settings.eval_every,
                      hooks.on_checkpoint, hooks.should_stop, hooks.on_progress, hooks.save,
                      hooks.resume)


def batch_engine(configs: Sequence[Mapping[str, Any]], folds: Folds, sections: Sections, seed: int,
                 hooks: TrainHooks = NO_HOOKS) -> CustomEngine | BatchedEngine:
    """The engine :func:`train_trials` trains these configurations with, in the form it
    chooses (a resume checks a checkpoint against a fresh one)."""
    network = resolve_network(sections, shape_of(folds), folds.n_classes, seed)
    form = decide_form(sections, network, folds.n_classes, hooks.engine, folds.rows.device,
                       hooks.on_notice)
    if hooks.engine == "auto" and form == "batched":  # both forms work: the faster here
        form = forms.resumed(hooks.resume, FORMS) or forms.fastest(
            form_key(sections, network, folds, len(configs)), FORMS,
            lambda f: forms.engine_stepper(lambda: make_engine(
                configs, folds, network, settings_of(sections, f), seed)),
            folds.rows.device)
    return make_engine(configs, folds, network, settings_of(sections, form), seed)


def form_key(sections: Sections, network: Network, folds: Folds, configs: int) -> str:
    """What a measured choice of form holds for: the module and its arguments, the data's
    shape, the models trained at once, the minibatch, the machine."""
    m = sections.model
    return forms.cache_key("custom", {
        "module": m.module, "args": repr(m.args), "sources": m.sources,
        "input": network.input_shape, "classes": folds.n_classes,
        "models": configs * folds.k, "batch_size": sections.train.batch_size},
        folds.rows.device)


def train_on_all(sections: Sections, dataset: Dataset, config: Mapping[str, Any], seed: int,
                 device: torch.device) -> dict[str, Any]:
    """The configuration trained on every row: the state dict of the user's own module
    (``build(input_shape, n_classes, **args)`` makes the network it loads into), with the
    scaling, the input shape and the classes (``dropsweep export --model``)."""
    folds = one_split(dataset, device, score_on_test=False)
    shape = input_shape_of(dataset)
    network = resolve_network(sections, shape, dataset.n_classes, seed)
    settings = settings_of(sections, "loop")  # one model: the loop is the faster form
    batch = make_engine([config], folds, network, settings, seed)
    result = run_epochs(batch, 1, settings.epochs, settings.epochs)[0]  # no checkpoints
    if result.model is None:
        raise DropsweepError(f"training on all the data failed: {result.failure}")
    shift, divisor = scaling(dataset.X, dataset.scale, dataset.pixel_max)
    state = {k: v.detach().cpu().clone() for k, v in result.model[0].state_dict().items()}
    return {"state_dict": state, "mean": torch.tensor(shift, dtype=torch.float32),
            "scale": torch.tensor(divisor, dtype=torch.float32),
            "classes": list(dataset.classes), "input_shape": list(shape),
            "module": sections.model.module, "args": dict(sections.model.args),
            "train_accuracy": result.train_accuracy}


def need(sections: Sections, dataset: Dataset, models: int) -> Need:
    """Bytes one trial's ``models`` copies need: parameters with gradients, slots and
    copies; each minibatch's activations (about three floats per unit) and its rows. It
    resolves the user's code, so a mistake in it is named before anything is written."""
    network = resolve_network(sections, input_shape_of(dataset), dataset.n_classes, 0)
    params = sum(p.numel() for p in network.net.parameters())
    rows = sections.train.batch_size
    return Need(parameters=BYTES_PER_FLOAT * models * params * FLOATS_PER_PARAMETER,
                activations=BYTES_PER_FLOAT * models * rows * 3 * network.floats,
                inputs=BYTES_PER_FLOAT * models * rows * dataset.n_features,
                network_key="model.module")
