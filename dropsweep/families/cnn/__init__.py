"""The conv-net family: the Keras CIFAR-10 example's network, dropout at three sites.

``image -> [conv kxk, ReLU, max-pool] x blocks -> flatten -> [dense, ReLU] x hidden ->
dense (softmax)`` with Keras's defaults (He-uniform kernels, valid padding, 2x2 pooling).
Dropout goes on the ``input`` image, after each conv block's pooling (``conv``: units, or
whole feature maps where ``spatial``), and after each hidden dense layer (``dense``); the
``placement`` says which sites drop, and so which rates are sampled. Keras's SGD or Adam
(``momentum`` sampled for SGD only), and max-norm on the conv kernels and hidden dense
layers by Keras's axis or per filter (``model.max_norm_axis``).

Training runs on :mod:`.engine`, imported only when a batch trains: validating a sweep
imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from dropsweep.families.base import EngineFamily
from dropsweep.families.common import (MAX_NORM_AXES, TRAINING, dropout_words, rate,
                                       training_words, words)
from dropsweep.sweep.space import Choices, Config, Dimension, Range

if TYPE_CHECKING:
    from dropsweep.sweep.checks import Checker

# Where dropout goes; also the 1-SE order, simplest first (fewer sites, earlier sites).
PLACEMENTS = ("none", "input", "conv", "dense", "input+conv", "input+dense", "conv+dense",
              "all")
SITES = ("input", "conv", "dense")


def sites_of(placement: str) -> tuple[str, ...]:
    """The sites a placement drops at: ``all`` is every one, ``conv+dense`` two."""
    if placement == "all":
        return SITES
    return () if placement == "none" else tuple(placement.split("+"))


def _with(site: str) -> tuple[str, ...]:
    return tuple(p for p in PLACEMENTS if site in sites_of(p))


# The search space, one row per dimension, in the order they are sampled and shown.
DIMENSIONS = (
    Dimension("placement", Choices(PLACEMENTS), baseline="none", choices=PLACEMENTS,
              simplicity="order", label="placement"),
    # Srivastava et al.: input ~0.2, conv layers 0.1-0.5 growing with depth, dense 0.5;
    # the Keras example: 0.5 after each conv block
    Dimension("input_rate", Range(0.0, 0.5), baseline=0.0, rule=rate,
              when=("placement", _with("input")), unused=0.0, simplicity="sum",
              label="input rate"),
    Dimension("conv_rate", Range(0.0, 0.7), baseline=0.0, rule=rate,
              when=("placement", _with("conv")), unused=0.0, simplicity="sum",
              label="conv rate"),
    # whole feature maps (Keras noise_shape=(batch, 1, 1, channels); PyTorch Dropout2d)
    Dimension("spatial", Choices((False, True)), baseline=False, choices=(False, True),
              when=("placement", _with("conv")), unused=False, simplicity="order",
              label="spatial"),
    Dimension("dense_rate", Range(0.0, 0.7), baseline=0.0, rule=rate,
              when=("placement", _with("dense")), unused=0.0, simplicity="sum",
              label="dense rate"),
    *TRAINING,  # Adam or SGD, learning rate, momentum, max-norm: as the custom family's
)

INITS = ("he_uniform", "glorot_uniform")
PADDINGS = ("valid", "same")


@dataclass(frozen=True)
class CNNModel:
    """The ``model`` section: the Keras CIFAR-10 example's network by default."""

    conv: tuple[int, ...] = (64, 64)  # channels of each conv block
    kernel: int = 3
    pool: int = 2
    dense: tuple[int, ...] = (256,)  # hidden dense widths
    init: str = "he_uniform"  # the example's kernel_initializer
    padding: str = "valid"  # Keras's Conv2D default
    # Keras max_norm's default axis=0 (along each kernel column: what the example's code
    # does), or "filter" (axis=[0, 1, 2]: one norm per filter, Keras's docs' advice)
    max_norm_axis: str = "keras"
    family: str = "cnn"

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "conv": list(self.conv), "kernel": self.kernel,
                "pool": self.pool, "dense": list(self.dense), "init": self.init,
                "padding": self.padding, "max_norm_axis": self.max_norm_axis}


