"""dropsweep.sweep.config: defaults, validation of every key, errors that say where, round trips."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropsweep.sweep import space as spaces
from dropsweep.sweep import file as sweepfile
from dropsweep.sweep.config import (
    CVConfig,
    DataConfig,
    SearchConfig,
    Sweep,
    TrainConfig,
    build_sweep,
)
from dropsweep.families.mlp import MLP, MLPModel as ModelConfig
from dropsweep.families.mlp import config as mlp_config
from dropsweep.sweep.space import Choices, Fixed, Range
from dropsweep.errors import DropsweepError, SweepError
from dropsweep.families.mlp import PLACEMENTS
from dropsweep.sweep.file import RawSweep, apply_overrides, load_sweep, parse_sweep_text
from helpers import SUITE, assert_one_line

REPO = Path(__file__).resolve().parents[1]
SONAR = REPO / "sweeps" / "sonar.yaml"
BROWNLEE = REPO / "sweeps" / "brownlee.yaml"


def SpaceConfig(**dims: Any) -> dict[str, Any]:
    """The MLP's default space with ``dims`` changed."""
    return {**spaces.defaults(MLP.dimensions), **dims}


def build(text: str, *sets: str, file: str = "s.yaml") -> Sweep:
    return build_sweep(apply_overrides(parse_sweep_text(text, file), list(sets)))


def error(text: str, *sets: str, file: str = "s.yaml") -> SweepError:
    with pytest.raises(SweepError) as info:
        build(text, *sets, file=file)
    return info.value


# The C emitter when PyYAML has it: the property tests dump a lot, and the output is the same
# as dropsweep's own writer (sweepfile.Dumper: a string read back as a number is quoted).
class DUMPER(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    pass


sweepfile.reads_exponents(DUMPER)
C_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=DUMPER, sort_keys=False, allow_unicode=True)


def roundtrip(sweep: Sweep, file: str = "again.yaml") -> Sweep:
    return build_sweep(parse_sweep_text(dump(sweep.to_dict()), file))


# ----------------------------------------------------------------------------- defaults


def test_an_empty_sweep_is_brownlee_s_experiment() -> None:
    sweep = build("")
    assert sweep == Sweep()
    assert sweep.name == "dropsweep"
    assert sweep.data == DataConfig(dataset="sonar", csv=None, target=None)
    assert sweep.model.hidden == (60, 30)
    assert (sweep.train.epochs, sweep.train.batch_size, sweep.train.eval_every) == (300, 16, 10)
    assert (sweep.cv.folds, sweep.cv.seed) == (10, 7)
    assert sweep.baseline == mlp_config(placement="none", input_rate=0.0, hidden_rate=0.0,
                                         learning_rate=0.01, momentum=0.8, max_norm=None)
    assert sweep.search == SearchConfig(trials=100, sampler="tpe", seed=0, pruner="median")
    assert sweep.configs is None
    space = sweep.space
    assert space is not None
    assert space["placement"] == Choices(("none", "input", "hidden", "both")) == Choices(PLACEMENTS)
    assert isinstance(space["learning_rate"], Range) and space["learning_rate"].log is True
    assert space["max_norm"] is None
    assert sweep.file == "s.yaml"


def test_empty_sections_take_the_defaults() -> None:
    sweep = build("data:\nmodel:\ntrain:\ncv:\nbaseline:\nsearch:\nspace:\n")
    assert sweep == Sweep()


def test_learning_rate_ranges_are_log_scale_unless_told_otherwise() -> None:
    sweep = build("space:\n  learning_rate: {low: 0.001, high: 0.1}\n"
                  "  momentum: {low: 0.5, high: 0.9}\n  input_rate: {low: 0.1, high: 0.2}\n")
    assert sweep.space["learning_rate"] == Range(0.001, 0.1, log=True)
    assert sweep.space["momentum"] == Range(0.5, 0.9, log=False)
    assert sweep.space["input_rate"] == Range(0.1, 0.2, log=False)
    flat = build("space:\n  learning_rate: {low: 0.001, high: 0.1, log: false}\n")
    assert flat.space["learning_rate"] == Range(0.001, 0.1, log=False)
    logged = build("space:\n  hidden_rate: {low: 0.1, high: 0.5, log: true}\n")
    assert logged.space["hidden_rate"] == Range(0.1, 0.5, log=True)


@pytest.mark.parametrize("off", ["off", "Off", "OFF", "null", "~", "", "false", "no",
                                 "'off'", "'none'", "'None'", "'null'"])
def test_max_norm_off_spellings(off: str) -> None:
    sweep = build(f"baseline:\n  max_norm: {off}\nspace:\n  max_norm: {off}\n")
    assert sweep.baseline["max_norm"] is None
    assert sweep.space["max_norm"] is None
    assert build(f"space:\n  max_norm: [{off or 'null'}, {off or 'null'}]\n").space["max_norm"] is None


def test_max_norm_values() -> None:
    assert build("baseline: {max_norm: 3}\nspace: {max_norm: [off, 3]}").baseline["max_norm"] == 3.0
    space = build("space: {max_norm: [off, 2, 3, 3.0]}").space
    assert space["max_norm"] == Choices((None, 2.0, 3.0))
    on = "baseline: {max_norm: 4}\n"  # the baseline lies in the space (its first trial)
    assert build(on + "space: {max_norm: 4}").space["max_norm"] == Fixed(4.0)
    assert build(on + "space: {max_norm: [4]}").space["max_norm"] == Fixed(4.0)
    assert build(on + "space: {max_norm: {low: 1, high: 5}}").space["max_norm"] == Range(1.0, 5.0)


