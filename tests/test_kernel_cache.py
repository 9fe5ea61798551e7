"""Where the C kernel is cached and what is loaded from there: only a library this user built
(directory and file owned by the effective user, writable by no one else), a broken one
rebuilt once, stale build temporaries swept, and one line for the user when the kernel cannot
be used or its cache was refused."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch
from helpers import SUITE

from dropsweep.families.mlp import engine as trainer
from dropsweep.families.mlp import kernel
from dropsweep.env import EnvError

CC = shutil.which("cc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc) to build libraries with")
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="planting a file as another user needs root (chown)")
NOBODY = 65534


@pytest.fixture
def kdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh kernel directory (not yet created) and a fresh load: the module's cache is
    restored afterwards, so the other tests keep the real kernel."""
    for name, value in (("_lib", kernel._UNSET), ("_why", None), ("_note", None),
                        ("_tiles", None)):
        monkeypatch.setattr(kernel, name, value)
    if CC is not None:
        monkeypatch.setenv("CC", CC)  # the cached name depends on the compiler's name
    monkeypatch.delenv("DROPSWEEP_KERNEL", raising=False)
    where = tmp_path / "kernels"
    monkeypatch.setenv("DROPSWEEP_KERNEL_DIR", str(where))
    return where


def reload(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setattr(kernel, "_lib", kernel._UNSET)
    return kernel.load()


def target(kdir: Path) -> Path:
    return kdir / kernel._name(os.environ["CC"])


def planted(tmp_path: Path) -> tuple[Path, Path]:
    """A library whose constructor writes a marker file as soon as anything loads it."""
    marker = tmp_path / "constructor-ran"
    source = tmp_path / "planted.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void)\n'
                      f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    lib = tmp_path / "planted.so"
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(lib), str(source)], check=True)
    return lib, marker


def plant(lib: Path | bytes, at: Path, mode: int = 0o755) -> None:
    """Put a copy of ``lib`` at ``at`` by renaming over it, as another process would: writing
    into a library this process has loaded would break its mapping."""
    at.parent.mkdir(mode=0o700, exist_ok=True)
    new = at.with_name("planting.tmp")
    new.write_bytes(lib if isinstance(lib, bytes) else lib.read_bytes())
    os.chmod(new, mode)
    os.replace(new, at)


def fake_compiler(tmp_path: Path, body: str) -> Path:
    """A stand-in for cc: a shell script (each run appends a line to ``runs``)."""
    script = tmp_path / "fakecc"
    script.write_text(f'#!/bin/sh\necho run >> "{tmp_path}/runs"\n{body}\n')
    script.chmod(0o755)
    return script


def works() -> bool:
    """The loaded library is the real kernel: its masks are the known stream."""
    mask = kernel.masks(1000, key=7, counter=0, rate=0.5)
    return set(torch.unique(mask).tolist()) == {0.0, 2.0}


def one_line(text: str | None) -> str:
    assert text is not None and "\n" not in text
    return text


@pytest.mark.slow
@needs_cc
def test_the_directory_is_created_0700_and_the_library_writable_by_no_one_else(kdir):
    old = os.umask(0o277)  # would leave mkdir(0o700) at 0o500: unwritable for its owner
    try:
        assert kernel.load() is not None and works()
    finally:
        os.umask(old)
    st = kdir.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o700)
    lib = target(kdir).lstat()
    assert stat.S_ISREG(lib.st_mode) and lib.st_uid == os.geteuid()
    assert lib.st_mode & 0o022 == 0
    assert kernel.unavailable() is None and kernel.notice() is None


@pytest.mark.slow
@needs_cc
def test_a_build_the_linker_left_group_writable_is_made_private(kdir, tmp_path, monkeypatch):
    """Linkers that create their output afresh give it the umask's mode (0o775 under umask
    002): the build is made private before the load checks it."""
    cc = fake_compiler(tmp_path, f'{CC} "$@" || exit 1\n'
                                 'while [ "$1" != -o ]; do shift; done\nchmod 775 "$2"')
    monkeypatch.setenv("CC", str(cc))
    assert kernel.load() is not None and works() and kernel.notice() is None
    assert stat.S_IMODE(target(kdir).stat().st_mode) == 0o755


