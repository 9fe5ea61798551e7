"""The README and the guides in docs/ are the user's manual: their examples must be true of
the code. The README is the front page; each topic has one guide, and a check below finds
what it checks in whichever of them holds it."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dropsweep import records
from dropsweep.cli import main
from dropsweep.sweep.config import (_SECTION_KEYS, BALANCES, DATASETS, PROTOCOLS, PRUNERS, SAMPLERS,
                              SCALES, Sweep, build_sweep)
from dropsweep.families import DEFAULT_FAMILY, family, family_names
from dropsweep.sweep.file import load_sweep, parse_sweep_text

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
GUIDES = {p.relative_to(REPO).as_posix(): p.read_text()
          for p in sorted((REPO / "docs").glob("*.md"))}
DOCS = {"README.md": README, **GUIDES}  # every page, by its path in the repository
EVERYTHING = "\n".join(DOCS.values())


def guide(name: str) -> str:
    return GUIDES[f"docs/{name}"]


def yaml_blocks() -> list[str]:
    return [block for text in DOCS.values()
            for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]


def the_block(starts: str) -> str:
    """The one YAML block of the docs that begins with ``starts``."""
    found = [b for b in yaml_blocks() if b.startswith(starts)]
    assert len(found) == 1, (starts, len(found))
    return found[0]


def test_the_annotated_example_is_the_shipped_sonar_sweep():
    annotated = build_sweep(parse_sweep_text(the_block("name: sonar "), "docs/sweep-file.md"))
    shipped = build_sweep(load_sweep(REPO / "sweeps" / "sonar.yaml"))
    assert annotated.to_dict() == shipped.to_dict()


def test_the_listed_configurations_are_the_brownlee_sweep():
    listed = the_block("space:\n  - {placement: none")
    shipped = (REPO / "sweeps" / "brownlee.yaml").read_text()
    assert listed.strip() in shipped


def test_every_command_is_in_the_readme_with_help():
    for name, command in main.commands.items():
        assert f"dropsweep {name}" in README, name
        assert command.help and "Example:" in command.help, name


def test_every_stored_attribute_is_documented():
    for name in (records.FOLD_ACCURACIES, records.ACCURACY_MEAN, records.ACCURACY_STD,
                 records.TEST_LOG_LOSS, records.TRAIN_ACCURACY, records.EPOCHS,
                 records.WALL_TIME, records.CONFIG, records.ROLE, records.SEED,
                 records.FAIL_REASON, records.INTERRUPTED, records.ENQUEUED,
                 records.STUDY_SWEEP):
        assert f"`{name}`" in guide("storage.md"), name


def test_the_error_example_is_what_dropsweep_prints(tmp_path, monkeypatch):
    example = re.search(r"\$ dropsweep search (\S+)\n(Error: .*)\n", EVERYTHING)
    assert example, "the docs show an error example"
    name, expected = example.groups()
    line = int(re.search(r"line (\d+)", expected).group(1))
    text = (REPO / "sweeps" / "sonar.yaml").read_text().splitlines()
    key_line = next(i for i, t in enumerate(text) if t.strip().startswith("epochs:"))
    text[key_line] = text[key_line].replace("epochs:", "epoch:")
    assert key_line + 1 == line
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text("\n".join(text) + "\n")
    result = CliRunner().invoke(main, ["search", name])
    assert result.exit_code == 2
    assert result.stderr.strip() == expected


def test_ci_runs_exactly_the_readme_test_command():
    block = re.search(r"<!-- test-command -->\n```bash\n(.*?)\n```\n<!-- /test-command -->",
                      README, flags=re.S)
    assert block
    script = (REPO / ".ci" / "run").read_text()
    assert "torch==2.13.0" in script
    extracted = subprocess.run(
        ["bash", "-c", "sed -n '/<!-- test-command -->/,/<!-- \\/test-command -->/p' README.md"
         " | grep -v '^<!--' | grep -v '^```'"], cwd=REPO, capture_output=True, text=True,
        check=True).stdout.strip()
    assert extracted == block.group(1)


def test_every_module_is_in_the_layout_table():
    """docs/design.md maps every module of the package, and names none that is not there."""
    layout = guide("design.md")
    package = REPO / "dropsweep"
    for path in sorted(package.rglob("*.[pc]*")):
        if path.name != "__main__.py" and path.suffix in (".py", ".c"):
            if path.name == "__init__.py" and path.parent == package:
                continue
            shown = path.relative_to(package).as_posix()  # families/mlp/engine.py
            if path.name == "__init__.py":
                shown = path.parent.relative_to(package).as_posix() + "/"  # families/mlp/
            assert f"{shown}`" in layout, shown
    for named in re.findall(r"`dropsweep/([\w/]+(?:\.py|\.c|/))`", layout):
        assert (package / named).exists(), f"docs/design.md names dropsweep/{named}"


def test_nothing_is_loaded_from_disk_unsafely():
    """Sweep files go through yaml's SafeLoader only; anything torch loads, weights only;
    numpy never unpickles; Python-serialised data (CIFAR-10's batches) only through
    images.py's restricted unpickler, which builds plain data and numpy arrays, nothing else."""
    for path in (REPO / "dropsweep").rglob("*.py"):  # the families' packages too
        text = path.read_text()
        unsafe = r"yaml\.(unsafe_load|full_load|load_all)\(|yaml\.load\((?![^)]*Loader=_Loader)"
        assert not re.search(unsafe, text), path.name
        assert "UnsafeLoader" not in text, path.name
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, (path.name, call)
        rest = text.replace("allow_pickle=False", "")
        if path.relative_to(REPO / "dropsweep").as_posix() == "data/images.py":
            assert "class _Restricted(pickle.Unpickler):" in rest and "def find_class" in rest
            assert not re.search(r"pickle\.(loads?|Unpickler)\(", rest), path.name
        else:
            assert "pickle" not in rest, path.name
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path.name, call)


