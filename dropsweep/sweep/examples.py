"""The example sweeps that ship with dropsweep, found by name.

The README tells users to run ``dropsweep search sonar.yaml``; that must work from any
directory, with dropsweep installed from a wheel. The repository keeps the examples in
``sweeps/`` (one copy); the wheel puts them inside the package as ``dropsweep/sweeps/``
(pyproject's ``package-dir``). A SWEEP argument that is a file is used as given; a bare
name that is not (``sonar``, ``sonar.yaml``) is looked up among the examples.

Nothing here knows of click or rich: the CLI says what was used, and how.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dropsweep.errors import DropsweepError, SweepError

SUFFIX = ".yaml"


def examples_dir() -> Path:
    """Where the example sweeps are: inside the installed package (a wheel), else the
    ``sweeps/`` beside the package in a source checkout (an editable install, or the
    checkout on PYTHONPATH), where they are the repository's own files."""
    packaged = resources.files("dropsweep") / "sweeps"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sweeps"


def example_names() -> list[str]:
    """The examples' names, sorted: what ``dropsweep init NAME`` and a bare SWEEP take."""
    folder = examples_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob(f"*{SUFFIX}") if p.is_file())


def example_path(name: str) -> Path | None:
    """The packaged file of the example ``name`` (``sonar`` or ``sonar.yaml``), if any."""
    stem = name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name
    if stem not in example_names():
        return None
    return examples_dir() / f"{stem}{SUFFIX}"


def _available() -> str:
    return ", ".join(example_names()) or "none installed"


@dataclass(frozen=True)
class SweepSource:
    """The file a SWEEP argument names, and the example's name when it is a packaged one."""

    path: str
    example: str | None = None


def _has_directory(given: str) -> bool:
    return any(sep and sep in given for sep in (os.sep, os.altsep))


def resolve_sweep(given: str, cwd: Path | None = None) -> SweepSource:
    """The sweep file to read for ``given``.

    A file is always used as given. A bare name (no directory part) that is not a file
    here is an example's name; anything else is left to the sweep reader, which says what
    is wrong with it (a directory, a missing file). A missing ``sweeps/sonar.yaml`` (the
    README's path, outside a checkout) is told where the example is.
    """
    here = Path.cwd() if cwd is None else cwd
    path = here / given
    if path.is_file():
        return SweepSource(given)
    name = Path(given).name
    if _has_directory(given):
        if not path.exists() and example_path(name) is not None:
            raise SweepError(f"no such sweep file; the example ships with dropsweep: "
                             f"dropsweep search {name}", file=given)
        return SweepSource(given)
    found = example_path(given)
    if found is not None:
        return SweepSource(str(found), found.stem)
    if path.exists():
        return SweepSource(given)
    raise SweepError(f"no such sweep file, nor an example sweep of that name (the examples: "
                     f"{_available()})", file=given)


def copy_example(name: str, dest: str | Path | None = None,
                 cwd: Path | None = None) -> SweepSource:
    """Copy the example ``name`` to ``dest`` (default ``NAME.yaml``; into it when it is a
    directory or ends with a slash) to edit, making the directories it needs; returns what
    was written, from which example. Never overwrites: an edited sweep is the user's work."""
    source = example_path(name)
    if source is None:
        raise SweepError(f"no example sweep of that name (the examples: {_available()})",
                         file=name)
    here = Path.cwd() if cwd is None else cwd
    shown = Path(source.name) if dest is None else Path(dest)
    into = isinstance(dest, str) and dest.endswith(tuple(s for s in (os.sep, os.altsep) if s))
    if into or (here / shown).is_dir():
        shown = shown / source.name
    try:
        (here / shown).parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in reversed(shown.parents) if (here / p).is_file()),
                        shown.parent)
        raise DropsweepError(f"cannot create its directory: {blocking} is a file",
                             file=shown) from None
    except OSError as exc:
        raise DropsweepError(f"cannot create its directory: {exc.strerror or exc}",
                             file=shown) from None
    try:
        f = (here / shown).open("xb")  # exclusive: refuses a file, even one made now
    except FileExistsError:
        raise DropsweepError("already exists; not overwritten (remove it, or give another "
                             "file with -o)", file=shown) from None
    except OSError as exc:
        raise DropsweepError(f"cannot write: {exc.strerror or exc}", file=shown) from None
    try:
        with f:
            f.write(source.read_bytes())
    except BaseException as exc:  # ours, half written (a full disk, a Ctrl-C): not left
        (here / shown).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DropsweepError(f"cannot write: {exc.strerror or exc}", file=shown) from None
        raise
    return SweepSource(str(shown), source.stem)