@pytest.mark.slow
@needs_root
@needs_cc
def test_a_library_planted_by_another_user_never_runs(kdir, tmp_path, monkeypatch):
    SUITE["planted or corrupted kernels"] += 1
    lib, marker = planted(tmp_path)
    plant(lib, target(kdir))
    # positive control: our own file at that name is loaded (its constructor runs), found
    # not to be the kernel, and rebuilt
    assert kernel.load() is not None and works()
    assert marker.exists()
    assert "is not this dropsweep kernel; rebuilt it" in one_line(kernel.notice())
    marker.unlink()
    plant(lib, target(kdir))
    os.chown(target(kdir), NOBODY, NOBODY)
    assert reload(monkeypatch) is not None and works()
    assert not marker.exists()
    assert target(kdir).stat().st_uid == os.geteuid()  # replaced by our own build
    assert f"is owned by uid {NOBODY}, not by this user" in one_line(kernel.notice())
    assert kernel.unavailable() is None


@pytest.mark.slow
@needs_cc
@pytest.mark.parametrize("mode, who", [(0o775, "group"), (0o757, "others")])
def test_a_library_others_could_write_never_runs(kdir, tmp_path, mode, who):
    SUITE["planted or corrupted kernels"] += 1
    lib, marker = planted(tmp_path)
    plant(lib, target(kdir), mode)
    assert kernel.load() is not None and works()
    assert not marker.exists()
    assert stat.S_IMODE(target(kdir).stat().st_mode) & 0o022 == 0
    assert f"is writable by {who} (mode {mode:o}); rebuilt it" in one_line(kernel.notice())


@pytest.mark.slow
@needs_cc
def test_a_symlink_at_the_kernels_name_is_not_followed(kdir, tmp_path):
    SUITE["planted or corrupted kernels"] += 1
    lib, marker = planted(tmp_path)
    kdir.mkdir(mode=0o700)
    target(kdir).symlink_to(lib)
    assert kernel.load() is not None and works()
    assert not marker.exists()
    assert stat.S_ISREG(target(kdir).lstat().st_mode)  # the link itself was replaced
    assert lib.read_bytes()[:4] == b"\x7fELF"  # and what it pointed at left alone
    assert "is a symbolic link; rebuilt it" in one_line(kernel.notice())


@pytest.mark.slow
@needs_cc
def test_the_file_checked_is_the_file_loaded(kdir, tmp_path, monkeypatch):
    """A file swapped in at the name between the check and the load is not what runs."""
    SUITE["planted or corrupted kernels"] += 1
    kernel._build(os.environ["CC"])  # a good cached kernel, not loaded yet: loaded by path
    lib, marker = planted(tmp_path)  # before, glibc would hand that back for the same path
    real = kernel.ctypes.CDLL
    swapped = []

    def swap_then_load(path, *args, **kwargs):
        if not swapped:
            plant(lib, kdir / "swap.so")
            os.replace(kdir / "swap.so", target(kdir))
            swapped.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(kernel.ctypes, "CDLL", swap_then_load)
    assert kernel.load() is not None
    monkeypatch.setattr(kernel.ctypes, "CDLL", real)
    assert swapped and works()
    assert not marker.exists()


@pytest.mark.slow
@needs_cc
@pytest.mark.parametrize("how", ["other owner", "group-writable", "world-writable"])
def test_a_refused_directory_is_left_alone_and_the_kernel_built_privately(
        kdir, tmp_path, monkeypatch, how):
    SUITE["planted or corrupted kernels"] += 1
    if how == "other owner" and os.geteuid() != 0:
        pytest.skip("planting a directory as another user needs root (chown)")
    lib, marker = planted(tmp_path)
    plant(lib, target(kdir))
    if how == "other owner":
        os.chown(kdir, NOBODY, NOBODY)
    else:
        os.chmod(kdir, 0o770 if how == "group-writable" else 0o707)
    private = tmp_path / "private-tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    before = sorted(p.name for p in kdir.iterdir())
    assert kernel.load() is not None and works()
    assert not marker.exists()
    assert sorted(p.name for p in kdir.iterdir()) == before  # nothing written there
    assert list(private.iterdir()) == []  # the private build is gone once loaded
    note = one_line(kernel.notice())
    assert note.startswith(f"the C training kernel: the kernel directory {kdir} is ")
    assert "built for this process alone" in note and "DROPSWEEP_KERNEL_DIR" in note
    assert ("owned by uid 65534" if how == "other owner" else "writable by") in note
    assert kernel.unavailable() is None