def brownlee_section() -> str:
    text = guide("brownlee.md")
    start = text.index("## Brownlee's article, measured")
    return text[start:text.index("\n## ", start)]


def test_the_brownlee_reproduction_is_a_distribution_over_seeds():
    """Beside the article's single numbers: mean ± SD over seeds, the range, the number of
    seeds and the command that measured them; a single run only as one draw of them."""
    section = brownlee_section()
    command = re.search(r"python benchmarks/brownlee_seeds\.py --seeds (\d+)", section)
    assert command, "the section shows the command that measured the distribution"
    seeds = int(command.group(1))
    assert seeds >= 10
    assert "dropsweep search sweeps/brownlee.yaml && dropsweep report --study brownlee" in section
    header = re.search(r"^\| configuration \| article[^|]* \| [^|]*mean ± SD over (\d+) seeds "
                       r"\| range[^|]* \| [^|]*one draw[^|]* \|$", section, flags=re.M)
    assert header and int(header.group(1)) == seeds
    rows = re.findall(r"^\| ((?:baseline|input|hidden)[^|]*) \| (\d+\.\d\d)% \| "
                      r"(\d+\.\d\d)% ± (\d+\.\d\d) \| (\d+\.\d\d)–(\d+\.\d\d)% \| "
                      r"(\d+\.\d\d)% \(([^)]*) of (\d+)\) \|$", section, flags=re.M)
    assert [float(r[1]) for r in rows] == [86.04, 83.52, 83.59]  # the article's
    for _, _, mean, sd, low, high, draw, _, of in rows:
        assert 0 < float(sd) < 10 and float(low) <= float(mean) <= float(high)
        assert float(low) <= float(draw) <= float(high) and int(of) == seeds
    assert "ddof = 1" in section


def test_the_brownlee_script_accepts_the_documented_flags():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "brownlee_seeds", REPO / "benchmarks" / "brownlee_seeds.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # its dataclasses look their module up
    try:
        spec.loader.exec_module(script)
    finally:
        del sys.modules[spec.name]
    parser = script.make_parser()
    commands = re.findall(r"python benchmarks/brownlee_seeds\.py([^\n`]*)", EVERYTHING)
    assert commands
    for flags in commands:
        args = parser.parse_args(flags.split("#")[0].split())
        assert args.seeds >= 1
    args = parser.parse_args([])
    assert (args.seeds, args.engine, args.format) == (30, "auto", "markdown")
    parser.parse_args(["--seeds", "2", "--epochs", "3", "--folds", "3", "--engine", "torch",
                       "--format", "json"])


