"""The MLP's search space and model section: its dimensions (placement, the input and hidden
rates, the optimizer implicit at SGD, the learning rate, momentum, max-norm), what a
configuration's rates are as training applies them, and the ``model`` section. Apart from
the family (:mod:`dropsweep.families.mlp`), so its engine reads them without importing the
family that imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dropsweep.families.common import positive, rate
from dropsweep.sweep.space import Choices, Dimension, Fixed, Range, value_of

PLACEMENTS = ("none", "input", "hidden", "both")  # also the 1-SE order: simplest first
_INPUT = ("input", "both")
_HIDDEN = ("hidden", "both")
OPTIMIZERS = ("sgd", "adam")  # Brownlee's SGD first: the baseline's, and all that is searched
# unless a sweep lists adam


# implicit: an SGD-only study stores no optimizer, as before this dimension existed
OPTIMIZER = Dimension("optimizer", Fixed("sgd"), baseline="sgd", choices=OPTIMIZERS,
                      implicit=True, in_baseline=True, label="optimizer")

# The search space, one row per dimension, in the order they are sampled and shown.
DIMENSIONS = (
    Dimension("placement", Choices(PLACEMENTS), baseline="none", choices=PLACEMENTS,
              simplicity="order", label="placement"),
    # Srivastava et al.: input dropout ~0.2, hidden ~0.5
    Dimension("input_rate", Range(0.0, 0.5), baseline=0.0, rule=rate,
              when=("placement", _INPUT), unused=0.0, simplicity="sum", label="input rate"),
    Dimension("hidden_rate", Range(0.0, 0.7), baseline=0.0, rule=rate,
              when=("placement", _HIDDEN), unused=0.0, simplicity="sum", label="hidden rate"),
    OPTIMIZER,
    # Brownlee's baseline: lr 0.01, momentum 0.8; dropout wants larger rates and momentum
    Dimension("learning_rate", Range(1e-3, 0.3, log=True), baseline=0.01, rule=positive,
              log=True, in_baseline=True, label="learning rate"),
    # SGD only (unused: 0.0, as the conv nets')
    Dimension("momentum", Range(0.5, 0.99), baseline=0.8, rule=rate, in_baseline=True,
              when=("optimizer", ("sgd",)), unused=0.0, label="momentum"),
    # None: max-norm off unless the sweep turns it on (Srivastava et al.: c ~ 3-4)
    Dimension("max_norm", None, baseline=None, rule=positive, can_be_off=True,
              in_baseline=True, simplicity="off", label="max-norm"),
)


def optimizer_of(config: Mapping[str, Any]) -> str:
    """"sgd" or "adam" (a configuration stored before the optimizer existed is SGD)."""
    return str(value_of(OPTIMIZER, config))


def dropout_rates(config: Mapping[str, Any]) -> tuple[float, float]:
    """(input rate, hidden rate) as training applies them: 0 where the placement does not
    drop (whatever rate a hand-made configuration carries there)."""
    placement = config["placement"]
    return (float(config["input_rate"]) if placement in _INPUT else 0.0,
            float(config["hidden_rate"]) if placement in _HIDDEN else 0.0)


@dataclass(frozen=True)
class MLPModel:
    hidden: tuple[int, ...] = (60, 30)  # Brownlee's 60 -> 60 -> 30 -> 1
    family: str = "mlp"

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "hidden": list(self.hidden)}