def test_a_parameter_is_a_range_a_list_or_a_fixed_value() -> None:
    space = build("baseline: {learning_rate: 0.05, momentum: 0.9}\n"
                  "space:\n"
                  "  placement: [none, input, none]\n"
                  "  input_rate: [0.1, 0.2, 0.1]\n"
                  "  hidden_rate: 0.3\n"
                  "  learning_rate: {low: 0.05, high: 0.05}\n"
                  "  momentum: [0.9]\n").space
    assert space["placement"] == Choices(("none", "input"))
    assert space["input_rate"] == Choices((0.1, 0.2))  # duplicates dropped, order kept
    assert space["hidden_rate"] == Fixed(0.3)
    assert space["learning_rate"] == Fixed(0.05)  # an empty range is one value
    assert space["momentum"] == Fixed(0.9)
    assert isinstance(space["input_rate"].values[0], float)
    placement = build("space: {placement: [both, none, both]}").space["placement"]
    assert placement == Choices(("both", "none"))


def test_rates_may_be_zero_and_stay_below_one() -> None:
    space = build("baseline: {momentum: 0}\n"
                  "space: {input_rate: 0, hidden_rate: {low: 0, high: 0.99}, momentum: 0}").space
    assert space["input_rate"] == Fixed(0.0) and space["momentum"] == Fixed(0.0)
    assert space["hidden_rate"] == Range(0.0, 0.99)


def test_every_key_scripts_rely_on_is_read() -> None:
    text = """\
name: everything
data: {csv: rows.csv, target: label}
model: {hidden: [8, 4, 2]}
train: {epochs: 12, batch_size: 32, eval_every: 3}
cv: {folds: 3, seed: 11}
baseline: {learning_rate: 0.02, momentum: 0.7, max_norm: 3}
search: {trials: 9, sampler: random, seed: 5, pruner: none}
space:
  placement: [none, input, both]
  input_rate: [0.1, 0.2]
  hidden_rate: {low: 0.2, high: 0.4}
  learning_rate: {low: 0.01, high: 0.2}
  momentum: 0.7
  max_norm: [off, 3]
"""
    sweep = build(text)
    assert sweep.name == "everything"
    assert sweep.data == DataConfig(dataset=None, csv="rows.csv", target="label")
    assert sweep.model == ModelConfig(hidden=(8, 4, 2))
    assert sweep.train == TrainConfig(epochs=12, batch_size=32, eval_every=3)
    assert sweep.cv == CVConfig(folds=3, seed=11)
    assert sweep.baseline == mlp_config("none", 0.0, 0.0, 0.02, 0.7, 3.0)
    assert sweep.search == SearchConfig(trials=9, sampler="random", seed=5, pruner="none")
    assert sweep.space == SpaceConfig(placement=Choices(("none", "input", "both")),
                                      input_rate=Choices((0.1, 0.2)),
                                      hidden_rate=Range(0.2, 0.4),
                                      learning_rate=Range(0.01, 0.2, log=True),
                                      momentum=Fixed(0.7),
                                      max_norm=Choices((None, 3.0)))


def test_data_target_may_be_a_column_index_and_hidden_one_width() -> None:
    sweep = build("data: {csv: rows.csv, target: -1}\nmodel: {hidden: 12}\n")
    assert sweep.data.target == -1 and sweep.model.hidden == (12,)
    assert build("name: '  padded  '").name == "padded"


# ----------------------------------------------------------------------------- the shipped sweeps


@pytest.mark.parametrize("path", [SONAR, BROWNLEE])
def test_shipped_sweeps_validate(path: Path) -> None:
    sweep = build_sweep(load_sweep(path))
    assert sweep.file == str(path)
    assert sweep.train.epochs == 300 and sweep.cv.folds == 10
    assert sweep.baseline == mlp_config(placement="none", learning_rate=0.01, momentum=0.8,
                                         max_norm=None)


def test_sonar_yaml_is_the_full_search() -> None:
    sweep = build_sweep(load_sweep(SONAR))
    assert sweep.configs is None
    assert sweep.space == SpaceConfig(
        placement=Choices(PLACEMENTS),
        input_rate=Range(0.05, 0.5),
        hidden_rate=Range(0.1, 0.7),
        learning_rate=Range(0.001, 0.3, log=True),
        momentum=Range(0.5, 0.99),
        max_norm=Choices((None, 2.0, 3.0, 4.0, 5.0)),
    )
    assert sweep.search == SearchConfig(trials=200, sampler="tpe", seed=0, pruner="median",
                                        balance="placement")


def test_brownlee_yaml_is_exactly_the_article_s_three_configurations() -> None:
    sweep = build_sweep(load_sweep(BROWNLEE))
    assert sweep.space is None
    assert sweep.configs is not None and len(set(sweep.configs)) == len(sweep.configs) == 3
    assert sweep.baseline in sweep.configs
    assert sweep.baseline == mlp_config(placement="none", learning_rate=0.01, momentum=0.8,
                                         max_norm=None)
    others = [c for c in sweep.configs if c != sweep.baseline]
    assert others == [
        mlp_config(placement="input", input_rate=0.2, hidden_rate=0.0, learning_rate=0.1,
                    momentum=0.9, max_norm=3.0),
        mlp_config(placement="hidden", input_rate=0.0, hidden_rate=0.2, learning_rate=0.1,
                    momentum=0.9, max_norm=3.0),
    ]


# ----------------------------------------------------------------------------- listed configs


def test_a_listed_configuration_takes_the_baseline_for_what_it_leaves_out() -> None:
    sweep = build("baseline: {learning_rate: 0.05, momentum: 0.6, max_norm: 4}\n"
                  "space:\n  - {placement: hidden, hidden_rate: 0.3}\n"
                  "  - {placement: none, max_norm: off}\n  - {}\n")
    assert sweep.configs == (
        mlp_config("hidden", 0.0, 0.3, 0.05, 0.6, 4.0),
        mlp_config("none", 0.0, 0.0, 0.05, 0.6, None),
        mlp_config("none", 0.0, 0.0, 0.05, 0.6, 4.0),
    )
    assert sweep.configs[2] == sweep.baseline


def test_repeated_listed_configurations_run_once() -> None:
    sweep = build("space:\n  - {placement: both, input_rate: 0.2, hidden_rate: 0.5}\n"
                  "  - {placement: none}\n"
                  "  - {placement: both, input_rate: 0.2, hidden_rate: 0.5, momentum: 0.8}\n")
    assert sweep.configs == (mlp_config("both", 0.2, 0.5, 0.01, 0.8, None),
                             mlp_config("none", 0.0, 0.0, 0.01, 0.8, None))