@needs_cc
def test_a_refused_directory_and_no_private_one_falls_back_with_both_reasons(
        kdir, tmp_path, monkeypatch):
    kdir.mkdir(mode=0o777)
    os.chmod(kdir, 0o777)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    assert kernel.load() is None
    assert one_line(kernel.unavailable()) == (
        f"the kernel directory {kdir} is writable by group and others (mode 777); "
        "no private directory to build it in (No such file or directory)")
    assert list(kdir.iterdir()) == []


@pytest.mark.slow
@needs_cc
def test_a_truncated_library_is_rebuilt_once_and_works(kdir, monkeypatch):
    SUITE["planted or corrupted kernels"] += 1
    assert kernel.load() is not None
    reference = kernel.masks(5000, key=3, counter=17, rate=0.3)
    good = target(kdir).read_bytes()
    plant(good[:100], target(kdir))  # as a later run finds it
    assert reload(monkeypatch) is not None
    assert target(kdir).read_bytes() == good  # rebuilt (the build is deterministic)
    assert torch.equal(kernel.masks(5000, key=3, counter=17, rate=0.3), reference)
    note = one_line(kernel.notice())
    assert f"{target(kdir)} cannot be loaded (" in note and "; rebuilt it" in note
    assert reload(monkeypatch) is not None and kernel.notice() is None  # fixed for good


def test_a_library_that_fails_again_after_its_one_rebuild_falls_back_and_says_so(
        kdir, tmp_path, monkeypatch):
    SUITE["planted or corrupted kernels"] += 1
    # writes 100 bytes that are no library to the file after -o
    cc = fake_compiler(tmp_path, 'while [ "$1" != -o ]; do shift; done\n'
                                 'head -c 100 /dev/zero > "$2"')
    monkeypatch.setenv("CC", str(cc))
    plant(b"\0" * 100, target(kdir))  # a broken cached file
    assert kernel.load() is None
    assert (tmp_path / "runs").read_text().count("run") == 1  # rebuilt once, not more
    why = one_line(kernel.unavailable())
    assert why.startswith(f"freshly built, {target(kdir)} cannot be loaded (")
    notice = one_line(kernel.notice())
    assert notice == f"the C training kernel is not used: {why}; {kernel.COST}"
    assert "torch engine" in notice and "2.7x slower" in notice
    assert not trainer.use_kernel("auto", torch.device("cpu"))
    with pytest.raises(RuntimeError, match="cannot run here \\(freshly built, "):
        trainer.use_kernel("c", torch.device("cpu"))


def test_a_build_error_or_no_compiler_is_the_reason_given(kdir, tmp_path, monkeypatch):
    cc = fake_compiler(tmp_path, 'echo "kernel.c:1: error: boom" >&2\nexit 1')
    monkeypatch.setenv("CC", str(cc))
    assert kernel.load() is None
    why = one_line(kernel.unavailable())
    assert why == f"building it with {cc} failed (kernel.c:1: error: boom)"
    assert [p.name for p in kdir.iterdir()] == []  # its temporary removed
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert reload(monkeypatch) is None
    assert "no C compiler" in one_line(kernel.notice())


