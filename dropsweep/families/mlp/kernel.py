"""The compiled CPU training kernel (``kernel.c``): build once, cache, call through ctypes.

On the CPU the batched torch step is bound by memory traffic (every element-wise pass
streams all models' weights, gradients and velocities) and by per-call overhead; the C
kernel trains one model at a time with its parameters in cache and is several times faster
(``benchmarks/trial_speed.py``). It is plain C compiled at first use with the system
compiler for this CPU (``-march=native``) and cached per source, flags and CPU, so nothing
is needed at install time. Where it cannot be built (no compiler) or does not apply (CUDA,
``DROPSWEEP_KERNEL=torch``), the trainer uses the torch path, which is also the reference
the tests hold this kernel to.

How the kernel cuts its products into register tiles is chosen per shape by timing its
first calls (:mod:`~dropsweep.families.mlp.tiles`): the faster cut differs between CPUs of
the same instruction set, and either gives the same numbers.

Loading a library runs its code as this user and the cached name is computable by anyone,
so only what this user built is loaded: directory and file owned by the effective user and
writable by no one else (the directory is created 0700; ``_dlopen`` closes the race between
check and load). A cached file refused or not loadable is rebuilt once. A refused directory
is not written to: the kernel is built for this process in a private temporary directory (a
second's compile, against 2.7-3.5x slower training without it). What went wrong is kept as
one line for the CLI (``notice``); this module prints nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import platform
import re
import shutil
import stat
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from dropsweep import env
from dropsweep.families.mlp.tiles import TILES, TileChooser

if TYPE_CHECKING:
    from dropsweep.data.protocols import Folds

SOURCE = Path(__file__).with_name("kernel.c")
# No reassociation and no contraction: the source fuses its multiply-adds itself (kernel.c:
# fused_v) and sums in the order it writes, so the last bits of every weight do not change
# with the vector width or with inlining (-fassociative-math changed no instruction here, and
# would be free to); not -ffast-math or -funsafe-math-optimizations, whose start-up code
# would flush subnormals to zero process-wide.
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
         "-ffp-contract=off", "-shared", "-fPIC", "-std=c99"]
BUILD_TIMEOUT = 120  # seconds
# Build temporaries carry our prefix, so the sweep never touches anyone else's files, and are
# swept only well past BUILD_TIMEOUT, so a concurrent worker's build is never pulled away.
TMP_PREFIX = "dropsweep_build_"
STALE_SECONDS = 600
# README, benchmarks/trial_speed.py: torch 0.714 vs c 0.264 s a trial at --batch 1, 0.577 vs
# 0.163 s with 16 trials batched.
COST = ("training falls back to the torch engine, measured 2.7x slower per trial "
        "(3.5x with trials batched; benchmarks/trial_speed.py)")
_UNSET = object()
_lib: object = _UNSET
_why: str | None = None  # why the kernel is not used (None: it is, or it is switched off)
_note: str | None = None  # it is used, but a cached file was replaced or the cache refused
_tiles: tuple[object, TileChooser] | None = None  # a library, which tile plan each shape runs
_held: list[int] = []  # descriptors of loaded libraries, never closed (see _dlopen)
_pool: ThreadPoolExecutor | None = None
_pool_threads = 0  # the threads _pool was made with (the most any call has asked for)


class _Unusable(Exception):
    """Why the kernel cannot be built or loaded (one line, for ``unavailable()``)."""


class _Refused(_Unusable):
    """The kernel directory itself cannot be used."""


def kernel_dir() -> Path:
    """$DROPSWEEP_KERNEL_DIR, else ``kernels/`` in dropsweep's cache directory."""
    where = env.path("DROPSWEEP_KERNEL_DIR")
    if where is not None:
        return where
    from dropsweep.data.dataset import cache_dir

    return cache_dir() / "kernels"