def test_a_zero_rate_a_placement_does_not_use_is_accepted() -> None:
    # what to_dict() writes for every listed configuration
    sweep = build("space:\n  - {placement: input, input_rate: 0.2, hidden_rate: 0}\n")
    assert sweep.configs == (mlp_config("input", 0.2, 0.0, 0.01, 0.8, None),)


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        ("space:\n  - placement: input\n    momentum: 0.9\n", 2, "space.0.input_rate",
         "placement 'input' needs input_rate"),
        ("space:\n  - {placement: none}\n  - {placement: both, input_rate: 0.2}\n", 3,
         "space.1.hidden_rate", "placement 'both' needs hidden_rate"),
        ("space:\n  - placement: none\n\n    hidden_rate: 0.3\n", 4, "space.0.hidden_rate",
         "placement 'none' does not use hidden_rate"),
        ("space:\n  - {placement: hidden, hidden_rate: 0.2, input_rate: 0.2}\n", 2,
         "space.0.input_rate", "placement 'hidden' does not use input_rate"),
        ("space:\n  - {placement: input, input_rate: [0.1, 0.2]}\n", 2, "space.0.input_rate",
         "single values"),
        ("space:\n  - {placement: none, momentum: {low: 0.5, high: 0.9}}\n", 2,
         "space.0.momentum", "single values"),
        ("space:\n  - {placement: input, input_rate: 1.0}\n", 2, "space.0.input_rate", "[0, 1)"),
        ("space:\n  - {placement: none, max_norm: 0}\n", 2, "space.0.max_norm", "> 0"),
        ("space:\n  - {placement: dropout}\n", 2, "space.0.placement", "must be one of"),
        ("space:\n  - {placement: none}\n  - {placement: none, input_rte: 0.1}\n", 3,
         "space.1.input_rte", "did you mean 'input_rate'?"),
        ("space:\n  - {placement: none}\n  - input\n", 3, "space.1", "must be a mapping"),
        ("space: []\n", 1, "space", "empty list of configurations"),
        ("space: 0.5\n", 1, "space", "must be a mapping (a search space) or a list"),
    ],
)
def test_listed_configuration_mistakes(text: str, line: int, key: str, fragment: str) -> None:
    assert_one_line(error(text), "s.yaml", line, key, fragment)


# ----------------------------------------------------------------------------- mistakes