@pytest.mark.slow
@needs_cc
def test_stale_build_temporaries_are_swept_and_live_ones_kept(kdir):
    kdir.mkdir(mode=0o700)
    old = time.time() - 3600
    names = {"stale": f"{kernel.TMP_PREFIX}abc.so", "live": f"{kernel.TMP_PREFIX}def.so",
             "stale, named as before the prefix": "tmpk2_x9Qa7.so", "not ours": "tmpxyz.so"}
    for what, name in names.items():
        (kdir / name).write_bytes(b"partial")
        if what != "live":
            os.utime(kdir / name, (old, old))
    assert kernel.load() is not None
    assert not (kdir / names["stale"]).exists()
    assert not (kdir / names["stale, named as before the prefix"]).exists()
    assert (kdir / names["live"]).exists() and (kdir / names["not ours"]).exists()
    assert sorted(p.name for p in kdir.iterdir()) == sorted(
        [names["live"], names["not ours"], target(kdir).name])


@pytest.mark.slow
@needs_cc
def test_switching_the_kernel_off_is_silent_and_a_bad_setting_is_one_line(kdir, monkeypatch):
    monkeypatch.setenv("DROPSWEEP_KERNEL", "torch")
    assert kernel.load() is None and kernel.unavailable() is None and kernel.notice() is None
    assert not kdir.exists()  # nothing built
    monkeypatch.setenv("DROPSWEEP_KERNEL", "Auto")
    assert reload(monkeypatch) is not None and kernel.notice() is None
    monkeypatch.setenv("DROPSWEEP_KERNEL", "fortran")
    for _ in range(2):  # raised every time, never cached as "no kernel"
        with pytest.raises(EnvError, match="DROPSWEEP_KERNEL: must be one of c, auto, torch"):
            reload(monkeypatch)
    monkeypatch.delenv("DROPSWEEP_KERNEL")
    afile = kdir.parent / "afile"
    afile.write_text("")
    monkeypatch.setenv("DROPSWEEP_KERNEL_DIR", str(afile))
    with pytest.raises(EnvError, match="must name a directory"):
        reload(monkeypatch)


# ----------------------------------------------------------------------------- the command's one line

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "train.epochs=2", "--set", "train.eval_every=1", "--set", "cv.folds=3",
        "--trials", "2", "--device", "cpu"]


def _search(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "dropsweep", "search", str(REPO / "sweeps" / "sonar.yaml"), *TINY],
        cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


def _notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "C training kernel" in line]


@pytest.mark.slow
@needs_cc
def test_search_says_once_why_the_kernel_is_not_used_and_what_it_costs(tmp_path, sonar_dir):
    failing = _search(tmp_path, CC="/bin/false", DROPSWEEP_KERNEL_DIR=str(tmp_path / "k1"))
    assert failing.returncode == 0, failing.stderr
    assert "Traceback" not in failing.stderr
    assert _notes(failing.stderr) == [
        "note: the C training kernel is not used: building it with /bin/false failed (exit "
        "status 1); training falls back to the torch engine, measured 2.7x slower per trial "
        "(3.5x with trials batched; benchmarks/trial_speed.py)"]
    # a deliberate choice is silent, and so is a kernel that loads
    off = _search(tmp_path, DROPSWEEP_KERNEL="torch")
    fine = _search(tmp_path, DROPSWEEP_KERNEL_DIR=str(tmp_path / "k2"))
    assert _notes(off.stderr) == _notes(fine.stderr) == [], off.stderr + fine.stderr


@pytest.mark.slow
@needs_cc
def test_search_rebuilds_a_truncated_kernel_and_says_so(tmp_path, sonar_dir):
    kdir = tmp_path / "kernels"
    assert _search(tmp_path, CC=CC, DROPSWEEP_KERNEL_DIR=str(kdir)).returncode == 0
    (lib,) = list(kdir.glob("dropsweep_kernel_*.so"))
    good = lib.read_bytes()
    lib.write_bytes(good[:100])
    SUITE["planted or corrupted kernels"] += 1
    again = _search(tmp_path, CC=CC, DROPSWEEP_KERNEL_DIR=str(kdir))
    assert again.returncode == 0, again.stderr
    (note,) = _notes(again.stderr)
    assert note.startswith(f"note: the C training kernel: {lib} cannot be loaded") \
        and note.endswith("rebuilt it"), note
    assert lib.read_bytes() == good  # rebuilt, and used from now on without a word
    assert _notes(_search(tmp_path, CC=CC, DROPSWEEP_KERNEL_DIR=str(kdir)).stderr) == []
