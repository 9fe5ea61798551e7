"""The MLP family: Brownlee's Sonar network, dropout on the input and/or hidden layers.

``features -> hidden... -> outputs`` with ReLU, Keras ``Dense`` defaults, SGD with momentum
(or Keras's Adam, where a sweep asks) and an optional max-norm constraint on the hidden
layers. Its dimensions are the six of the original experiment plus ``optimizer``, implicit
at SGD (studies stored before it read the same); ``placement`` says where dropout goes and
so which rates are sampled. Training runs on the batched engine of :mod:`.engine` (the C
kernel where it applies: SGD only; batched torch elsewhere), imported only when a batch
trains: validating a sweep imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from dropsweep.families.base import Family, Sections
from dropsweep.families.common import rate, words
from dropsweep.train.hooks import NO_HOOKS, TrainHooks
from dropsweep.sweep.space import Config, value_of

if TYPE_CHECKING:
    import torch

    from dropsweep.sweep.checks import Checker
    from dropsweep.data.dataset import Dataset
    from dropsweep.train.memory import Need
    from dropsweep.data.protocols import Folds
    from dropsweep.train.loop import TrialResult

from dropsweep.families.mlp.dimensions import (DIMENSIONS, PLACEMENTS,  # noqa: F401 (tests)
                                              MLPModel, optimizer_of)


class _MLP(Family):
    name = "mlp"
    dimensions = DIMENSIONS
    group = "placement"
    baseline_words = "the no-dropout baseline"
    model_keys = ("hidden",)

    def parse_model(self, check: Checker, raw: Mapping[str, Any]) -> MLPModel:
        from dropsweep.sweep.checks import describe

        hidden = raw.get("hidden", list(MLPModel.hidden))
        if isinstance(hidden, int) and not isinstance(hidden, bool):
            hidden = [hidden]
        if not isinstance(hidden, list) or not hidden:
            raise check.fail("model.hidden",
                             f"must be a list of layer widths, got {describe(hidden)}")
        return MLPModel(tuple(check.integer(f"model.hidden.{i}", w, 1)
                              for i, w in enumerate(hidden)))

    def default_model(self) -> MLPModel:
        return MLPModel()

    def describe(self, config: Mapping[str, Any]) -> str:
        """"hidden dropout 0.5"; with Adam, as the conv nets say it: "hidden dropout 0.5,
        Adam lr 0.001" (SGD, Brownlee's, goes unsaid as it always has)."""
        placement = str(config.get("placement", "none"))
        rates = [config.get(d.name) for d in DIMENSIONS
                 if d.when is not None and d.when[0] == "placement" and placement in d.when[1]]
        dropout = (f"{placement} dropout {' / '.join(words(r) for r in rates)}" if rates
                   else "no dropout")
        if optimizer_of(config) == "adam":
            dropout += f", Adam lr {words(config.get('learning_rate'))}"
        return dropout

    def describe_against(self, config: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
        """As every family's, without repeating what :meth:`describe` said (Adam, its lr) or
        naming a setting the configuration does not use (momentum under Adam)."""
        said = ("optimizer", "learning_rate") if optimizer_of(config) == "adam" else ()
        differs = [f"{d.label} {words(value_of(d, config))}" for d in self.dimensions
                   if d.in_baseline and d.name not in said and d.used(config)
                   and value_of(d, config) != value_of(d, reference)]
        return self.describe(config) + (f" with {', '.join(differs)}" if differs else "")

    def batch_key(self, config: Mapping[str, Any]) -> Any:
        return optimizer_of(config)

    def notice(self, device: torch.device) -> str | None:
        """Why the fast CPU kernel is not used, and what it costs (or what was wrong with
        its cache), for a run that trains on the CPU; read before anything is written."""
        from dropsweep.families.mlp import kernel

        return kernel.notice() if device.type == "cpu" else None

    def train(self, configs: Sequence[Config], folds: Folds, sections: Sections, seed: int,
              hooks: TrainHooks = NO_HOOKS) -> list[TrialResult]:
        from dataclasses import replace

        from dropsweep.families.mlp.engine import TrainSettings, train_trials

        settings = replace(TrainSettings.of(sections), engine=hooks.engine)
        return train_trials(configs, folds, settings, seed, on_checkpoint=hooks.on_checkpoint,
                            should_stop=hooks.should_stop, on_progress=hooks.on_progress,
                            save=hooks.save, resume=hooks.resume)

    def check_resume(self, configs: Sequence[Config], folds: Folds, sections: Sections, seed: int,
                     hooks: TrainHooks) -> None:
        from dataclasses import replace

        from dropsweep.families.mlp.engine import MLPEngine, TrainSettings
        from dropsweep.train.loop import check_resume

        settings = replace(TrainSettings.of(sections), engine=hooks.engine)
        check_resume(hooks.resume, len(configs), folds.k, sections.train.epochs,
                     lambda: MLPEngine(configs, folds, settings, seed))

    def train_on_all(self, sections: Sections, dataset: Dataset, config: Config, seed: int,
                     device: torch.device) -> dict[str, Any]:
        from dropsweep.families.mlp.engine import train_on_all

        return train_on_all(sections, dataset, config, seed, device)

    def need(self, sections: Sections, dataset: Dataset, models: int) -> Need:
        from dropsweep.train import memory
        from dropsweep.families.mlp.network import layer_sizes

        from dropsweep.sweep.space import values_of

        sizes = layer_sizes(dataset.n_features, sections.model.hidden, dataset.n_classes)
        searched = values_of(sections.searched.get("optimizer"))
        adam = "adam" in searched or optimizer_of(sections.baseline) == "adam"
        # Adam keeps a second slot per parameter beside the first (SGD's velocity)
        return memory.trial_need(sizes, models, len(dataset.y),
                                 floats=memory.FLOATS_PER_PARAMETER + int(adam))


MLP = _MLP()


def config(placement: str = "none", input_rate: float = 0.0, hidden_rate: float = 0.0,
           learning_rate: float = 0.01, momentum: float = 0.8,
           max_norm: float | None = None, optimizer: str = "sgd") -> Config:
    """One MLP configuration, written out (tests and examples); SGD's is stored without
    its optimizer (implicit), Adam's with it and momentum unused (0.0)."""
    items = {"placement": placement, "input_rate": input_rate, "hidden_rate": hidden_rate,
             "optimizer": optimizer, "learning_rate": learning_rate,
             "momentum": momentum if optimizer == "sgd" else 0.0, "max_norm": max_norm}
    if optimizer == "sgd":
        del items["optimizer"]
    return Config(items)
