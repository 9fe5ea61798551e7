"""The README is the user's manual: its examples must be true of the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from dropsweep import records
from dropsweep.cli import main
from dropsweep.sweep.config import build_sweep
from dropsweep.sweep.file import load_sweep, parse_sweep_text

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README, flags=re.S)


def test_the_annotated_example_is_the_shipped_sonar_sweep():
    annotated = build_sweep(parse_sweep_text(yaml_blocks()[0], "README.md"))
    shipped = build_sweep(load_sweep(REPO / "sweeps" / "sonar.yaml"))
    assert annotated.to_dict() == shipped.to_dict()


def test_the_listed_configurations_are_the_brownlee_sweep():
    listed = yaml_blocks()[1]
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
        assert f"`{name}`" in README, name


def test_the_error_example_is_what_dropsweep_prints(tmp_path, monkeypatch):
    example = re.search(r"\$ dropsweep search (\S+)\n(Error: .*)\n", README)
    assert example, "the README shows one error example"
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
    layout = README[README.index("## Layout"):]
    package = REPO / "dropsweep"
    for path in sorted(package.rglob("*.[pc]*")):
        if path.name != "__main__.py" and path.suffix in (".py", ".c"):
            if path.name == "__init__.py" and path.parent == package:
                continue
            shown = path.relative_to(package).as_posix()  # families/mlp/engine.py
            if path.name == "__init__.py":
                shown = path.parent.relative_to(package).as_posix() + "/"  # families/mlp/
            assert f"{shown}`" in layout, shown


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
    start = README.index("## Brownlee's article, measured")
    return README[start:README.index("\n## ", start)]


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
    commands = re.findall(r"python benchmarks/brownlee_seeds\.py([^\n`]*)", README)
    assert commands
    for flags in commands:
        args = parser.parse_args(flags.split("#")[0].split())
        assert args.seeds >= 1
    args = parser.parse_args([])
    assert (args.seeds, args.engine, args.format) == (30, "auto", "markdown")
    parser.parse_args(["--seeds", "2", "--epochs", "3", "--folds", "3", "--engine", "torch",
                       "--format", "json"])