# ----------------------------------------------------------------------------- the front page


def test_the_readme_is_a_front_page_that_links_every_guide():
    assert len(README.splitlines()) <= 300, "the README is a front page: the rest goes to docs/"
    index = guide("README.md")
    for path in GUIDES:
        if path != "docs/README.md":
            assert f"]({path})" in README, f"the README links {path}"
            assert f"]({Path(path).name})" in index, f"docs/README.md lists {path}"


def _anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def test_every_link_between_the_pages_leads_somewhere():
    for path, text in DOCS.items():
        here = (REPO / path).parent
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            where = (here / file).resolve() if file else REPO / path
            assert where.exists(), f"{path}: the link {target} leads nowhere"
            if anchor:
                assert anchor in _anchors(where.read_text()), f"{path}: no heading #{anchor}"


def test_every_file_the_docs_name_exists():
    """Every example sweep, benchmark script, test file and example the pages name is there
    (what moved to docs/ still points at real files)."""
    named = {(path, name) for path, text in DOCS.items()
             for name in re.findall(r"\b((?:sweeps|benchmarks|tests|examples)/[\w./-]*\w)", text)}
    assert len(named) > 50
    for path, name in sorted(named):
        assert (REPO / name).exists(), f"{path} names {name}"


def test_the_docs_list_every_example_sweep():
    """Six ship (sweeps/*.yaml): the sweep file's guide lists each, and a list of the example
    sweeps anywhere names them all."""
    shipped = sorted(p.name for p in (REPO / "sweeps").glob("*.yaml"))
    table = guide("sweep-file.md")
    table = table[table.index("## The example sweeps"):table.index("## One annotated example")]
    assert sorted(re.findall(r"^\| `sweeps/([\w.-]+)` \|", table, flags=re.M)) == shipped
    for path, text in DOCS.items():
        for listed in re.findall(r"example sweeps \(([^)]*)\)", text):
            assert sorted(re.findall(r"sweeps/([\w.-]+\.yaml)", listed)) == shipped, path


def _commands() -> list[tuple[str, str]]:
    """Every ``dropsweep search|validate|run SWEEP ...`` the pages show, as (page, command):
    the lines of their bash blocks (continuations joined) and their inline code."""
    found = []
    for path, text in DOCS.items():
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                found.append((path, line))
        for span in re.findall(r"`(dropsweep\s+(?:search|validate|run)\s[^`]*)`", text):
            found.append((path, span.replace("\n", " ")))
    commands = []
    for path, line in found:
        words = shlex.split(line, comments=True)
        while words and (words[0] in ("/usr/bin/time", "-v") or "=" in words[0]):
            words = words[1:]  # a timer, an environment variable before the command
        if words[:1] == ["dropsweep"] and words[1:2] in (["search"], ["validate"], ["run"]):
            commands.append((path, words))
    return commands


def test_every_documented_override_validates(monkeypatch, tmp_path):
    """Each command the pages show with ``--set`` is a valid sweep as written: checked with
    ``dropsweep validate --no-data`` (the data of some are not on this machine). ``$PWD`` is
    a directory here; a one-letter placeholder (``search.seed=S``) stands for a number."""
    monkeypatch.chdir(REPO)
    runner = CliRunner()
    checked = []
    for path, words in _commands():
        if "--set" not in words:
            continue
        sets = [words[i + 1].replace("$PWD", str(tmp_path)) for i, w in enumerate(words)
                if w == "--set"]
        sets = [re.sub(r"=[A-Z]$", "=1", s) for s in sets]
        args = ["validate", "--no-data", words[2]] + [a for s in sets for a in ("--set", s)]
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (path, " ".join(words), result.output)
        checked.append(" ".join(sets))
    assert len(checked) >= 5
    assert any("space.placement=" in s for s in checked)  # the example that once was refused


# ----------------------------------------------------------------------------- the reference

# Keys whose default the code computes (or that have none): the table says so in words.
COMPUTED = {"custom": {"model.module", "model.sites", "model.sources", "space.placement"}}
GROUP = "g1"  # a custom module's site group, for the custom family's dimensions