def _cpu_signature() -> str:
    """-march=native code must not run on another CPU sharing the cache (e.g. an NFS home)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + platform.processor() + flags


def _name(compiler: str) -> str:
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *FLAGS]).encode()
                            + _cpu_signature().encode()).hexdigest()[:16]
    return f"dropsweep_kernel_{digest}.so"


def _ours(st: os.stat_result, what: str, refusal: type[_Unusable] = _Unusable) -> None:
    """Refuse what another user owns or could write: loading it would run their code as us
    (root included: root may write anything, but a file another uid owns is still theirs)."""
    euid = os.geteuid()
    if st.st_uid != euid:
        raise refusal(f"{what} is owned by uid {st.st_uid}, not by this user (uid {euid})")
    if st.st_mode & 0o022:
        who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002))
                           if st.st_mode & bit)
        raise refusal(f"{what} is writable by {who} (mode {stat.S_IMODE(st.st_mode):o})")


def _open_dir(where: Path) -> int:
    """A descriptor of ``where`` (created 0700 if missing), swept, once it is ours and private.

    All later steps go through it (``dir_fd``): swapping the path afterwards changes nothing
    loaded. Symlinks on the way are followed on purpose (``~/.cache`` often is one): the
    directory they lead to is what is checked.
    """
    created = False
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(where, 0o700)
        created = True
    except FileExistsError:
        pass
    except OSError as e:
        raise _Refused(f"cannot create the kernel directory {where}: {e.strerror}") from None
    try:
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise _Refused(f"cannot open the kernel directory {where}: {e.strerror}") from None
    try:
        if created and os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o700)  # exactly: a umask such as 0o277 would leave it unwritable
        _ours(os.fstat(fd), f"the kernel directory {where}", _Refused)
    except BaseException:
        os.close(fd)
        raise
    _sweep(fd)
    return fd


def _ours_to_sweep(name: str) -> bool:
    """A build temporary of ours: our prefix, or the ``tmpXXXXXXXX.so`` of mkstemp's default
    that dropsweep 0.1 used before it had one (found only in our own checked directory)."""
    legacy = re.fullmatch(r"tmp[A-Za-z0-9_]{8}\.so", name) is not None
    return legacy or (name.startswith(TMP_PREFIX) and name.endswith(".so"))


def _sweep(dfd: int) -> None:
    """Remove our build temporaries that a killed build left behind (best effort)."""
    cutoff = time.time() - STALE_SECONDS
    with contextlib.suppress(OSError), os.scandir(dfd) as entries:
        for entry in entries:
            if _ours_to_sweep(entry.name):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.name, dir_fd=dfd)


def _compile(compiler: str, dfd: int, where: Path, name: str) -> None:
    """Build beside the target, then rename: concurrent workers never load a partial file."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".so", dir=where)
    except OSError as e:
        raise _Unusable(f"cannot write in {where}: {e.strerror}") from None
    os.close(fd)
    tmp_name = os.path.basename(tmp)
    how = f"building it with {compiler}"
    try:
        subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], check=True,
                       capture_output=True, timeout=BUILD_TIMEOUT)
        # the linker may create its output afresh with the umask's mode (group-writable under
        # umask 002), which the load would then refuse
        mode = stat.S_IMODE(os.stat(tmp_name, dir_fd=dfd).st_mode)
        os.chmod(tmp_name, mode & ~0o022, dir_fd=dfd)
        os.replace(tmp_name, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except subprocess.CalledProcessError as e:
        lines = [line.strip() for line in e.stderr.decode(errors="replace").splitlines()]
        first = next((line for line in lines if "error" in line), next(filter(None, lines), ""))
        raise _Unusable(f"{how} failed ({first[:200] or f'exit status {e.returncode}'})") from None
    except subprocess.TimeoutExpired:
        raise _Unusable(f"{how} took over {BUILD_TIMEOUT} s") from None
    except OSError as e:
        raise _Unusable(f"{how} failed ({e.strerror or e})") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name, dir_fd=dfd)


