"""The example sweeps shipped in the package: found by name, copied by ``init``, and really
in the wheel (built, installed in a fresh venv and run from an empty directory)."""

from __future__ import annotations

import os
import shutil
import site
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dropsweep.sweep import examples
from dropsweep.sweep.config import build_sweep
from dropsweep.errors import DropsweepError, SweepError
from dropsweep.sweep.examples import SweepSource, copy_example, example_names, example_path, resolve_sweep
from dropsweep.study.open import sweep_differences
from dropsweep.sweep.file import load_sweep

REPO = Path(__file__).resolve().parents[1]


def test_the_examples_are_the_repositorys_sweeps():
    assert example_names() == sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
    assert example_names() == ["brownlee", "cifar10", "digits", "digits-cnn", "fashion-mnist",
                               "sonar"]
    for name in example_names():
        assert example_path(name).read_bytes() == (REPO / "sweeps" / f"{name}.yaml").read_bytes()


def test_a_name_with_or_without_the_suffix_is_the_same_example():
    assert example_path("sonar") == example_path("sonar.yaml")
    assert example_path("sonar").name == "sonar.yaml"
    for unknown in ("nope", "nope.yaml", "sonar.yml", "Sonar", "", "sonar.yaml.yaml"):
        assert example_path(unknown) is None, unknown


def test_a_file_here_is_used_as_given(tmp_path):
    (tmp_path / "sonar.yaml").write_text("name: mine\n")
    assert resolve_sweep("sonar.yaml", tmp_path) == SweepSource("sonar.yaml")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "s.yaml").write_text("name: mine\n")
    assert resolve_sweep("sub/s.yaml", tmp_path) == SweepSource("sub/s.yaml")
    absolute = str(tmp_path / "sub" / "s.yaml")
    assert resolve_sweep(absolute, tmp_path / "sub") == SweepSource(absolute)


@pytest.mark.parametrize("given", ["sonar", "sonar.yaml"])
def test_a_bare_name_that_is_no_file_here_is_the_packaged_example(tmp_path, given):
    found = resolve_sweep(given, tmp_path)
    assert found == SweepSource(str(example_path("sonar")), "sonar")
    assert Path(found.path).is_absolute()  # workers and messages get a path that works anywhere


def test_a_directory_named_like_an_example_does_not_hide_it(tmp_path):
    (tmp_path / "sonar").mkdir()
    assert resolve_sweep("sonar", tmp_path).example == "sonar"


def test_an_unknown_name_is_one_line_naming_the_examples(tmp_path):
    with pytest.raises(SweepError) as caught:
        resolve_sweep("nope.yaml", tmp_path)
    assert caught.value.file == "nope.yaml"
    assert str(caught.value) == ("nope.yaml: no such sweep file, nor an example sweep of that "
                                 "name (the examples: brownlee, cifar10, digits, digits-cnn, "
                                 "fashion-mnist, sonar)")


def test_a_missing_path_is_left_to_the_reader_unless_it_is_the_readmes(tmp_path):
    # with a directory part, never an example: the sweep reader says it is missing
    assert resolve_sweep("elsewhere/nope.yaml", tmp_path) == SweepSource("elsewhere/nope.yaml")
    (tmp_path / "dir").mkdir()
    assert resolve_sweep("dir", tmp_path) == SweepSource("dir")  # the reader: "is a directory"
    # the README's path outside a checkout: told the name that works
    with pytest.raises(SweepError, match="the example ships with dropsweep: "
                                         "dropsweep search sonar.yaml"):
        resolve_sweep("sweeps/sonar.yaml", tmp_path)


