"""What the families share: the training dimensions, the rate rules, the image shape, and
configurations in words.

The conv nets and the custom family train alike (Keras's Adam or SGD, a log learning rate,
momentum for SGD only, max-norm off unless the sweep turns it on, on Keras's axis or per
filter), so their tables share those rows; every family says its configurations in the same
words. Nothing here imports torch: validating a sweep must not wait for it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from dropsweep.sweep.space import Choices, Dimension, Range


def rate(v: float) -> str | None:
    """A dropout rate's (or momentum's) rule: in [0, 1)."""
    return None if 0.0 <= v < 1.0 else f"must be in [0, 1), got {v:g}"


def positive(v: float) -> str | None:
    return None if v > 0.0 else f"must be > 0, got {v:g}"


OPTIMIZERS = ("adam", "sgd")  # the Keras example's Adam first: the baseline's

# How a conv net or the user's network trains: Adam (the baseline) or SGD, a log learning
# rate, momentum for SGD only, max-norm off unless the sweep turns it on.
TRAINING = (
    Dimension("optimizer", Choices(OPTIMIZERS), baseline="adam", choices=OPTIMIZERS,
              in_baseline=True, label="optimizer"),
    # Keras Adam's default 1e-3; SGD wants more
    Dimension("learning_rate", Range(1e-4, 0.1, log=True), baseline=1e-3, rule=positive,
              log=True, in_baseline=True, label="learning rate"),
    # SGD only; Keras's SGD default is no momentum
    Dimension("momentum", Range(0.0, 0.99), baseline=0.0, rule=rate,
              when=("optimizer", ("sgd",)), unused=0.0, in_baseline=True, label="momentum"),
    # None: off unless the sweep turns it on (the Keras example: max_norm(2.0))
    Dimension("max_norm", None, baseline=None, rule=positive, can_be_off=True,
              in_baseline=True, simplicity="off", label="max-norm"),
)

# Keras max_norm's default axis=0 (along each kernel column), or "filter" (axis=[0, 1, 2]:
# one norm per filter, Keras's docs' advice)
MAX_NORM_AXES = ("keras", "filter")


def in_shape(shape: tuple[int, ...] | None) -> tuple[int, int, int] | None:
    """(channels, height, width) of images stored ``(height, width[, channels])``; None
    for a table."""
    if shape is None or len(shape) not in (2, 3):
        return None
    return (1, *shape) if len(shape) == 2 else (shape[2], shape[0], shape[1])


# ----------------------------------------------------------------------------- in words


def words(value: Any) -> str:
    """A dimension's value as a report says it: "off", "0.2", "adam"."""
    if value is None:
        return "off"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def dropout_words(parts: Sequence[tuple[str, str]]) -> str:
    """"conv dropout 0.41 (spatial), dense 0.5" from (site, its rate in words) pairs, in
    the placement's order; "no dropout" for none."""
    if not parts:
        return "no dropout"
    (site, rate), rest = parts[0], parts[1:]
    return f"{site} dropout {rate}" + "".join(f", {s} {r}" for s, r in rest)


def training_words(config: Mapping[str, Any]) -> str:
    """"Adam lr 0.0003", "SGD lr 0.01 momentum 0.9, max-norm 2": how a trial of a family
    with an optimizer dimension trains (momentum only where SGD uses it)."""
    optimizer = str(config.get("optimizer", "adam"))
    said = f"{'Adam' if optimizer == 'adam' else 'SGD'} lr {words(config.get('learning_rate'))}"
    if optimizer == "sgd" and config.get("momentum"):
        said += f" momentum {words(config.get('momentum'))}"
    if config.get("max_norm") is not None:
        said += f", max-norm {words(config.get('max_norm'))}"
    return said