def _dlopen(dfd: int, name: str, label: Path) -> ctypes.CDLL | None:
    """``name`` in the checked directory, loaded if it is a regular file this user owns and
    no one else may write; None if there is none.

    Check and load must see the same file, or one swapped in between would run: it is opened
    without following a symlink (O_NOFOLLOW; O_NONBLOCK: a planted FIFO cannot hang us),
    checked on the descriptor (fstat), and the loader is handed /proc/self/fd/N, which names
    that very inode whatever happens to the path; no one else may write the inode, so its
    contents cannot change either. The descriptor stays open for good: glibc knows loaded
    libraries by path, and a reused /proc/self/fd/N would hand back the earlier library.
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as e:
        why = "is a symbolic link" if e.errno == errno.ELOOP else f"cannot be opened: {e.strerror}"
        raise _Unusable(f"{label} {why}") from None
    keep = False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unusable(f"{label} is not a regular file")
        _ours(st, str(label))
        path = f"/proc/self/fd/{fd}"
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            why = str(e).replace(f"{path}: ", "")
            raise _Unusable(f"{label} cannot be loaded ({why})") from None
        keep = True
        _held.append(fd)
        p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
        try:
            lib.dropsweep_epoch.restype = ctypes.c_int
            lib.dropsweep_epoch.argtypes = ([i64, i64, i64, p, i64, i64, i64, i64, i64, p, i64,
                                             f32, i64]
                                            + [p] * 22 + [p, i64, p, p, p, i64])
            lib.dropsweep_tile_plans.restype = ctypes.c_int
            lib.dropsweep_tile_plans.argtypes = []
            lib.dropsweep_masks.restype = None
            lib.dropsweep_masks.argtypes = [p, i64, ctypes.c_uint64, ctypes.c_uint64, f32]
            lib.dropsweep_order.restype = ctypes.c_int
            lib.dropsweep_order.argtypes = [p, p, i64, i64, p]
        except AttributeError:
            raise _Unusable(f"{label} is not this dropsweep kernel") from None
        return lib
    finally:
        if not keep:
            os.close(fd)


def _from(where: Path, compiler: str) -> tuple[ctypes.CDLL, str | None]:
    """The kernel cached in ``where``, built or rebuilt (once) as needed, and a note when a
    cached file was refused or broken and so replaced."""
    dfd = _open_dir(where)
    try:
        name, note = _name(compiler), None
        try:
            lib = _dlopen(dfd, name, where / name)
        except _Unusable as e:
            lib, note = None, f"{e}; rebuilt it"
        if lib is None:
            _compile(compiler, dfd, where, name)
            try:
                lib = _dlopen(dfd, name, where / name)
            except _Unusable as e:
                raise _Unusable(f"freshly built, {e}") from None
            assert lib is not None, "the build left no library"
        return lib, note
    finally:
        os.close(dfd)


def _compiler() -> str | None:
    """$CC, else cc or gcc on PATH."""
    return env.raw("CC") or shutil.which("cc") or shutil.which("gcc")


def _find() -> tuple[ctypes.CDLL | None, str | None, str | None]:
    """The library, why there is none, and what went wrong although there is one."""
    # "auto" is accepted as "c" (use it where possible): it is the engine's word for that,
    # and every value but "torch" meant so before this variable was checked
    if env.choice("DROPSWEEP_KERNEL", "c", ("c", "auto", "torch")) == "torch":
        return None, None, None
    compiler = _compiler()
    if not compiler:
        return None, "no C compiler to build it (no cc or gcc on PATH, no $CC)", None
    if not os.path.isdir("/proc/self/fd"):  # Linux's; _dlopen needs it to load safely
        return None, "no /proc/self/fd to load it from safely", None
    where = kernel_dir()
    try:
        lib, note = _from(where, compiler)
        return lib, None, note
    except _Refused as e:
        refused = e
    except _Unusable as e:
        return None, str(e), None
    # built in a fresh private directory, removed once loaded (the mapping and the held
    # descriptor keep the library)
    try:
        private = Path(tempfile.mkdtemp(prefix="dropsweep-kernel-"))
    except OSError as e:
        return None, f"{refused}; no private directory to build it in ({e.strerror})", None
    try:
        lib = _from(private, compiler)[0]
    except _Unusable as e:
        return None, f"{refused}; building it privately failed too: {e}", None
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return lib, None, (f"{refused}, so the kernel was built for this process alone (about a "
                       "second each run; set DROPSWEEP_KERNEL_DIR to a directory of your own)")


def _build(compiler: str) -> Path:
    """The cached library in ``kernel_dir()``, built if missing (not loaded, not checked)."""
    where = kernel_dir()
    dfd, name = _open_dir(where), _name(compiler)
    try:
        if not os.path.lexists(where / name):
            _compile(compiler, dfd, where, name)
    finally:
        os.close(dfd)
    return where / name


def load() -> ctypes.CDLL | None:
    """The kernel library, or None where it is switched off or cannot be used here (then
    ``unavailable()`` says why). A bad DROPSWEEP_KERNEL or DROPSWEEP_KERNEL_DIR raises
    :class:`dropsweep.env.EnvError` (and leaves nothing cached, so it is raised again)."""
    global _lib, _why, _note
    if _lib is _UNSET:
        lib, why, note = _find()
        if lib is not None:
            _chooser(lib)  # (a bad DROPSWEEP_KERNEL_TILES is said now, not mid-training)
        _lib, _why, _note = lib, why, note
    return _lib  # type: ignore[return-value]


def _chooser(lib: Any) -> TileChooser:
    """The tile chooser of ``lib`` (made anew when the library changes: a test's build of
    another width may have other plans). DROPSWEEP_KERNEL_TILES (auto, or a plan's name)
    forces one, for benchmarks: every plan trains to the same numbers."""
    global _tiles
    if _tiles is None or _tiles[0] is not lib:
        plans = int(lib.dropsweep_tile_plans())
        forced = env.choice("DROPSWEEP_KERNEL_TILES", "auto", ("auto", *TILES))
        if forced != "auto" and TILES.index(forced) >= plans:
            raise env.EnvError("DROPSWEEP_KERNEL_TILES",
                               f"is {forced!r}, but this CPU's kernel has only "
                               f"{', '.join(TILES[:plans])} tiles (wide ones need AVX-512)")
        _tiles = (lib, TileChooser(plans, None if forced == "auto" else forced))
    return _tiles[1]


def _identity() -> str:
    """The built library's name, which hashes its source, flags, compiler and this CPU's
    flags: a choice of tile plan made for one build or CPU is not taken for another (the
    cache key's CPU model name alone can be as vague as "AMD EPYC" in a virtual machine)."""
    return _name(_compiler() or "")


def _plan(tiles: TileChooser, shape: tuple[Any, ...]) -> tuple[int, str | None]:
    """The tile plan of a call of ``shape`` and, while it is on trial, the key under which
    the choice is remembered across processes (dropsweep.train.forms' cache)."""
    if not tiles.deciding(shape):
        return tiles.plan(shape), None
    from dropsweep.train import forms  # (only while a shape is on trial)

    sizes, batch, threads, u8 = shape
    key = forms.cache_key("mlp-kernel-tiles", {
        "sizes": list(sizes), "batch": batch, "kernel_threads": threads, "u8": bool(u8),
        "kernel": _identity()}, torch.device("cpu"))
    known = forms.cached(key)
    if known is not None:
        tiles.settle(shape, known)
    return tiles.plan(shape), key if tiles.deciding(shape) else None


def tile_plans() -> tuple[str, ...]:
    """The tile plans of this CPU's kernel (narrow, and wide where it has AVX-512)."""
    lib = load()
    assert lib is not None, "the C kernel is not available"
    return TILES[:int(lib.dropsweep_tile_plans())]


def use_tiles(name: str | None) -> None:
    """Run every later call with tile plan ``name``, or (None) choose afresh (by timing, or
    as remembered from an earlier run): for benchmarks that time each plan side by side
    (DROPSWEEP_KERNEL_TILES no longer applies)."""
    global _tiles
    lib = load()
    assert lib is not None, "the C kernel is not available"
    _tiles = (lib, TileChooser(int(lib.dropsweep_tile_plans()), name))


def tile_choices() -> dict[Any, str]:
    """The tile plan chosen for each shape trained so far in this process, keyed by (layer
    sizes, minibatch size, threads, 8-bit rows); empty before a shape's trial calls end."""
    return {} if _tiles is None else _tiles[1].chosen()


def unavailable() -> str | None:
    """Why the C kernel cannot be used here, in a few words; None when it loaded, or when
    DROPSWEEP_KERNEL=torch switched it off (a deliberate choice needs no warning). Loads
    (and if need be builds) the kernel first."""
    load()
    return _why


def notice() -> str | None:
    """The one line to show the user once per run, or None: why the kernel is not used and
    what that costs, or what went wrong with its cache although it is used."""
    why = unavailable()
    if why is not None:
        return f"the C training kernel is not used: {why}; {COST}"
    return f"the C training kernel: {_note}" if _note else None


def applies(device: torch.device) -> bool:
    return device.type == "cpu" and load() is not None


def _ptr(t: torch.Tensor) -> int:
    assert t.is_contiguous() and t.device.type == "cpu"
    return t.data_ptr()


def _ptrs(ts: Sequence[torch.Tensor]) -> ctypes.Array:
    return (ctypes.c_void_p * len(ts))(*[_ptr(t) for t in ts])


def _written(params: tuple[Sequence[torch.Tensor], ...],
             out: tuple[Sequence[torch.Tensor], ...] | None) -> tuple[Sequence[torch.Tensor], ...]:
    """Where :func:`train_epoch` writes the trained parameters: ``out``, checked to be shaped
    as ``params``, else ``params`` themselves (in place)."""
    if out is None:
        return params
    assert all(len(o) == len(p) and all(a.shape == b.shape and a.dtype == b.dtype
                                        for a, b in zip(o, p))
               for o, p in zip(out, params, strict=True)), "out is not shaped as the parameters"
    return out


def _scored(folds: Folds, fold_of: torch.Tensor, n_train: torch.Tensor,
            scores: torch.Tensor | None, training_rows: bool
            ) -> tuple[list[Any], torch.Tensor | None]:
    """The kernel's scoring arguments: each model's rows (held-out, or its training rows),
    their width, each model's count of them and ``scores``, none without ``scores``; and the
    tensor of counts, to be held while the kernel reads it."""
    if scores is None:
        return [None, 0, None, None], None
    assert scores.dtype == torch.float32 and tuple(scores.shape) == (2, int(fold_of.numel()))
    if training_rows:
        rows, width, count = folds.train_idx, folds.max_train, n_train
    else:
        rows, width, count = folds.test_idx, folds.max_test, folds.n_test[fold_of]
    count = count.contiguous()
    return [_ptr(rows), width, _ptr(count), _ptr(scores)], count


def train_epoch(
    weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
    vweights: Sequence[torch.Tensor], vbiases: Sequence[torch.Tensor],
    folds: Folds, fold_of: torch.Tensor, order: torch.Tensor, n_train: torch.Tensor,
    lr: torch.Tensor, momentum: torch.Tensor, max_norm: torch.Tensor,
    input_rate: torch.Tensor, hidden_rate: torch.Tensor, key: torch.Tensor, counter: torch.Tensor,
    batch_size: int, threads: int, batches: tuple[int, int],
    scores: torch.Tensor | None = None, score_training_rows: bool = False,
    out: tuple[Sequence[torch.Tensor], ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatches ``batches`` = [first, end) of an epoch of every model (in place, unless
    ``out``), the models split over ``threads`` threads; return which models now hold a
    non-finite parameter, and which of those a NaN (bool ``[models]``).

    With ``order`` of several epochs (``[epochs, models, rows]``: whole epochs), each model
    trains them all in a row while its parameters stay in cache, and stops after an epoch
    that left it non-finite; the flags are then per epoch (``[epochs, models]``).

    Rows are read from ``folds`` by index (8-bit rows scaled as read), never copied.
    ctypes releases the GIL during the call, so the threads really run in parallel.
    ``counter`` (int64 viewed as uint64, one per model) advances with the masks drawn.
    ``scores`` (float32 ``[2, models]``), given, receives each model's rows predicted right
    and summed loss on its held-out rows (its training rows: ``score_training_rows``) after
    the last epoch, what :func:`dropsweep.train.loop.chunked_scores` sums; ``order`` of 0
    epochs then scores the models as they are, training none. ``out`` (weights, biases,
    weight and bias velocities, each shaped as the parameters), given, receives the trained
    parameters, and the parameters passed are left as they were. The products are cut into
    the tiles :mod:`~dropsweep.families.mlp.tiles` chose for this shape (each plan in turn on
    its first calls): the numbers are the same whichever runs.
    """
    lib = load()
    assert lib is not None, "the C kernel is not available"
    models = int(weights[0].shape[0])
    epochs = 1 if order.dim() == 2 else int(order.shape[0])
    status = torch.zeros(epochs, models, dtype=torch.int8)
    sizes = torch.tensor([weights[0].shape[1]] + [int(w.shape[2]) for w in weights],
                         dtype=torch.int64)
    u8 = folds.divisor is not None
    table_of = folds.table_of[fold_of].contiguous()
    params = (weights, biases, vweights, vbiases)
    scored, counts = _scored(folds, fold_of, n_train, scores, score_training_rows)
    args = [len(weights), _ptr(sizes), batch_size, epochs, batches[0], batches[1],
            folds.max_train,
            _ptr(folds.rows), int(u8), float(folds.divisor or 1.0), int(folds.rows.shape[1]),
            _ptr(table_of), _ptr(folds.labels), _ptr(folds.train_idx), _ptr(fold_of),
            _ptr(order), _ptr(n_train), *[_ptrs(t) for t in params],
            *[_ptrs(t) for t in _written(params, out)],
            _ptr(lr), _ptr(momentum), _ptr(max_norm), _ptr(input_rate), _ptr(hidden_rate),
            _ptr(key), _ptr(counter), _ptr(status), *scored]
    # every thread takes the next model as it comes free (a shared claim counter)
    parts = max(1, min(threads, models))
    claim = torch.zeros(1, dtype=torch.int64)
    args.append(_ptr(claim) if parts > 1 else None)

    tiles = _chooser(lib)
    shape = (tuple(sizes.tolist()), batch_size, parts, u8)
    plan, remember_as = _plan(tiles, shape)
    args.append(plan)

    def run(i: int) -> int:
        return lib.dropsweep_epoch(0, models, *args)

    start = time.perf_counter()
    codes = _on_threads(parts, run)
    seconds = time.perf_counter() - start
    del counts  # (held until here: the kernel read it)
    if any(codes):
        raise MemoryError("the training kernel could not allocate its scratch memory (or was "
                          "called with a malformed batch)")
    # (a call that only scores has no work: not timed)
    chosen = tiles.record(shape, plan, seconds, models * epochs * (batches[1] - batches[0]))
    if chosen is not None and remember_as is not None:
        from dropsweep.train import forms

        forms.remember(remember_as, chosen, tiles.best(shape))
    if order.dim() == 2:
        status = status[0]
    return status > 0, status == 2


def _on_threads(parts: int, run: Callable[[int], int]) -> list[int]:
    """``run(0)`` .. ``run(parts - 1)`` on the kernel's pool (of at least ``parts`` threads).

    The threads of a pool train, this one waits: waiting on a lock, it runs a signal's
    handler at once (Ctrl-C, and a second one that cuts a stop short), where inside a C call
    it would not until the call returned — a whole span — and two Ctrl-C would be one."""
    global _pool, _pool_threads
    if _pool is None or _pool_threads < parts:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _pool_threads = ThreadPoolExecutor(max_workers=parts), parts
    return list(_pool.map(run, range(parts)))


def sorted_positions(keys: torch.Tensor, n_train: torch.Tensor, threads: int = 1
                     ) -> torch.Tensor:
    """:func:`dropsweep.train.loop.epoch_order`'s sort, in C and linear time: each row's
    positions by float32 key, ties by position, positions from ``n_train`` on last; the rows
    shared among ``threads`` threads (a span's epochs sorted at once: 160 models x 9 epochs
    of Sonar, 1.5 ms on one)."""
    lib = load()
    assert lib is not None, "the C kernel is not available"
    if keys.dtype != torch.float32 or n_train.dtype != torch.int64 or keys.dim() != 2:
        raise TypeError(f"keys must be [models, width] float32 and n_train int64, not "
                        f"{keys.dtype} {tuple(keys.shape)} and {n_train.dtype}")
    keys, n_train = keys.contiguous().cpu(), n_train.contiguous().cpu()
    if n_train.numel() != keys.shape[0]:
        raise ValueError(f"{keys.shape[0]} rows of keys, {n_train.numel()} n_train")
    out = torch.empty(keys.shape, dtype=torch.int64)
    rows, width = int(keys.shape[0]), int(keys.shape[1])
    parts = max(1, min(threads, rows // 64))  # (a few rows are not worth a thread)
    cuts = [rows * i // parts for i in range(parts + 1)]

    def run(i: int) -> int:
        first, n = cuts[i], cuts[i + 1] - cuts[i]
        return lib.dropsweep_order(_ptr(keys) + 4 * first * width, _ptr(n_train) + 8 * first,
                                   n, width, _ptr(out) + 8 * first * width)

    if any(_on_threads(parts, run) if parts > 1 else [run(0)]):
        raise MemoryError("the training kernel could not allocate its scratch memory")
    return out


def masks(n: int, key: int, counter: int, rate: float) -> torch.Tensor:
    """``n`` dropout mask values exactly as the kernel draws them (for tests)."""
    lib = load()
    assert lib is not None, "the C kernel is not available"
    out = torch.empty(n, dtype=torch.float32)
    lib.dropsweep_masks(_ptr(out), n, key, counter, rate)
    return out