def test_the_packaged_file_and_the_repositorys_make_the_same_stored_sweep(tmp_path):
    """A study made with either resumes with the other: the stored sweep is to_dict(), and
    the file it was read from takes no part in comparing sweeps."""
    copied = Path(tmp_path / copy_example("sonar", cwd=tmp_path).path)
    packaged = build_sweep(load_sweep(example_path("sonar")))
    elsewhere = build_sweep(load_sweep(copied))
    repo = build_sweep(load_sweep(REPO / "sweeps" / "sonar.yaml"))
    assert elsewhere.file != packaged.file
    assert packaged == elsewhere == repo
    assert packaged.to_dict() == elsewhere.to_dict() == repo.to_dict()
    assert sweep_differences(packaged.to_dict(), elsewhere.to_dict()) == []


def test_copy_writes_the_example_and_never_overwrites(tmp_path):
    written = copy_example("sonar", cwd=tmp_path)
    assert written == SweepSource("sonar.yaml", "sonar")
    assert (tmp_path / "sonar.yaml").read_bytes() == example_path("sonar").read_bytes()
    (tmp_path / "sonar.yaml").write_text("name: edited\n")
    with pytest.raises(DropsweepError) as caught:
        copy_example("sonar.yaml", cwd=tmp_path)
    assert str(caught.value) == ("sonar.yaml: already exists; not overwritten (remove it, or "
                                 "give another file with -o)")
    assert (tmp_path / "sonar.yaml").read_text() == "name: edited\n"


def test_copy_to_a_file_or_into_a_directory(tmp_path):
    assert copy_example("brownlee", "mine.yaml", tmp_path) == SweepSource("mine.yaml", "brownlee")
    assert (tmp_path / "mine.yaml").read_bytes() == example_path("brownlee").read_bytes()
    (tmp_path / "exp").mkdir()
    assert copy_example("sonar", "exp", tmp_path).path == os.path.join("exp", "sonar.yaml")
    assert copy_example("brownlee", "exp/", tmp_path).path == os.path.join("exp", "brownlee.yaml")
    # a slash says "into a directory": made when missing, with the example's own name
    assert copy_example("sonar", "absent/", tmp_path).path == os.path.join("absent", "sonar.yaml")
    assert (tmp_path / "absent" / "sonar.yaml").read_bytes() == example_path("sonar").read_bytes()


def test_copy_makes_the_directories_it_needs_and_still_never_overwrites(tmp_path):
    written = copy_example("digits", os.path.join("sub", "deeper", "new.yaml"), tmp_path)
    assert written == SweepSource(os.path.join("sub", "deeper", "new.yaml"), "digits")
    assert (tmp_path / "sub" / "deeper" / "new.yaml").read_bytes() == \
        example_path("digits").read_bytes()
    (tmp_path / "sub" / "deeper" / "new.yaml").write_text("name: edited\n")
    with pytest.raises(DropsweepError, match="already exists; not overwritten"):
        copy_example("sonar", "sub/deeper/new.yaml", tmp_path)
    assert (tmp_path / "sub" / "deeper" / "new.yaml").read_text() == "name: edited\n"
    (tmp_path / "notes").write_text("mine\n")  # a file where a directory is wanted
    for dest, shown in (("notes/", "notes/sonar.yaml"), ("notes/x/y.yaml", "notes/x/y.yaml")):
        with pytest.raises(DropsweepError) as caught:
            copy_example("sonar", dest, tmp_path)
        assert str(caught.value) == f"{shown}: cannot create its directory: notes is a file"
    assert (tmp_path / "notes").read_text() == "mine\n"


