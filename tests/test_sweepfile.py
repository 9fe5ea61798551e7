"""dropsweep.sweep.file: safe YAML with a line for every dotted key, and --set overrides.

Validation (dropsweep.sweep.config) is tested in test_config.py; here: what the raw layer reads,
which line it remembers for each key, and how --set changes the data and the location.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dropsweep.sweep import file as sweepfile
from dropsweep.errors import SweepError
from dropsweep.sweep.file import RawSweep, apply_overrides, load_sweep, locate, parse_sweep_text
from helpers import SUITE, assert_one_line

REPO = Path(__file__).resolve().parents[1]

NESTED = """\
# a comment line
name: lines

train:
  epochs: 5
  batch_size: 8
space:
  placement:
    - none
    - input
  input_rate: {low: 0.1, high: 0.4}
  learning_rate:
    low: 0.001
    high: 0.1
  max_norm: [off, 2,
             3]
"""


def parse_error(text: str, file: str = "s.yaml") -> SweepError:
    with pytest.raises(SweepError) as info:
        parse_sweep_text(text, file)
    return info.value


def set_error(raw: RawSweep, *assignments: str) -> SweepError:
    with pytest.raises(SweepError) as info:
        apply_overrides(raw, list(assignments))
    return info.value


# ----------------------------------------------------------------------------- parsing


def test_data_is_plain_yaml() -> None:
    raw = parse_sweep_text(NESTED, "n.yaml")
    assert raw.file == "n.yaml"
    assert raw.data == {
        "name": "lines",
        "train": {"epochs": 5, "batch_size": 8},
        "space": {
            "placement": ["none", "input"],
            "input_rate": {"low": 0.1, "high": 0.4},
            "learning_rate": {"low": 0.001, "high": 0.1},
            "max_norm": [False, 2, 3],  # YAML 1.1: ``off`` is False
        },
    }
    assert raw.overrides == {} and raw.created == set()


def test_exponents_without_a_dot_are_numbers_in_the_file_and_in_set() -> None:
    """``1e-3`` is a string to YAML 1.1 (PyYAML); a learning rate is written that way."""
    raw = parse_sweep_text("space:\n  learning_rate: {low: 1e-4, high: 1E-1}\n"
                           "  momentum: [0.0, 5e1, -2e+0, 1.5e-2]\nname: 1e3x\n", "e.yaml")
    assert raw.data["space"] == {"learning_rate": {"low": 1e-4, "high": 0.1},
                                 "momentum": [0.0, 50.0, -2.0, 0.015]}
    assert raw.data["name"] == "1e3x"  # not a number: stays text
    assert apply_overrides(raw, ["space.learning_rate.low=3e-5"]).data["space"][
        "learning_rate"]["low"] == 3e-5
    # and what dropsweep writes (export, validate) reads back as it was: text stays text
    data = {"name": "1e-3", "train": {"epochs": 3}, "space": {"learning_rate": [1e-3, 2.5e-7]}}
    assert sweepfile.dump(data).startswith("name: '1e-3'\n")
    assert parse_sweep_text(sweepfile.dump(data), "w.yaml").data == data

def test_every_dotted_key_remembers_its_line() -> None:
    raw = parse_sweep_text(NESTED, "n.yaml")
    assert raw.lines == {
        "name": 2,
        "train": 4,
        "train.epochs": 5,
        "train.batch_size": 6,
        "space": 7,
        "space.placement": 8,
        "space.placement.0": 9,
        "space.placement.1": 10,
        "space.input_rate": 11,
        "space.input_rate.low": 11,
        "space.input_rate.high": 11,
        "space.learning_rate": 12,
        "space.learning_rate.low": 13,
        "space.learning_rate.high": 14,
        "space.max_norm": 15,
        "space.max_norm.0": 15,
        "space.max_norm.1": 15,
        "space.max_norm.2": 16,
    }


def test_listed_configurations_remember_item_and_key_lines() -> None:
    text = (REPO / "sweeps" / "brownlee.yaml").read_text()
    raw = parse_sweep_text(text, "b.yaml")
    first = text.splitlines().index("space:") + 1
    assert raw.lines["space"] == first
    for i in range(3):
        assert raw.lines[f"space.{i}"] == first + 1 + i
        assert raw.lines[f"space.{i}.placement"] == first + 1 + i
    assert raw.lines["space.2.hidden_rate"] == first + 3
    block = "space:\n  - placement: input\n    input_rate: 0.2\n  -\n    placement: none\n"
    raw = parse_sweep_text(block, "b.yaml")
    assert raw.lines["space.0"] == 2
    assert raw.lines["space.0.input_rate"] == 3
    assert raw.lines["space.1"] == 5  # the item starts where its content does
    assert raw.lines["space.1.placement"] == 5


def test_where_falls_back_to_the_nearest_written_ancestor() -> None:
    raw = parse_sweep_text(NESTED, "n.yaml")
    assert raw.where("train.epochs") == {"file": "n.yaml", "line": 5, "key": "train.epochs"}
    assert raw.where("train.eval_every") == {"file": "n.yaml", "line": 4, "key": "train.eval_every"}
    assert raw.where("space.input_rate.log") == {"file": "n.yaml", "line": 11,
                                                 "key": "space.input_rate.log"}
    assert raw.where("cv.folds") == {"file": "n.yaml", "line": None, "key": "cv.folds"}


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "~\n"])
def test_an_empty_file_is_an_empty_sweep(text: str) -> None:
    raw = parse_sweep_text(text, "e.yaml")
    assert raw.data == {} and raw.lines == {}


def test_non_string_keys_are_named_as_validation_will_name_them() -> None:
    raw = parse_sweep_text("train:\n  0x10: 1\n  null: 2\n  true: 3\n  1.5: 4\n", "k.yaml")
    assert raw.data["train"] == {16: 1, None: 2, True: 3, 1.5: 4}
    assert raw.lines["train.16"] == 2
    assert raw.lines["train.None"] == 3
    assert raw.lines["train.True"] == 4
    assert raw.lines["train.1.5"] == 5


def test_keys_that_only_print_alike_are_not_duplicates() -> None:
    raw = parse_sweep_text("train:\n  0: a\n  '0': b\n", "k.yaml")
    assert raw.data["train"] == {0: "a", "0": "b"}


def test_merge_keys_are_read_and_explicit_keys_win() -> None:
    text = ("base: &b {low: 0.1, high: 0.4}\n"
            "space:\n"
            "  input_rate:\n"
            "    <<: *b\n"
            "    high: 0.3\n")
    raw = parse_sweep_text(text, "m.yaml")
    assert raw.data["space"]["input_rate"] == {"low": 0.1, "high": 0.3}
    assert raw.lines["space.input_rate.high"] == 5  # written here
    assert raw.lines["space.input_rate.low"] == 1  # written in the anchored mapping
    assert "space.input_rate.<<" not in raw.lines


def test_a_recursive_alias_does_not_hang_or_crash() -> None:
    raw = parse_sweep_text("space: &a [*a]\n", "r.yaml")
    assert raw.data["space"][0] is raw.data["space"]
    assert raw.lines["space"] == 1 and raw.lines["space.0"] == 1


# ----------------------------------------------------------------------------- YAML mistakes


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("name: x\ntrain:\n  epochs: [1, 2\ncv: {}\n", 4, "expected ',' or ']'"),
        ("train:\n  epochs: 3\n batch_size: 4\n", 3, "invalid YAML"),
        ("train:\n\tepochs: 3\n", 2, "a tab (column 1): indent with spaces, not tabs"),
        ("name: x\na: b: c\n", 2, "mapping values are not allowed here"),
        ("name: x\n---\nname: y\n", 2, "expected a single document"),
        ("name: 'unterminated\n", 2, "end of stream"),
        ("name: x\ncv: {folds: *nowhere}\n", 2, "undefined alias"),
        ("space: {? [a, b]: 1}\n", 1, "unhashable"),
    ],
)
def test_yaml_syntax_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    assert_one_line(parse_error(text, "bad.yaml"), "bad.yaml", line, None, "invalid YAML", fragment)


def test_python_tags_are_refused() -> None:
    err = parse_error("name: x\ntrain: !!python/object/apply:os.system [echo hi]\n")
    assert_one_line(err, "s.yaml", 2, None, "invalid YAML", "constructor")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("!!int abc", "!!int value 'abc'"), ("!!float abc", "!!float value 'abc'"),
     ("!!bool maybe", "!!bool value 'maybe'"), ("!!binary 'a'", "base64"),
     ("!!timestamp someday", "!!timestamp value 'someday'"), ("9" * 5000, "!!int value")],
)
def test_values_yaml_cannot_build_are_yaml_errors_with_a_line(value: str, fragment: str) -> None:
    err = parse_error(f"name: x\ncv:\n  folds: {value}\n")
    assert_one_line(err, "s.yaml", 3, None, "invalid YAML", fragment)


@pytest.mark.slow
def test_too_deep_nesting_is_one_error() -> None:
    depth = sys.getrecursionlimit() // 2 + 100  # two frames a level in the composer
    err = parse_error("space: " + "[" * depth + "]" * depth + "\n")
    assert_one_line(err, "s.yaml", None, None, "invalid YAML")


@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        ("train: {epochs: 5}\ncv: {}\ntrain: {epochs: 6}\n", 3, "train", 1),
        ("train:\n  epochs: 5\n  epochs: 6\n", 3, "train.epochs", 2),
        ("space:\n  - {placement: none, momentum: 0.5, momentum: 0.9}\n", 2, "space.0.momentum", 2),
        ("train:\n  0x10: 1\n  16: 2\n", 3, "train.16", 2),
        ("train:\n  1: a\n  true: b\n", 3, "train.True", 2),  # 1 == True: one key in Python
    ],
)
def test_a_key_written_twice_is_an_error(text: str, line: int, key: str, first: int) -> None:
    # PyYAML silently keeps the last one: a typo'd copy would quietly win.
    err = parse_error(text)
    assert_one_line(err, "s.yaml", line, key, f"duplicate key (first written on line {first})")


@pytest.mark.parametrize(("text", "line"), [("- a\n- b\n", 1), ("# hi\n\njust words\n", 3),
                                            ("42\n", 1)])
def test_the_top_level_must_be_a_mapping(text: str, line: int) -> None:
    assert_one_line(parse_error(text), "s.yaml", line, None, "must be a mapping of sections")


# ----------------------------------------------------------------------------- files


def test_load_sweep_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("train:\n  epochs: 4\n", encoding="utf-8")
    raw = load_sweep(path)
    assert raw.file == str(path) and raw.data == {"train": {"epochs": 4}}
    assert raw.lines["train.epochs"] == 2
    assert load_sweep(str(path)).data == raw.data


def test_a_missing_file_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    assert_one_line(info.value, str(path), None, None, "no such sweep file")


def test_a_directory_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(SweepError) as info:
        load_sweep(tmp_path)
    assert_one_line(info.value, str(tmp_path), None, None, "is a directory")


def test_a_binary_file_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: \xff\xfe\x00\n")
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    assert_one_line(info.value, str(path), None, None, "cannot read")


def test_windows_and_old_mac_line_endings_read_the_same(tmp_path: Path) -> None:
    # read as bytes (to bound the read): YAML itself must take \r\n and \r as line breaks
    for ending in ("\r\n", "\r"):
        path = tmp_path / "crlf.yaml"
        path.write_bytes(NESTED.replace("\n", ending).encode())
        raw = load_sweep(path)
        expected = parse_sweep_text(NESTED, str(path))
        assert (raw.data, raw.lines) == (expected.data, expected.lines)


@pytest.mark.parametrize(("text", "line", "column"), [
    ("name: x\ntrain:\n\tepochs: 3\n", 3, 1),        # a tab that indents
    ("name: x\ntrain:\n  epochs: 3\n  \tseed: 1\n", 4, 3),  # after spaces
    ("\tname: x\n", 1, 1),
    ("space:\n  momentum: [0.5,\n\t0.9]\n", 3, 1),  # inside a flow list
    ("name:\tx\n", 1, 6),                          # PyYAML refuses one after a colon too
])
def test_a_tab_says_to_indent_with_spaces_naming_the_line(tmp_path: Path, text: str,
                                                          line: int, column: int) -> None:
    path = tmp_path / "tabs.yaml"
    path.write_text(text)
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    assert_one_line(info.value, str(path), line, None,
                    f"invalid YAML: a tab (column {column}): indent with spaces, not tabs")
    assert "cannot start any token" not in str(info.value)


def test_a_tab_in_a_set_value_says_so_too() -> None:
    err = set_error(sonar(), "train.epochs=\t5")
    assert "train.epochs" in str(err) and "indent with spaces, not tabs" in str(err)


def test_the_command_says_to_indent_with_spaces_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "tabs.yaml"
    path.write_text("name: x\ntrain:\n\tepochs: 3\n")
    done = subprocess.run([sys.executable, "-m", "dropsweep", "validate", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr == (f"Error: {path}: line 3: invalid YAML: a tab (column 1): indent "
                           "with spaces, not tabs\n")


def test_a_yaml_error_in_a_file_names_the_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain:\n  epochs: [3\n")
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    assert info.value.file == str(path) and info.value.line == 4
    assert str(path) in str(info.value) and "line 4" in str(info.value)


# ----------------------------------------------------------------------------- --set


def sonar() -> RawSweep:
    path = REPO / "sweeps" / "sonar.yaml"
    return parse_sweep_text(path.read_text(), "sonar.yaml")


def brownlee() -> RawSweep:
    path = REPO / "sweeps" / "brownlee.yaml"
    return parse_sweep_text(path.read_text(), "brownlee.yaml")


@pytest.mark.parametrize(
    ("assignment", "key", "value"),
    [
        ("cv.folds=5", ("cv", "folds"), 5),
        ("cv.folds=5.0", ("cv", "folds"), 5.0),
        ("cv.folds='5'", ("cv", "folds"), "5"),
        ("name=other name", ("name",), "other name"),
        ("baseline.max_norm=off", ("baseline", "max_norm"), False),
        ("baseline.max_norm=", ("baseline", "max_norm"), None),
        ("baseline.max_norm=   ", ("baseline", "max_norm"), None),
        ("space.placement=[none, both]", ("space", "placement"), ["none", "both"]),
        ("space.momentum={low: 0.6, high: 0.7}", ("space", "momentum"), {"low": 0.6, "high": 0.7}),
        ("data.csv=a=b.csv", ("data", "csv"), "a=b.csv"),  # only the first '=' splits
        (" train . epochs = 7", ("train", "epochs"), 7),
    ],
)
def test_set_parses_the_value_as_yaml(assignment: str, key: tuple[str, ...], value: object) -> None:
    raw = apply_overrides(sonar(), [assignment])
    node = raw.data
    for part in key:
        node = node[part]
    assert node == value and type(node) is type(value)
    assert raw.overrides == {".".join(key): assignment}


def test_set_changes_one_key_and_keeps_its_neighbours() -> None:
    raw = apply_overrides(sonar(), ["train.epochs=7"])
    assert raw.data["train"] == {"epochs": 7, "batch_size": 16, "eval_every": 10}


def test_set_creates_missing_sections_and_remembers_it() -> None:
    raw = apply_overrides(parse_sweep_text("name: x\n", "x.yaml"),
                          ["space.learning_rate.low=0.05", "cv.folds=3"])
    assert raw.data == {"name": "x", "space": {"learning_rate": {"low": 0.05}}, "cv": {"folds": 3}}
    assert raw.created == {"space", "space.learning_rate", "cv"}
    # a later --set of the whole mapping means the user wrote it whole
    apply_overrides(raw, ["space.learning_rate={low: 0.01}"])
    assert raw.created == {"space", "cv"}


def test_set_fills_an_empty_section() -> None:
    raw = apply_overrides(parse_sweep_text("train:\n", "x.yaml"), ["train.epochs=3"])
    assert raw.data["train"] == {"epochs": 3}


def test_set_goes_deep_into_a_range() -> None:
    raw = apply_overrides(sonar(), ["space.learning_rate.low=0.5"])
    assert raw.data["space"]["learning_rate"] == {"low": 0.5, "high": 0.3, "log": True}
    assert raw.created == set()


def test_set_indexes_a_list_of_configurations() -> None:
    raw = apply_overrides(brownlee(), ["space.1.input_rate=0.3", "space.2={placement: none}"])
    assert raw.data["space"][1]["input_rate"] == 0.3
    assert raw.data["space"][2] == {"placement": "none"}
    assert raw.data["space"][0]["placement"] == "none"


def test_set_does_not_change_other_places_sharing_an_anchor() -> None:
    text = ("space:\n  input_rate: &r {low: 0.1, high: 0.4}\n  hidden_rate: *r\n")
    raw = apply_overrides(parse_sweep_text(text, "a.yaml"), ["space.input_rate.low=0.2"])
    assert raw.data["space"]["input_rate"] == {"low": 0.2, "high": 0.4}
    assert raw.data["space"]["hidden_rate"] == {"low": 0.1, "high": 0.4}


def test_set_does_not_change_the_caller_s_nested_data() -> None:
    data = {"train": {"epochs": 5}}
    apply_overrides(RawSweep(data=data, file="d.yaml"), ["train.epochs=9"])
    assert data == {"train": {"epochs": 5}}


@pytest.mark.parametrize(
    "assignment",
    ["noequals", "=5", "train.=5", ".epochs=5", "train..epochs=5", " =5", "train. =1"],
)
def test_set_needs_a_dotted_key_and_a_value(assignment: str) -> None:
    err = set_error(sonar(), assignment)
    assert_one_line(err, f"--set {assignment}", None, None, "expected section.key=value")


@pytest.mark.parametrize(
    ("assignment", "key", "fragment"),
    [
        ("train.epochs=[1, 2", "train.epochs", "invalid YAML value"),
        ("train.epochs=a: b: c", "train.epochs", "invalid YAML value"),
        ("train.epochs=!!int x", "train.epochs", "!!int value 'x'"),
        ("train.epochs=!!python/name:os.system", "train.epochs", "invalid YAML value"),
        ("name.first=x", "name.first", "name is a single value"),
        ("train.epochs.low=1", "train.epochs.low", "train.epochs is a single value"),
        ("space.placement=input", "space.placement", "space is a list of 3, it has no item"),
        ("space.3.placement=none", "space.3.placement", "no item '3'"),
        ("space.-1.placement=none", "space.-1.placement", "no item '-1'"),
        ("space.0.placement.x=1", "space.0.placement.x", "space.0.placement is a single value"),
    ],
)
def test_set_mistakes_name_the_set(assignment: str, key: str, fragment: str) -> None:
    err = set_error(brownlee(), assignment)
    assert_one_line(err, f"--set {assignment}", None, key, fragment)


def test_where_names_the_set_that_changed_a_key_or_its_section() -> None:
    raw = apply_overrides(sonar(), ["train.epochs=7", "space={}"])
    at = raw.where("train.epochs")
    assert at == {"file": "--set train.epochs=7", "line": None, "key": "train.epochs"}
    # the whole section was replaced: the file's lines inside it no longer count
    assert raw.where("space.learning_rate.low")["file"] == "--set space={}"
    assert raw.where("train.batch_size") == {"file": "sonar.yaml",
                                             "line": raw.lines["train.batch_size"],
                                             "key": "train.batch_size"}


def test_where_names_a_set_inside_the_key() -> None:
    # low > high on space.learning_rate is the fault of --set space.learning_rate.low
    raw = apply_overrides(sonar(), ["space.learning_rate.low=0.5"])
    assert raw.where("space.learning_rate")["file"] == "--set space.learning_rate.low=0.5"


def test_the_last_set_wins_and_is_the_one_named() -> None:
    raw = apply_overrides(sonar(), ["cv.folds=3", "cv.seed=1", "cv.folds=4"])
    assert raw.data["cv"]["folds"] == 4
    assert raw.where("cv.folds")["file"] == "--set cv.folds=4"
    assert raw.where("cv")["file"] == "--set cv.folds=4"  # the latest inside cv


def test_locate_without_any_record() -> None:
    assert locate("a.b", "f", {}, {}) == {"file": "f", "line": None, "key": "a.b"}
    assert locate("a.b", "f", {"a": 3}, {"ab": "ab=1"}) == {"file": "f", "line": 3, "key": "a.b"}


# ----------------------------------------------------------------------------- hostile files

# "Billion laughs": nine levels of 9-way aliases, 9**9 = 387 million "lol"s once expanded.
# It used to run for over a minute and ~4 GB, then die with a MemoryError traceback.
LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{level}: &{level} [{','.join([f'*{below}'] * 9)}]\n"
    for below, level in zip("abcdefgh", "bcdefghi"))
NODES_BOUND = f"more than {sweepfile.MAX_NODES:,} YAML nodes"


def test_the_billion_laughs_document_is_what_it_says() -> None:
    lines = LAUGHS.splitlines()
    assert len(lines) == 9
    assert lines[1] == "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]"
    assert lines[8] == "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]"


def test_billion_laughs_is_refused_naming_the_bound() -> None:
    SUITE["hostile sweep files"] += 1
    err = parse_error(LAUGHS)
    # line 6: f's nine *e are where the expansion first passes 100,000 nodes
    assert_one_line(err, "s.yaml", 6, None, "too large", NODES_BOUND, "aliases expanded")


def test_billion_laughs_in_a_set_value_is_refused() -> None:
    SUITE["hostile sweep files"] += 1
    flow = "{" + ", ".join(LAUGHS.splitlines()) + "}"
    err = set_error(sonar(), f"space.placement={flow}")
    assert_one_line(err, f"--set space.placement={flow}", None, "space.placement", NODES_BOUND)


def test_billion_laughs_made_of_merge_keys_is_refused() -> None:
    # merging copies keys too: <<: [*a x 9] nine levels deep flattens into 9**9 pairs
    SUITE["hostile sweep files"] += 1
    text = "a: &a {" + ", ".join(f"k{i}: {i}" for i in range(9)) + "}\n" + "".join(
        f"{level}: &{level} {{<<: [{', '.join([f'*{below}'] * 9)}]}}\n"
        for below, level in zip("abcdefgh", "bcdefghi"))
    assert_one_line(parse_error(text), "s.yaml", 5, None, NODES_BOUND)


def ladder(k: int) -> str:
    """Anchors nested k deep, each aliasing every one around it, then an alias from outside:
    walked from there, the simple paths through the cycles number about 2**k."""
    text = "".join(f"&a{i} [" + "".join(f"*a{j}, " for j in range(1, i)) for i in range(1, k))
    text += f"&a{k} [" + ", ".join(f"*a{j}" for j in range(1, k))
    return f"x: {text}{']' * k}\ny: *a{k}\n"


def test_recursive_aliases_count_as_the_walk_that_expands_them() -> None:
    # a small ladder loads (the walk stops at each alias back to a node on its path) ...
    assert ladder(3) == "x: &a1 [&a2 [*a1, &a3 [*a1, *a2]]]\ny: *a3\n"
    raw = parse_sweep_text(ladder(4), "l.yaml")
    assert raw.data["y"] is raw.data["x"][0][1][2]
    # ... a taller one, a few hundred bytes, is refused instead of walked 2**30 times
    SUITE["hostile sweep files"] += 1
    assert_one_line(parse_error(ladder(30)), "s.yaml", 1, None, NODES_BOUND)


@pytest.mark.parametrize(("limit", "refused"), [(48, False), (47, True)])
def test_the_bound_counts_aliases_as_the_nodes_they_repeat(monkeypatch, limit: int,
                                                          refused: bool) -> None:
    # 1 (root) + a: 1 + 1 + 3 + b: 1 + 1 + 10 aliases x 4 nodes = 48, from 18 composed
    monkeypatch.setattr(sweepfile, "MAX_NODES", limit)
    text = "a: &a [1, 2, 3]\nb: [" + ", ".join(["*a"] * 10) + "]\n"
    if refused:
        assert_one_line(parse_error(text), "s.yaml", 2, None, f"more than {limit} YAML nodes")
    else:
        assert parse_sweep_text(text, "s.yaml").data["b"] == [[1, 2, 3]] * 10


def test_a_file_of_too_many_plain_nodes_stops_composing_at_the_bound(monkeypatch) -> None:
    monkeypatch.setattr(sweepfile, "MAX_NODES", 100)
    text = "space:\n  placement:\n" + "".join(f"    - p{i}\n" for i in range(200))
    # root, space, its mapping, placement, the list: the 101st node is p95, on line 98
    assert_one_line(parse_error(text), "s.yaml", 98, None, "more than 100 YAML nodes")


def test_legitimate_aliases_and_merges_still_load() -> None:
    text = ("rates: &r {low: 0.1, high: 0.4}\n"
            "space:\n"
            "  input_rate: *r\n"
            "  hidden_rate:\n"
            "    <<: *r\n"
            "    high: 0.6\n"
            "  placement: &p [none, input]\n"
            "other: *p\n")
    raw = parse_sweep_text(text, "ok.yaml")
    assert raw.data["space"] == {"input_rate": {"low": 0.1, "high": 0.4},
                                 "hidden_rate": {"low": 0.1, "high": 0.6},
                                 "placement": ["none", "input"]}
    assert raw.lines["space.input_rate.low"] == 1 and raw.lines["space.hidden_rate.high"] == 6
    for name in ("sonar.yaml", "brownlee.yaml"):  # the shipped sweeps, far below the bounds
        load_sweep(REPO / "sweeps" / name)


@pytest.mark.slow
def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    SUITE["hostile sweep files"] += 1
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * (sweepfile.MAX_BYTES // 10 + 1))
    size = path.stat().st_size
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    assert_one_line(info.value, str(path), None, None, "too large for a sweep file",
                    f"{size:,} bytes", f"{sweepfile.MAX_BYTES:,}")
    path.write_text("# padding\n" * (sweepfile.MAX_BYTES // 10 - 1) + "name: x\n")
    assert load_sweep(path).data == {"name": "x"}  # just under: read as ever


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_an_endless_file_is_read_only_up_to_the_bound() -> None:
    SUITE["hostile sweep files"] += 1
    with pytest.raises(SweepError) as info:
        load_sweep("/dev/zero")  # stat says 0 bytes; reading it whole would never end
    assert_one_line(info.value, "/dev/zero", None, None,
                    f"more than {sweepfile.MAX_BYTES:,} bytes")


def test_the_command_refuses_billion_laughs_in_one_line(tmp_path: Path) -> None:
    SUITE["hostile sweep files"] += 1
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS)
    # a generous timeout, not a timing assertion: it used to take over a minute
    done = subprocess.run([sys.executable, "-m", "dropsweep", "validate", str(path)],
                          capture_output=True, text=True, timeout=20, cwd=tmp_path,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"Error: {path}: line 6: too large: {NODES_BOUND}")