# Each: (sweep text, line, dotted key, something the message must say)
MISTAKES = [
    # unknown keys, with the closest valid one
    ("name: x\ntrain:\n  epoch: 5\n", 3, "train.epoch", "unknown key; did you mean 'epochs'?"),
    ("trian:\n  epochs: 5\n", 1, "trian", "did you mean 'train'?"),
    ("train:\n  batchsize: 5\n", 2, "train.batchsize", "did you mean 'batch_size'?"),
    ("cv: {fold: 3}\n", 1, "cv.fold", "did you mean 'folds'?"),
    ("search: {sampler: tpe, pruners: none}\n", 1, "search.pruners", "did you mean 'pruner'?"),
    ("space:\n  input_rate: {lo: 0.1, high: 0.2}\n", 2, "space.input_rate.lo",
     "did you mean 'low'?"),
    ("space:\n  learningrate: 0.1\n", 2, "space.learningrate", "did you mean 'learning_rate'?"),
    ("data: {datset: sonar}\n", 1, "data.datset", "did you mean 'dataset'?"),
    ("train:\n  zzz: 1\n", 2, "train.zzz", "valid keys: epochs, batch_size, eval_every"),
    # non-string keys are unknown keys, not crashes
    ("1: x\n", 1, "1", "unknown key"),
    ("train:\n  epochs: 3\n  7: 1\n", 3, "train.7", "unknown key"),
    ("cv:\n  null: 1\n", 2, "cv.None", "unknown key"),
    ("space:\n  momentum: {true: 1}\n", 2, "space.momentum.True", "unknown key"),
    ("space:\n  - {placement: none, 0.5: 1}\n", 2, "space.0.0.5", "unknown key"),
    # wrong types
    ("train:\n  epochs: many\n", 2, "train.epochs", "must be an integer, got the string 'many'"),
    ("train:\n  epochs: 3.5\n", 2, "train.epochs", "must be an integer, got float 3.5"),
    ("train:\n  epochs: 300.0\n", 2, "train.epochs", "must be an integer"),
    ("train:\n  epochs: true\n", 2, "train.epochs", "must be an integer, got a boolean (true)"),
    ("train:\n  batch_size: [16]\n", 2, "train.batch_size", "must be an integer, got a list"),
    ("train:\n  batch_size: 0\n", 2, "train.batch_size", "must be at least 1, got 0"),
    ("train:\n  eval_every: {a: 1}\n", 2, "train.eval_every", "got a mapping"),
    ("cv:\n  folds: yes\n", 2, "cv.folds", "must be an integer, got a boolean (true)"),
    ("cv:\n  seed: -1\n", 2, "cv.seed", "must be at least 0"),
    ("search:\n  trials: 0\n", 2, "search.trials", "must be at least 1"),
    ("search:\n  trials: '10'\n", 2, "search.trials", "must be an integer, got the string '10'"),
    ("search:\n  seed: 2001-01-01\n", 2, "search.seed", "must be an integer, got date"),
    ("search:\n  sampler: tpee\n", 2, "search.sampler", "did you mean 'tpe'?"),
    ("search:\n  sampler: 5\n", 2, "search.sampler", "must be a string, got int 5"),
    ("search:\n  pruner: hyperband\n", 2, "search.pruner", "must be one of median, none"),
    ("model:\n  hidden: [60, true]\n", 2, "model.hidden.1", "must be an integer, got a boolean"),
    ("model:\n  hidden:\n    - 60\n    - 0\n", 4, "model.hidden.1", "must be at least 1"),
    ("model:\n  hidden: []\n", 2, "model.hidden", "must be a list of layer widths"),
    ("model:\n  hidden: wide\n", 2, "model.hidden", "must be a list of layer widths"),
    ("name: [a]\n", 1, "name", "must be a non-empty string, got a list"),
    ("name: '   '\n", 1, "name", "must be a non-empty string"),
    ("name: 7\n", 1, "name", "must be a non-empty string, got int 7"),
    ("train: 5\n", 1, "train", "must be a mapping of keys, got int 5"),
    ("cv: [2]\n", 1, "cv", "must be a mapping of keys, got a list"),
    ("data:\n  dataset: iris\n", 2, "data.dataset", "must be one of sonar"),
    ("data:\n  dataset: null\n", 2, "data.dataset", "must be a string, got nothing"),
    ("data:\n  csv: 5\n", 2, "data.csv", "must be a string"),
    ("data:\n  csv: ''\n", 2, "data.csv", "empty"),
    ("data:\n  dataset: sonar\n  csv: rows.csv\n", 2, "data.dataset", "not both"),
    ("data:\n  target: 3\n", 2, "data.target", "only a data.csv file takes a target"),
    ("data:\n  csv: r.csv\n  target: true\n", 3, "data.target", "column name or index"),
    ("data:\n  csv: r.csv\n  target: 1.5\n", 3, "data.target", "column name or index"),
    ("space:\n  momentum: fast\n", 2, "space.momentum", "must be a number, got the string 'fast'"),
    ("space:\n  momentum: true\n", 2, "space.momentum", "must be a number, got a boolean"),
    ("space:\n  momentum: null\n", 2, "space.momentum", "must be a number, got nothing"),
    ("space:\n  max_norm: on\n", 2, "space.max_norm", "must be a number, got a boolean (true)"),
    ("space:\n  input_rate: {low: 0.1, high: 0.4, log: 1}\n", 2, "space.input_rate.log",
     "must be true or false"),
    ("space:\n  placement: dropout\n", 2, "space.placement", "must be one of none, input"),
    ("space:\n  placement: [none, inptu]\n", 2, "space.placement.1", "did you mean 'input'?"),
    ("space:\n  placement:\n    - none\n    - 3\n", 4, "space.placement.1", "must be a string"),
    ("space:\n  placement: {low: 1}\n", 2, "space.placement", "must be a string, got a mapping"),
    # out of range
    ("space:\n  input_rate: 1.0\n", 2, "space.input_rate", "must be in [0, 1), got 1"),
    ("space:\n  input_rate: -0.1\n", 2, "space.input_rate", "must be in [0, 1), got -0.1"),
    ("space:\n  hidden_rate:\n    low: 0.2\n    high: 1.5\n", 4, "space.hidden_rate.high",
     "[0, 1)"),
    ("space:\n  momentum: [0.5, 1]\n", 2, "space.momentum.1", "must be in [0, 1), got 1"),
    ("baseline:\n  momentum: 1.0\n", 2, "baseline.momentum", "[0, 1)"),
    ("baseline:\n  momentum: -0.5\n", 2, "baseline.momentum", "[0, 1)"),
    ("baseline:\n  learning_rate: 0\n", 2, "baseline.learning_rate", "must be > 0, got 0"),
    ("space:\n  learning_rate: -0.01\n", 2, "space.learning_rate", "must be > 0"),
    ("space:\n  learning_rate: {low: 0, high: 0.1}\n", 2, "space.learning_rate.low", "> 0"),
    ("space:\n  input_rate: {low: 0, high: 0.5, log: true}\n", 2, "space.input_rate.low",
     "a log range needs low > 0"),
    ("baseline:\n  max_norm: 0\n", 2, "baseline.max_norm", "must be > 0, got 0"),
    ("space:\n  max_norm: [off, -3]\n", 2, "space.max_norm.1", "must be > 0, got -3"),
    ("baseline:\n  max_norm: [3]\n", 2, "baseline.max_norm", "must be a number, got a list"),
    ("space:\n  momentum: {low: 0.9, high: 0.5}\n", 2, "space.momentum",
     "low (0.9) is greater than high (0.5)"),
    ("space:\n\n  learning_rate:\n    high: 0.01\n    low: 0.1\n", 3, "space.learning_rate",
     "low (0.1) is greater than high (0.01)"),
    ("space:\n  input_rate: {low: 0.1}\n", 2, "space.input_rate.high", "needs both low and high"),
    ("space:\n  max_norm: {low: off, high: 3}\n", 2, "space.max_norm", "cannot be off"),
    ("space:\n  input_rate: []\n", 2, "space.input_rate", "empty list of choices"),
    ("space:\n  placement: []\n", 2, "space.placement", "empty list of choices"),
    ("space:\n  max_norm: []\n", 2, "space.max_norm", "empty list of choices"),
    ("cv:\n  folds: 1\n", 2, "cv.folds", "must be at least 2, got 1"),
    ("cv:\n  folds: 0\n", 2, "cv.folds", "must be at least 2"),
    # not finite
    ("baseline:\n  learning_rate: .nan\n", 2, "baseline.learning_rate", "must be a finite number"),
    ("space:\n  learning_rate: .inf\n", 2, "space.learning_rate", "finite"),
    ("space:\n  momentum: {low: -.inf, high: 0.5}\n", 2, "space.momentum.low", "finite"),
    ("space:\n  max_norm: [3, .NaN]\n", 2, "space.max_norm.1", "finite"),
    ("space:\n  max_norm: .inf\n", 2, "space.max_norm", "finite"),
    ("baseline:\n  momentum: " + "9" * 400 + "\n", 2, "baseline.momentum", "finite"),
    ("space:\n  learning_rate: 1.0e+400\n", 2, "space.learning_rate", "finite"),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), MISTAKES)
def test_every_mistake_is_one_error_naming_file_line_and_key(
        text: str, line: int, key: str, fragment: str) -> None:
    err = error(text, file="sweeps/mine.yaml")
    assert type(err) is SweepError and isinstance(err, DropsweepError) and err.exit_code == 2
    assert_one_line(err, "sweeps/mine.yaml", line, key, fragment)