def test_copy_of_an_unknown_example_names_the_examples(tmp_path):
    with pytest.raises(SweepError, match=r"^nope: no example sweep of that name \(the "
                                         r"examples: brownlee, cifar10, digits, digits-cnn, fashion-mnist, sonar\)$"):
        copy_example("nope", cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_module_knows_nothing_of_the_command_line():
    code = ("import sys, dropsweep.sweep.examples; "
            "print(sorted(m for m in ('click', 'rich', 'torch', 'optuna') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=REPO)
    assert proc.stdout.strip() == "[]"


def test_in_a_source_checkout_the_examples_are_the_repositorys_files():
    """Not installed from a wheel (editable, or on PYTHONPATH): no copy to drift."""
    if (Path(examples.__file__).parent / "sweeps").is_dir():
        pytest.skip("dropsweep is installed from a wheel here")
    assert examples.examples_dir() == REPO / "sweeps"


# ----------------------------------------------------------------------------- the wheel


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


@pytest.mark.slow
def test_the_readmes_command_works_from_anywhere_with_the_wheel(tmp_path, sonar_dir):
    """The README's `dropsweep search sonar.yaml`, run by a dropsweep installed from its
    wheel into a fresh venv, from an empty directory, finds the packaged example."""
    # Build from a copy: the repository gets no build/ directory, and nothing stale in one
    # can reach the wheel. Offline: the build uses this environment's setuptools.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("dropsweep", "sweeps"):
        shutil.copytree(REPO / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist"),
          str(src)])
    (wheel,) = (tmp_path / "dist").glob("dropsweep-*.whl")

    # A fresh venv that sees this environment's packages (torch, optuna: nothing to
    # download) through a path file, after its own site-packages, where the wheel goes.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; "
                         "print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (purelib / "outer-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["DROPSWEEP_DATA_DIR"] = str(sonar_dir)
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
          "--disable-pip-version-check", "-q", str(wheel)], env=env)

    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run([str(python), "-c", "import dropsweep; print(dropsweep.__file__)"],
                 cwd=empty, env=env).stdout.strip()
    package = purelib / "dropsweep"
    assert Path(where) == package / "__init__.py"  # the wheel's, not the repository's
    packaged = package / "sweeps" / "sonar.yaml"
    assert packaged.read_bytes() == (REPO / "sweeps" / "sonar.yaml").read_bytes()

    db = tmp_path / "x.db"
    storage = f"sqlite:///{db}"
    run = _run([str(venv / "bin" / "dropsweep"), "search", "sonar.yaml", "--trials", "2",
                "--set", "train.epochs=2", "--storage", storage, "--quiet"], cwd=empty, env=env)
    assert (f"using the example sweep {packaged} (dropsweep init sonar copies it here to "
            "edit)") in run.stderr.splitlines()
    assert "2 of 2 trials finished" in run.stdout
    assert list(empty.iterdir()) == []  # nothing written here: the storage was elsewhere
    with sqlite3.connect(db) as con:
        states = [s for (s,) in con.execute("select state from trials order by number")]
    assert states == ["COMPLETE", "COMPLETE"]

    # the repository's file makes the same stored sweep: the study resumes with it
    again = _run([str(venv / "bin" / "dropsweep"), "search", str(REPO / "sweeps" / "sonar.yaml"),
                  "--trials", "2", "--set", "train.epochs=2", "--storage", storage, "--quiet"],
                 cwd=empty, env=env)
    assert "already has 2 finished trials" in again.stdout and "nothing to run" in again.stdout
    assert "using the example sweep" not in again.stderr


def test_init_that_cannot_finish_writing_leaves_no_half_sweep(tmp_path, monkeypatch):
    """A full disk while the example is copied: one line naming the file, and no half sweep
    left under its name (which the next init would refuse to overwrite)."""
    real_open = Path.open

    class Full:
        """The file, on a disk that fills up: part of a write lands, then it fails."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(bytes(data)[:10])
            self.f.flush()
            raise OSError(28, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def opening(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return Full(f) if mode == "xb" else f

    monkeypatch.setattr(Path, "open", opening)
    with pytest.raises(DropsweepError) as err:
        copy_example("sonar", cwd=tmp_path)
    assert str(err.value).startswith("sonar.yaml") and "No space left" in str(err.value)
    monkeypatch.undo()
    assert not (tmp_path / "sonar.yaml").exists()
    assert copy_example("sonar", cwd=tmp_path).path == "sonar.yaml"  # and a rerun writes it