def dropout_rates(config: Mapping[str, Any]) -> tuple[float, float, float, bool]:
    """(input, conv, dense, spatial) as training applies them: 0 where the placement does
    not drop, whatever a hand-made configuration carries there."""
    sites = sites_of(str(config["placement"]))
    return (float(config["input_rate"]) if "input" in sites else 0.0,
            float(config["conv_rate"]) if "conv" in sites else 0.0,
            float(config["dense_rate"]) if "dense" in sites else 0.0,
            bool(config["spatial"]) and "conv" in sites)


def _widths(check: Checker, key: str, raw: Any, default: tuple[int, ...],
            allow_empty: bool) -> tuple[int, ...]:
    from dropsweep.sweep.checks import describe

    value = raw if raw is not None else list(default)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or (not value and not allow_empty):
        raise check.fail(key, f"must be a list of {'widths' if 'dense' in key else 'channels'}"
                              f", got {describe(value)}")
    return tuple(check.integer(f"{key}.{i}", w, 1) for i, w in enumerate(value))


class _CNN(EngineFamily):
    name = "cnn"
    engine = "dropsweep.families.cnn.engine"
    dimensions = DIMENSIONS
    group = "placement"
    baseline_words = "the no-dropout baseline"
    model_keys = ("conv", "kernel", "pool", "dense", "init", "padding", "max_norm_axis")

    def parse_model(self, check: Checker, raw: Mapping[str, Any]) -> CNNModel:
        d = CNNModel()
        model = CNNModel(
            conv=_widths(check, "model.conv", raw.get("conv"), d.conv, allow_empty=False),
            kernel=check.integer("model.kernel", raw.get("kernel", d.kernel), 1),
            pool=check.integer("model.pool", raw.get("pool", d.pool), 1),
            dense=_widths(check, "model.dense", raw.get("dense"), d.dense, allow_empty=True),
            init=check.string("model.init", raw.get("init", d.init), INITS),
            padding=check.string("model.padding", raw.get("padding", d.padding), PADDINGS),
            max_norm_axis=check.string("model.max_norm_axis",
                                       raw.get("max_norm_axis", d.max_norm_axis),
                                       MAX_NORM_AXES))
        if model.padding == "same" and model.kernel % 2 == 0:
            # Keras pads an even kernel unevenly (one more row after than before)
            raise check.fail("model.kernel", f"padding: same needs an odd kernel, got "
                                             f"{model.kernel}")
        return model

    def default_model(self) -> CNNModel:
        return CNNModel()

    def describe(self, config: Mapping[str, Any]) -> str:
        """"conv dropout 0.41 (spatial), dense 0.5, Adam lr 0.0003": the dropout, then the
        training (every conv-net trial's optimizer matters as much as its dropout)."""
        placement = str(config.get("placement", "none"))
        sites = sites_of(placement) if placement in PLACEMENTS else ()
        parts = []
        for site in sites:
            said = words(config.get(f"{site}_rate"))
            if site == "conv" and config.get("spatial"):
                said += " (spatial)"
            parts.append((site, said))
        return f"{dropout_words(parts)}, {training_words(config)}"


CNN = _CNN()


def config(placement: str = "none", input_rate: float = 0.0, conv_rate: float = 0.0,
           spatial: bool = False, dense_rate: float = 0.0, optimizer: str = "adam",
           learning_rate: float = 1e-3, momentum: float = 0.0,
           max_norm: float | None = None) -> Config:
    """One conv-net configuration, written out (tests and examples)."""
    return Config({"placement": placement, "input_rate": input_rate, "conv_rate": conv_rate,
                   "spatial": spatial, "dense_rate": dense_rate, "optimizer": optimizer,
                   "learning_rate": learning_rate, "momentum": momentum,
                   "max_norm": max_norm if max_norm is None else float(max_norm)})