def test_a_long_bad_value_is_shortened_in_the_message() -> None:
    err = error(f"train:\n  epochs: '{'x' * 500}'\n")
    assert len(str(err)) < 200 and "..." in str(err)


def test_a_missing_file_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(SweepError) as info:
        build_sweep(load_sweep(tmp_path / "absent.yaml"))
    assert_one_line(info.value, str(tmp_path / "absent.yaml"), None, None, "no such sweep file")


def test_a_yaml_syntax_error_is_one_error_with_its_line() -> None:
    err = error("name: x\ntrain:\n  epochs: 3\n   batch_size: 4\n")
    assert err.line == 4 and err.key is None
    assert_one_line(err, "s.yaml", 4, None, "invalid YAML")


# ----------------------------------------------------------------------------- grid sampler


def test_grid_refuses_a_range_and_names_it() -> None:
    text = ("search: {sampler: grid}\nspace:\n  placement: [none, input]\n"
            "  input_rate: [0.1, 0.2]\n  hidden_rate: 0.5\n"
            "  learning_rate: {low: 0.01, high: 0.1}\n  momentum: 0.9\n")
    assert_one_line(error(text), "s.yaml", 6, "space.learning_rate", "grid sampler", "not ranges")


def test_grid_names_a_default_range_it_cannot_use() -> None:
    err = error("search: {sampler: grid}\nspace: {input_rate: [0.1], hidden_rate: [0.2]}\n")
    assert_one_line(err, "s.yaml", 2, "space.learning_rate", "grid sampler",
                    "the default is the range 0.001..0.3")


def test_grid_accepts_lists_and_fixed_values() -> None:
    sweep = build("search: {sampler: grid}\nspace:\n  placement: [none, both]\n"
                  "  input_rate: [0.1, 0.2]\n  hidden_rate: 0.5\n  learning_rate: [0.01, 0.1]\n"
                  "  momentum: 0.8\n  max_norm: [off, 3]\n")
    assert sweep.search.sampler == "grid"
    assert sweep.name == "dropsweep"  # not the last space key the grid check looked at
    assert build("name: mine\nsearch: {sampler: grid}\nspace: {input_rate: [0.1], "
                 "hidden_rate: [0.2], learning_rate: [0.01], momentum: [0.8]}\n").name == "mine"
    assert not any(isinstance(p, Range) for p in sweep.space.values())
    assert build("search: {sampler: grid}\nspace: [{placement: none}]\n").configs is not None


def test_grid_ignores_a_range_for_a_rate_none_of_its_placements_uses() -> None:
    # the grid expands a rate only where a placement uses it (dropsweep.sweep.space.grid_points)
    lists = "  learning_rate: [0.01, 0.05]\n  momentum: 0.8\n"
    sweep = build("search: {sampler: grid}\nspace:\n  placement: [none, input]\n"
                  "  input_rate: [0.2, 0.4]\n" + lists)
    assert sweep.space["hidden_rate"] == SpaceConfig()["hidden_rate"]  # the default range, unused
    sweep = build("search: {sampler: grid}\nspace:\n  placement: [none, hidden]\n"
                  "  input_rate: {low: 0.1, high: 0.2}\n  hidden_rate: [0.5]\n" + lists)
    assert isinstance(sweep.space["input_rate"], Range)
    err = error("search: {sampler: grid}\nspace:\n  placement: [none, both]\n"
                "  input_rate: [0.2]\n  hidden_rate: {low: 0.1, high: 0.2}\n" + lists)
    assert_one_line(err, "s.yaml", 5, "space.hidden_rate", "not ranges")
    err = error("search: {sampler: grid}\nspace:\n  placement: [input]\n" + lists)
    assert_one_line(err, "s.yaml", 2, "space.input_rate", "the default is the range 0..0.5")


def test_grid_by_set_names_the_file_s_range() -> None:
    err = error(SONAR.read_text(), "search.sampler=grid", file="sonar.yaml")
    assert err.key == "space.input_rate" and err.file == "sonar.yaml" and err.line is not None


# ----------------------------------------------------------------------------- --set


def test_set_overrides_any_key() -> None:
    sweep = build(SONAR.read_text(), "cv.folds=5", "train.epochs=20", "space.max_norm=off",
                  "search.sampler=random", "space.placement=[none, both]", "name=quick")
    assert sweep.cv.folds == 5 and sweep.train.epochs == 20 and sweep.space["max_norm"] is None
    assert sweep.search.sampler == "random" and sweep.name == "quick"
    assert sweep.space["placement"] == Choices(("none", "both"))
    assert sweep.space["learning_rate"] == Range(0.001, 0.3, log=True)  # untouched


@pytest.mark.parametrize(
    ("assignment", "key", "fragment"),
    [
        ("cv.folds=1", "cv.folds", "must be at least 2"),
        ("train.epochs=zero", "train.epochs", "must be an integer"),
        ("train.epochs=true", "train.epochs", "must be an integer, got a boolean"),
        ("train.epoch=5", "train.epoch", "did you mean 'epochs'?"),
        ("trian.epochs=5", "trian", "did you mean 'train'?"),
        ("epochs=5", "epochs", "unknown key"),
        ("space.momentum=1", "space.momentum", "[0, 1)"),
        ("space.input_rate.low=0.9", "space.input_rate", "low (0.9) is greater than high (0.5)"),
        ("space.learning_rate.low=0.5", "space.learning_rate", "greater than high (0.3)"),
        ("space.learning_rate.lo=0.5", "space.learning_rate.lo", "did you mean 'low'?"),
        ("space.max_norm=[]", "space.max_norm", "empty list of choices"),
        ("baseline.learning_rate=-1", "baseline.learning_rate", "> 0"),
        ("baseline.momentum=.nan", "baseline.momentum", "finite"),
        ("data.target=2", "data.target", "only a data.csv file"),
        ("space=5", "space", "must be a mapping (a search space) or a list"),
        ("train=5", "train", "must be a mapping of keys"),
    ],
)
def test_set_mistakes_name_the_set_not_a_line(assignment: str, key: str, fragment: str) -> None:
    err = error(SONAR.read_text(), assignment, file="sonar.yaml")
    assert_one_line(err, f"--set {assignment}", None, key, fragment)
    assert "sonar.yaml" not in str(err)