def reference_tables() -> dict[str, dict[str, tuple[str, str]]]:
    """docs/sweep-file.md's "Every key": per table ("shared", or the family it is headed
    with), key -> (type, default) as written."""
    text = guide("sweep-file.md")
    text = text[text.index("## Every key"):]
    tables: dict[str, dict[str, tuple[str, str]]] = {}
    for part in re.split(r"^### ", text, flags=re.M)[1:]:
        heading = part.splitlines()[0]
        named = re.search(r"`family: (\w+)`", heading)
        rows: dict[str, tuple[str, str]] = {}
        for key, kind, default in re.findall(r"^\| `([^`]+)` \| (.*?) \| (.*?) \| .*\|$", part,
                                             flags=re.M):
            assert key not in rows, f"{key} twice in the table of {heading}"
            rows[key] = (kind, default)
        tables[named.group(1) if named else "shared"] = rows
    return tables


def accepted_keys() -> dict[str, dict[str, object]]:
    """What the code accepts, with its defaults: the generic sections' keys (what
    validation lets through) and each family's model keys and dimensions."""
    defaults = Sweep().to_dict()
    shared: dict[str, object] = {"name": defaults["name"], "model.family": DEFAULT_FAMILY}
    for section, keys in _SECTION_KEYS.items():
        shared.update({f"{section}.{key}": defaults[section][key] for key in keys})
    out = {"shared": shared}
    for name in family_names():
        fam = family(name)
        if name == "custom":
            fam = fam.bound_stored({"sites": {GROUP: "drop"}})
        model = fam.default_model().to_dict()
        rows: dict[str, object] = {f"model.{key}": model[key] for key in fam.model_keys}
        for dim in fam.dimensions:
            shown = "<group>_rate" if dim.name == f"{GROUP}_rate" else dim.name
            if dim.in_baseline:
                rows[f"baseline.{shown}"] = dim.baseline
            rows[f"space.{shown}"] = None if dim.default is None else dim.default.to_dict()
        out[name] = rows
    return out


def test_the_reference_table_has_every_key_the_code_accepts_with_its_default():
    tables, accepted = reference_tables(), accepted_keys()
    assert set(tables) == set(accepted), "one table for the shared sections, one per family"
    for table, keys in accepted.items():
        written = tables[table]
        assert sorted(written) == sorted(keys), (
            f"table {table}: missing {sorted(set(keys) - set(written))}, "
            f"not accepted {sorted(set(written) - set(keys))}")
        for key, default in keys.items():
            cell = written[key][1]
            if key in COMPUTED.get(table, ()):
                assert cell.startswith("—"), (table, key, cell)
                continue
            value = re.fullmatch(r"`([^`]*)`", cell)
            assert value, f"{table} {key}: the default {cell!r} is not one YAML value"
            # as `dropsweep validate` prints it: plain YAML, read back equal
            assert yaml.safe_load(value.group(1)) == json.loads(json.dumps(default)), (
                table, key, cell, default)
    every = [k for rows in tables.values() for k in rows]
    for top in _SECTION_KEYS:
        assert any(k == top or k.startswith(f"{top}.") for k in every), top


def test_the_reference_table_names_every_choice():
    from dropsweep.families.cnn import INITS, MAX_NORM_AXES, PADDINGS

    tables = reference_tables()
    choices = {("shared", "data.dataset"): DATASETS, ("shared", "data.scale"): SCALES,
               ("shared", "eval.protocol"): PROTOCOLS, ("shared", "search.sampler"): SAMPLERS,
               ("shared", "search.pruner"): PRUNERS, ("shared", "search.balance"): BALANCES,
               ("shared", "model.family"): family_names(), ("cnn", "model.init"): INITS,
               ("cnn", "model.padding"): PADDINGS, ("cnn", "model.max_norm_axis"): MAX_NORM_AXES,
               ("custom", "model.max_norm_axis"): MAX_NORM_AXES}
    for name in ("mlp", "cnn"):
        for dim in family(name).dimensions:
            if dim.choices and isinstance(dim.choices[0], str):
                choices[(name, f"space.{dim.name}")] = dim.choices
                if dim.in_baseline:
                    choices[(name, f"baseline.{dim.name}")] = dim.choices
    for (table, key), values in choices.items():
        kind = tables[table][key][0]
        for value in values:
            assert f"`{value}`" in kind, (table, key, value)