def test_a_file_mistake_is_still_named_by_its_line_after_an_unrelated_set() -> None:
    err = error("train:\n  epochs: 0\n", "cv.folds=3")
    assert_one_line(err, "s.yaml", 2, "train.epochs", "at least 1")


def test_set_into_a_default_range_changes_only_that_end() -> None:
    sweep = build("baseline: {learning_rate: 0.1}\n", "space.learning_rate.low=0.05",
                  "space.momentum.high=0.95")
    assert sweep.space["learning_rate"] == Range(0.05, 0.3, log=True)
    assert sweep.space["momentum"] == Range(0.5, 0.95, log=False)
    assert sweep.space["input_rate"] == SpaceConfig()["input_rate"]
    sweep = build("name: x\n", "space.learning_rate.log=false")
    assert sweep.space["learning_rate"] == Range(0.001, 0.3, log=False)


def test_set_into_a_file_range_changes_only_that_end() -> None:
    sweep = build(SONAR.read_text(), "space.learning_rate.low=0.01", "space.input_rate.high=0.3")
    assert sweep.space["learning_rate"] == Range(0.01, 0.3, log=True)
    assert sweep.space["input_rate"] == Range(0.05, 0.3)


def test_set_into_a_default_that_is_no_range_still_needs_both_ends() -> None:
    err = error("name: x\n", "space.max_norm.low=2")
    assert_one_line(err, "--set space.max_norm.low=2", None, "space.max_norm.high",
                    "needs both low and high")
    # a range given whole is taken as written
    err = error("name: x\n", "space.learning_rate={low: 0.05}")
    assert_one_line(err, "--set space.learning_rate={low: 0.05}", None,
                    "space.learning_rate.high", "needs both")


def test_set_into_a_half_written_file_range_does_not_fill_it_from_the_defaults() -> None:
    err = error("space:\n  learning_rate:\n    low: 0.01\n", "space.learning_rate.log=false")
    assert err.key == "space.learning_rate.high" and "needs both" in str(err)


def test_set_a_listed_configuration() -> None:
    sweep = build(BROWNLEE.read_text(), "space.1.input_rate=0.3", "space.2.max_norm=off")
    assert sweep.configs[1] == mlp_config("input", 0.3, 0.0, 0.1, 0.9, 3.0)
    assert sweep.configs[2] == mlp_config("hidden", 0.0, 0.2, 0.1, 0.9, None)
    err = error(BROWNLEE.read_text(), "space.0.hidden_rate=0.3")
    assert_one_line(err, "--set space.0.hidden_rate=0.3", None, "space.0.hidden_rate",
                    "placement 'none' does not use hidden_rate")


def test_set_a_whole_space_as_a_list() -> None:
    sweep = build(SONAR.read_text(), "space=[{placement: input, input_rate: 0.3}]")
    assert sweep.space is None
    assert sweep.configs == (mlp_config("input", 0.3, 0.0, 0.01, 0.8, None),)
    err = error(SONAR.read_text(), "space=[{placement: input}]")
    assert_one_line(err, "--set space=[{placement: input}]", None, "space.0.input_rate", "needs")


def test_errors_found_later_name_the_set_too() -> None:
    """Sweep.where: mistakes found against the data (missing CSV, too many folds)."""
    sweep = build("data: {csv: rows.csv}\ncv:\n  folds: 3\n", "data.csv=other.csv")
    assert sweep.where("data.csv") == {"file": "--set data.csv=other.csv", "line": None,
                                       "key": "data.csv"}
    assert sweep.where("cv.folds") == {"file": "s.yaml", "line": 3, "key": "cv.folds"}
    assert sweep.where("cv") == {"file": "s.yaml", "line": 2, "key": "cv"}
    assert sweep.where("data.target") == {"file": "s.yaml", "line": 1, "key": "data.target"}


def test_sweep_where_uses_the_nearest_written_ancestor() -> None:
    sweep = build("name: x\nspace:\n  learning_rate:\n    low: 0.01\n    high: 0.1\n")
    assert sweep.where("space.learning_rate.low")["line"] == 4
    assert sweep.where("space.learning_rate.log")["line"] == 3
    assert sweep.where("space.learning_rate.log.deeper")["line"] == 3
    assert sweep.where("cv.folds") == {"file": "s.yaml", "line": None, "key": "cv.folds"}


# ----------------------------------------------------------------------------- round trips


ROUND_TRIPS = [
    SONAR.read_text(),
    BROWNLEE.read_text(),
    "",
    "data: {csv: rows.csv, target: label}\nmodel: {hidden: 5}\n",
    "data: {csv: rows.csv, target: 0}\nbaseline: {max_norm: 2.5}\nspace: {max_norm: [off, 2.5]}\n",
    "search: {sampler: grid, pruner: none}\nspace:\n  placement: [both, none]\n"
    "  input_rate: [0.1, 0.2]\n  hidden_rate: [0.3]\n  learning_rate: [0.01, 0.02]\n"
    "  momentum: [0.9, 0.8]\n  max_norm: [off, 2]\n",
    "baseline: {max_norm: 2}\nspace:\n  placement: [none, hidden]\n  max_norm: {low: 1, high: 4}\n"
    "  learning_rate: {low: 0.01, high: 0.1, log: false}\n"
    "  hidden_rate: {low: 0.1, high: 0.2, log: true}\n",
    "baseline: {learning_rate: 0.1, momentum: 0, max_norm: 3}\n"
    "space:\n  - {placement: none}\n  - {placement: both, input_rate: 0.1, hidden_rate: 0.5, "
    "max_norm: off}\n  - {placement: input, input_rate: 0, learning_rate: 1.0e-05}\n",
]


@pytest.mark.parametrize("text", ROUND_TRIPS, ids=[f"sweep{i}" for i in range(len(ROUND_TRIPS))])
def test_to_dict_round_trips(text: str) -> None:
    sweep = build(text)
    again = roundtrip(sweep)
    assert again == sweep
    assert again.to_dict() == sweep.to_dict()
    assert again.configs == sweep.configs and again.space == sweep.space  # the parts that count
    assert again.file == "again.yaml"  # where it was read from is no part of the experiment


def test_to_dict_of_a_list_sweep_stores_the_configurations_and_a_none_baseline() -> None:
    out = build(BROWNLEE.read_text()).to_dict()
    assert out["space"][1] == {"placement": "input", "input_rate": 0.2, "hidden_rate": 0.0,
                               "learning_rate": 0.1, "momentum": 0.9, "max_norm": 3.0}
    assert out["baseline"] == {"learning_rate": 0.01, "momentum": 0.8, "max_norm": None}
    assert set(out) == {"name", "data", "model", "train", "cv", "eval", "baseline", "search",
                        "space"}


def test_sweeps_differing_in_the_experiment_are_not_equal() -> None:
    base = build(SONAR.read_text())
    for assignment in ["cv.folds=5", "space.max_norm=off", "name=other", "baseline.momentum=0.9",
                       "space.learning_rate.log=false", "model.hidden=[60]"]:
        assert build(SONAR.read_text(), assignment) != base, assignment


# ----------------------------------------------------------------------------- properties

_FILE = "prop.yaml"

scalars = (st.none() | st.booleans() | st.integers(-(10**30), 10**30)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["off", "none", "sonar", "grid", "tpe", "input", "both", "hidden",
                              "low", "high", "log", "", "0.5", "1e-3"]))
keys = st.text(max_size=10) | st.integers(-3, 20) | st.sampled_from(
    ["low", "high", "log", "epochs", "folds", "placement", "input_rate", "max_norm", "csv",
     "target", "dataset", "hidden", "0"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys, inner, max_size=4), max_leaves=8)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _containers(node: Any) -> list[Any]:
    out = [node] if isinstance(node, (dict, list)) else []
    for child in (node.values() if isinstance(node, dict) else node if isinstance(node, list)
                  else ()):
        out += _containers(child)
    return out


SHIPPED = [yaml.safe_load(SONAR.read_text()), yaml.safe_load(BROWNLEE.read_text())]


@st.composite
def mutated_sweeps(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(draw(st.sampled_from(SHIPPED)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "delete", "add"]))
        paths = _paths(data)
        if kind in ("replace", "delete") and paths:
            path = draw(st.sampled_from(paths))
            parent = data
            for part in path[:-1]:
                parent = parent[part]
            if kind == "replace":
                parent[path[-1]] = draw(values)
            elif isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        else:
            target = draw(st.sampled_from(_containers(data)))
            if isinstance(target, dict):
                target[draw(keys)] = draw(values)
            else:
                target.append(draw(values))
    return data


def _outcome(make: Any) -> Sweep | SweepError:
    try:
        return make()
    except SweepError as err:  # anything else fails the test
        text = str(err)
        assert text and len(text.splitlines()) == 1 and "\n" not in text, text
        assert err.file is not None and text.startswith(" ".join(err.file.split()))
        if err.key is not None:
            assert f"{' '.join(err.key.split())}: " in text
        return err


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_sweeps())
def test_a_mutated_sweep_is_a_sweep_or_one_sweep_error(data: dict[str, Any]) -> None:
    SUITE["fuzzed inputs"] += 1
    # straight from the data, as build_sweep sees it after --set
    direct = _outcome(lambda: build_sweep(RawSweep(data=copy.deepcopy(data), file=_FILE)))
    # and through a file, line numbers and all
    text = dump(data)
    via_yaml = _outcome(lambda: build_sweep(parse_sweep_text(text, _FILE)))
    if isinstance(via_yaml, SweepError):
        assert via_yaml.file == _FILE
        if via_yaml.line is not None:
            assert 1 <= via_yaml.line <= text.count("\n") + 1
    if isinstance(direct, Sweep) and isinstance(via_yaml, Sweep):
        assert direct == via_yaml
        # whatever validates round-trips (through the C loader: the YAML path is tested above)
        again = yaml.load(dump(direct.to_dict()), Loader=C_LOADER)
        assert build_sweep(RawSweep(data=again, file="again.yaml")) == direct
    else:
        # both ways see the same data: same verdict, same key (YAML may add a line)
        assert isinstance(direct, SweepError) and isinstance(via_yaml, SweepError)
        assert (direct.key, direct.message) == (via_yaml.key, via_yaml.message)


set_keys = st.sampled_from(
    ["cv.folds", "train.epochs", "space.learning_rate.low", "space.learning_rate.high",
     "space.max_norm", "space.0.input_rate", "space.1", "space.placement", "search.sampler",
     "baseline.max_norm", "data.csv", "name", "space", "model.hidden.0", "search.sampler.x"]
) | st.text(min_size=1, max_size=15)
def _one_line_yaml(value: Any) -> str:
    text = yaml.dump(value, Dumper=DUMPER, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()  # a lone scalar ends its document with '...'


set_values = st.text(max_size=20) | values.map(_one_line_yaml)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([0, 1]), st.lists(st.tuples(set_keys, set_values), max_size=3))
def test_random_sets_give_a_sweep_or_one_sweep_error(which: int,
                                                     sets: list[tuple[str, str]]) -> None:
    SUITE["fuzzed inputs"] += 1
    assignments = [f"{k}={v}" for k, v in sets]
    raw = RawSweep(data=copy.deepcopy(SHIPPED[which]), file=_FILE)
    result = _outcome(lambda: build_sweep(apply_overrides(raw, assignments)))
    if isinstance(result, SweepError) and result.file != _FILE:
        assert result.file.startswith("--set ")
        assert result.line is None


@st.composite
def valid_sweeps(draw: st.DrawFn) -> str:
    """Random sweeps that must validate: what a user may write, all of it."""
    rate = st.floats(0, 0.99, allow_nan=False).map(lambda x: round(x, 3))
    lr = st.floats(1e-5, 1.0, allow_nan=False)
    norm = st.floats(0.5, 10, allow_nan=False)

    def param(values: st.SearchStrategy[float], off: bool = False) -> st.SearchStrategy[Any]:
        pair = st.tuples(values, values).map(sorted)
        rng = pair.flatmap(lambda p: st.fixed_dictionaries(
            {"low": st.just(p[0]), "high": st.just(p[1])}, optional={"log": st.booleans()}))
        listed = st.lists(values | (st.sampled_from(["off", None, False]) if off else values),
                          min_size=1, max_size=4)
        return values | listed | (rng if not off else rng | st.sampled_from(["off", None]))

    out: dict[str, Any] = {"name": draw(st.text("abc xyz-", min_size=1).filter(str.strip))}
    if draw(st.booleans()):
        out["data"] = {"csv": "rows.csv", "target": draw(st.none() | st.integers(-3, 3)
                                                         | st.sampled_from(["y", "label"]))}
    out["model"] = {"hidden": draw(st.lists(st.integers(1, 64), min_size=1, max_size=3))}
    out["train"] = {"epochs": draw(st.integers(1, 500)), "batch_size": draw(st.integers(1, 64))}
    out["cv"] = {"folds": draw(st.integers(2, 12)), "seed": draw(st.integers(0, 99))}
    out["baseline"] = {"learning_rate": draw(lr), "momentum": draw(rate),
                       "max_norm": draw(st.none() | norm | st.just("off"))}
    sampler = draw(st.sampled_from(["tpe", "random", "cmaes", "qmc", "grid"]))
    out["search"] = {"trials": draw(st.integers(1, 300)), "sampler": sampler,
                     "pruner": draw(st.sampled_from(["median", "none"]))}
    if draw(st.booleans()):
        space: Any = {
            "placement": draw(st.sampled_from(PLACEMENTS)
                              | st.lists(st.sampled_from(PLACEMENTS), min_size=1)),
            "input_rate": draw(param(rate)),
            "hidden_rate": draw(param(rate)),
            "learning_rate": draw(param(lr)),
            "momentum": draw(param(rate)),
            "max_norm": draw(param(norm, off=True)),
        }
        for name in list(space):
            if draw(st.booleans()):
                del space[name]
        for value in space.values():  # a log range needs low > 0
            if isinstance(value, dict) and value.get("log"):
                value["log"] = value["low"] > 0
        if sampler == "grid":  # a grid takes lists: each range becomes its two ends
            for name, value in list(space.items()):
                if isinstance(value, dict):
                    space[name] = [value["low"], value["high"]]
            space.setdefault("input_rate", [0.1])
            space.setdefault("hidden_rate", [0.1])
            space.setdefault("learning_rate", [0.01])
            space.setdefault("momentum", [0.9])
    else:
        space = []
        for _ in range(draw(st.integers(1, 4))):
            placement = draw(st.sampled_from(PLACEMENTS))
            config: dict[str, Any] = {"placement": placement}
            if placement in ("input", "both"):
                config["input_rate"] = draw(rate)
            if placement in ("hidden", "both"):
                config["hidden_rate"] = draw(rate)
            for name, strategy in (("learning_rate", lr), ("momentum", rate),
                                   ("max_norm", norm | st.just("off"))):
                if draw(st.booleans()):
                    config[name] = draw(strategy)
            space.append(config)
    if isinstance(space, dict):
        _fit_baseline(out["baseline"], space)
    out["space"] = space
    return dump(out)


def _fit_baseline(baseline: dict[str, Any], space: dict[str, Any]) -> None:
    """The baseline must lie in the space (it is every study's first trial): take each of its
    values from the drawn parameter, and make sure the placements include none."""
    placement = space.get("placement")
    if placement is not None:
        placements = placement if isinstance(placement, list) else [placement]
        space["placement"] = list(placements) + ["none"]
    defaults = {"learning_rate": SpaceConfig()["learning_rate"].low,
                "momentum": SpaceConfig()["momentum"].low, "max_norm": None}
    for name in ("learning_rate", "momentum", "max_norm"):
        value = space.get(name, defaults[name]) if name in space else defaults[name]
        if isinstance(value, dict):
            value = value["low"]
        elif isinstance(value, list):
            value = value[0]
        off = name == "max_norm" and (value is None or value is False or value == "off")
        baseline[name] = "off" if off else value


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_sweeps())
def test_any_valid_sweep_round_trips(text: str) -> None:
    sweep = build(text)
    written = yaml.safe_load(text)
    assert sweep.name == written["name"].strip()
    assert sweep.model.hidden == tuple(written["model"]["hidden"])
    assert (sweep.train.epochs, sweep.train.batch_size) == tuple(written["train"].values())
    assert (sweep.cv.folds, sweep.cv.seed) == tuple(written["cv"].values())
    assert sweep.search.sampler == written["search"]["sampler"]
    assert sweep.search.trials == written["search"]["trials"]
    assert sweep.data.csv == written.get("data", {}).get("csv")
    assert (sweep.configs is None) == isinstance(written["space"], dict)
    again = roundtrip(sweep)
    assert again == sweep and again.to_dict() == sweep.to_dict()
    assert yaml.safe_load(dump(sweep.to_dict())) == sweep.to_dict()  # to_dict is plain YAML data
    for value in (sweep.baseline["learning_rate"], sweep.baseline["momentum"]):
        assert math.isfinite(value)


@pytest.mark.slow
def test_hypothesis_strategies_produce_what_they_claim() -> None:
    """Guard the property tests against a strategy that only ever makes errors."""
    made = errors = 0

    @settings(max_examples=100, deadline=None, database=None, derandomize=True)
    @given(mutated_sweeps())
    def count(data: dict[str, Any]) -> None:
        nonlocal made, errors
        try:
            build_sweep(RawSweep(data=copy.deepcopy(data), file=_FILE))
            made += 1
        except SweepError:
            errors += 1

    count()
    assert made > 0 and errors > 0
