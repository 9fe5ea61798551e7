"""The one epoch loop every model family shares: checkpoints, pruning, divergence, stop.

A family's *engine* holds a batch of models — every split of several trials, model ``m``
belonging to trial ``trial_of[m]`` and split ``fold_of[m]`` — and knows how to train them one
epoch, score them and drop some. This loop decides everything else, the same way for every
family: when to score on the held-out rows, which trials the pruner stops, which diverged
(a non-finite parameter ends its trial with the reason), and when Ctrl-C ends the batch.
It knows nothing of Optuna: the caller passes ``on_checkpoint`` to hear held-out accuracy
every few epochs and to stop (prune) trials.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, cast

import numpy as np
import torch

if TYPE_CHECKING:
    from dropsweep.data.protocols import Folds


@dataclass
class TrialResult:
    """What one trial's splits produced."""

    fold_accuracies: list[float] = field(default_factory=list)
    test_log_loss: float | None = None
    train_accuracy: float | None = None
    epochs: int = 0
    wall_time: float = 0.0
    failure: str | None = None  # "loss became NaN at epoch 3, fold 2"
    pruned: bool = False
    interrupted: bool = False  # stopped by should_stop() (Ctrl-C, SIGTERM): not a result
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, mean held-out acc)
    # The trained models (model f = split f), for trials that trained to the end: whatever
    # the family's engine hands out (the MLP's is a BatchedMLP).
    model: Any = field(default=None, repr=False, compare=False)

    def state(self) -> dict[str, Any]:
        """The result so far, in numbers (a checkpoint keeps it; not the model)."""
        return {"fold_accuracies": list(self.fold_accuracies), "epochs": self.epochs,
                "wall_time": self.wall_time, "failure": self.failure, "pruned": self.pruned,
                "curve": [list(point) for point in self.curve]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TrialResult:
        return cls(fold_accuracies=list(state["fold_accuracies"]), epochs=state["epochs"],
                   wall_time=state["wall_time"], failure=state["failure"],
                   pruned=state["pruned"], curve=[(int(e), float(a)) for e, a in state["curve"]])

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.fold_accuracies))

    @property
    def accuracy_std(self) -> float:
        return float(np.std(self.fold_accuracies))  # ddof=0, as Brownlee reports


# on_checkpoint(epoch, accuracies) -> indices of trials to stop; accuracies[i] is the mean
# held-out accuracy of trial i (None when trial i is no longer training).
CheckpointHook = Callable[[int, list[float | None]], Sequence[int]]


# on_progress(epochs) -> None: the batch's progress in epochs (3.25: a quarter into the 4th)
ProgressHook = Callable[[float], None]

# The work (multiply-adds over the batch's models) an engine does between two looks at the
# stop flag and the progress display: a fraction of a second on a CPU, so Ctrl-C stops a
# long epoch within about a second (benchmarks/large_rows.py measures it).
SLICE_MACS = 1e9


def _fits(budget: float, each: float) -> int:
    """How many pieces of ``each`` multiply-adds fit in ``budget`` (at least one)."""
    return max(1, int(budget // max(each, 1.0)))


def batches_per_slice(macs_per_batch: float) -> int:
    """How many minibatches make one slice of ``SLICE_MACS``; a small network's whole
    epoch is one slice (no extra calls)."""
    return _fits(SLICE_MACS, macs_per_batch)


# The work (forward multiply-adds, as SLICE_MACS counts them) several whole epochs may take in
# one call of an engine that trains epochs in a row (:class:`SpanEngine`): where an epoch is
# small (Sonar's is milliseconds), the call around it, the copies in and out of its cache and
# the threads' start and join were a large part of its time; a span still ends within a
# fraction of a second (forward, backward and update are about three times this), at the
# next checkpoint at the latest.
SPAN_MACS = 3e9


def epochs_per_span(macs_per_epoch: float) -> int:
    """How many whole epochs make one span of ``SPAN_MACS`` (at least one)."""
    return _fits(SPAN_MACS, macs_per_epoch)


class Engine(Protocol):
    """A batch of models of one family, trained together."""

    folds: Folds  # the rows and splits it trains on
    trial_of: torch.Tensor  # [models]: the trial each model still training belongs to
    fold_of: torch.Tensor  # [models]: its split
    n_batches: int  # minibatches in an epoch (of the longest split)
    slice_batches: int  # minibatches trained between two looks at the stop flag
    n_train: torch.Tensor  # [models]: training rows of each model's split
    order: torch.Tensor  # [models, rows]: the epoch's minibatch order (start_epoch draws it)

    def start_epoch(self) -> None:
        """Draw the epoch's minibatch order."""

    def train_batches(self, first: int, end: int) -> None:
        """Train minibatches [first, end) of the epoch."""

    def end_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per model, whether a parameter became non-finite this epoch, and NaN."""

    def evaluate(self, held_out: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Accuracy and mean loss per model on its held-out (or training) rows."""

    def keep(self, models: torch.Tensor) -> None:
        """Keep only these models (indices into the current batch)."""

    def trained(self, models: torch.Tensor) -> Any:
        """The trained weights of these models, for a result (and ``export``)."""

    def state(self) -> dict[str, Any]:
        """Everything the rest of training depends on, as CPU tensors and numbers."""

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state`: training goes on exactly as if never stopped."""


class SpanEngine(Engine, Protocol):
    """An engine that can train several whole epochs in one call (the MLP's C kernel: each
    model trains them in a row while its parameters stay in cache)."""

    def epochs_at_once(self) -> int:
        """How many whole epochs one :meth:`train_epochs` may train now (1: one at a time)."""

    def train_epochs(self, count: int, score: bool = False
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``count`` whole epochs, the first in the order :meth:`start_epoch` drew, the others
        drawn as their epochs would draw them; each epoch's ``end_epoch`` flags. A model
        stops after an epoch that left it non-finite. ``score``: the span ends at a
        checkpoint, whose evaluation the engine may prepare as the span ends."""

    def snapshot(self) -> Any:
        """What :meth:`restore` needs to undo a span (weights, streams), cheaply."""

    def restore(self, snapshot: Any) -> None:
        """Back to :meth:`snapshot`: the next epoch draws and trains as if the span never was."""


class Checkpointer(Protocol):
    """Where a batch's state goes every few minutes (:mod:`dropsweep.train.checkpoints`)."""

    def due(self) -> bool:
        """Whether it is time for another checkpoint."""

    def __call__(self, state: dict[str, Any]) -> None:
        """Keep ``state`` (atomically: the last complete checkpoint survives a kill)."""

    def at_stop(self) -> bool:
        """Whether a stop (Ctrl-C) is checkpointed too, where it stopped: not when
        checkpoints are off (``--checkpoint-every 0``) or no longer this batch's to write."""


def non_finite(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per model (dim 0): does any value fail ``isfinite``, and is any of them NaN (what an
    engine's ``end_epoch`` reports)."""
    bad = torch.zeros(tensors[0].shape[0], dtype=torch.bool, device=tensors[0].device)
    nan = torch.zeros_like(bad)
    for t in tensors:
        flat = t.reshape(t.shape[0], -1)
        bad |= ~torch.isfinite(flat).all(1)
        nan |= torch.isnan(flat).any(1)
    return bad, nan


def per_model(values: Sequence[Any], k: int, device: torch.device,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One value per trial as one per model: model ``t*k + f`` is split ``f`` of trial ``t``."""
    return torch.tensor(values, dtype=dtype, device=device).repeat_interleave(k)


Scorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def chunked_scores(folds: Folds, fold_of: torch.Tensor, held_out: bool, chunk: int,
                   score: Scorer) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean loss per model on its held-out (or training) rows, ``chunk``
    positions at a time: memory stays bounded however many rows and models there are.

    ``score(x, y, valid)`` gives, per model, the real rows (``valid``) predicted right and
    their summed loss, without dropout; padding positions beyond a split's rows are invalid.
    """
    n = (folds.n_test if held_out else folds.n_train)[fold_of]
    width = folds.max_test if held_out else folds.max_train
    correct = torch.zeros(fold_of.numel(), device=fold_of.device)
    loss = torch.zeros_like(correct)
    for start in range(0, width, chunk):
        positions = torch.arange(start, min(start + chunk, width), device=fold_of.device)
        x, y = folds.gather(fold_of, positions.expand(fold_of.numel(), -1), held_out)
        c, l = score(x, y, positions[None, :] < n[:, None])
        correct += c
        loss += l
    return correct / n.to(correct.dtype), loss / n.to(loss.dtype)


RowSort = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def epoch_order(generator: torch.Generator, n_train: torch.Tensor, max_train: int,
                sort: RowSort | None = None) -> torch.Tensor:
    """One epoch's minibatch order, ``[models, max_train]``: row ``i`` starts with a shuffle of
    ``0 .. n_train[i]-1`` (model ``i``'s own real rows); its padding positions sort last.

    The trainer draws exactly this once per epoch from its generator, so a reference
    implementation can replay the same order with a generator seeded the same way: positions
    sorted by their uniform key, equal keys by position. (float32 keys tie: in a 64-trial
    Sonar search, ~190 times. An unstable sort orders ties as its implementation happens to,
    and NumPy's differs by CPU (AVX2, AVX-512) and version, which made a seeded study train
    other rows in other order on another machine. Each key is made unique, key bits then
    position, as one int64, so any correct sort gives this order; 12% slower than sorting the
    floats, a stable sort was 2.1x.) ``sort(keys, n_train)``, given, orders the float keys
    instead, to this same order (the C kernel's linear-time sort).
    """
    device = n_train.device
    keys = torch.rand(n_train.numel(), max_train, generator=generator, device=device,
                      dtype=torch.float32)  # float32 whatever the default: 24 random bits
    if sort is not None:
        return sort(keys, n_train)
    positions = torch.arange(max_train, device=device)
    # the key's 24 random bits (torch.rand's float32 steps of 2^-24; padding: 2^25, last)
    bits = torch.where(positions[None, :] < n_train[:, None], keys * 16777216.0,
                       torch.full_like(keys, 33554432.0)).to(torch.int64)
    keys = (bits << max(1, max_train - 1).bit_length()) | positions
    if keys.device.type == "cpu":  # numpy sorts these short rows ~4x faster than torch here
        return torch.from_numpy(np.argsort(keys.numpy(), axis=1))
    return keys.argsort(dim=1)


def epoch_orders(generator: torch.Generator, n_train: torch.Tensor, max_train: int,
                 epochs: int, sort: RowSort | None = None) -> torch.Tensor:
    """The next ``epochs`` epochs' orders, ``[epochs, models, max_train]``: what as many calls
    of :func:`epoch_order` draw. On the CPU with ``sort``, every key in one draw and one sort
    (the CPU generator gives the same numbers drawn at once or epoch by epoch: tested), where
    an epoch's own draw and sort cost a span of Sonar ~1 ms. ``epochs`` >= 1."""
    if sort is not None and n_train.device.type == "cpu":
        models = n_train.numel()
        keys = torch.rand(epochs * models, max_train, generator=generator, dtype=torch.float32)
        return sort(keys, n_train.repeat(epochs)).view(epochs, models, max_train)
    return torch.stack([epoch_order(generator, n_train, max_train, sort)
                        for _ in range(epochs)])


def run_epochs(engine: Engine, n_trials: int, epochs: int, eval_every: int,
               on_checkpoint: CheckpointHook | None = None,
               should_stop: Callable[[], bool] | None = None,
               on_progress: ProgressHook | None = None,
               save: Checkpointer | None = None,
               resume: Mapping[str, Any] | None = None) -> list[TrialResult]:
    """Train the engine's models epoch by epoch; one result per trial.

    Trials stopped by ``on_checkpoint`` or by a diverging loss leave the batch, so they stop
    costing compute. ``should_stop`` is asked before every slice of an epoch, or before
    every span of whole epochs where the engine trains several at a call (each a fraction of
    a second of work); when it says yes, the unfinished trials come back marked
    ``interrupted``. ``on_progress`` hears the epochs done after every slice or span.

    ``save`` is offered the whole state at the end of an epoch (of a span's last one)
    whenever it is due (the engine's, the epoch, the results so far), and at a stop where it
    stopped (when it keeps stops, :meth:`Checkpointer.at_stop`): then also the minibatch the
    epoch was at and the epoch's row order. ``resume``, either state, continues from it
    exactly.
    """
    run = _Run(engine, n_trials, resume)

    def checkpoint_after(last: int) -> bool:
        return last % eval_every == 0 or last == epochs

    with torch.no_grad():
        epoch = run.first_epoch
        while epoch <= epochs and run.size():
            last = run.span_end(epoch, epochs, eval_every)
            flags = (run.train_span(epoch, last, should_stop, save, checkpoint_after(last))
                     if last > epoch else None)
            if flags is False:
                return run.results  # stopped: the unfinished trials are interrupted
            if flags is None:  # one epoch (or a span given back: see train_span)
                last, flags = epoch, [None]
                if not run.train_epoch(epoch, should_stop, on_progress, save):
                    return run.results
            elif on_progress is not None:
                on_progress(float(last))
            for e, flag in zip(range(epoch, last + 1), flags):
                run.end_epoch(e, flag)
            if checkpoint_after(last):  # (last: the span's, or the one epoch trained)
                if run.size() == 0:
                    break
                run.checkpoint(last, epochs, on_checkpoint)
            if save is not None and last < epochs and run.size() and save.due():
                save(run.state(last))
            epoch = last + 1

        if run.size():
            _final_scores(engine, run.results, run.started)
    return run.results


class _Run:
    """What :func:`run_epochs` keeps while it trains: each trial's result so far, when it
    started (a resumed run: as if it had never stopped), where a resumed epoch goes on, and
    whether every model has left (the batch is over, the engine keeps what it had)."""

    def __init__(self, engine: Engine, n_trials: int, resume: Mapping[str, Any] | None
                 ) -> None:
        self.engine, self.n_trials = engine, n_trials
        self.results = [TrialResult() for _ in range(n_trials)]
        self.started = time.perf_counter()
        self.first_epoch, self.at, self.order = 1, 0, None
        if resume is not None:
            engine.load_state(resume["engine"])
            self.results = [TrialResult.from_state(r) for r in resume["results"]]
            self.first_epoch = int(resume["epoch"]) + 1
            self.started -= float(resume["elapsed"])  # wall time counts the time before the stop
            if "minibatch" in resume:  # stopped within an epoch: it goes on where it stood
                self.at, self.order = int(resume["minibatch"]), resume["order"]
        self.device = engine.trial_of.device
        self.ended = False  # every model has left
        self.one_by_one_until = 0  # a span gave back: epochs up to this one go singly

    def size(self) -> int:
        return 0 if self.ended else int(self.engine.trial_of.numel())

    def stop(self, trials: set[int]) -> None:
        """``trials`` leave the batch (pruned, diverged), their wall time taken now."""
        engine = self.engine
        keep = torch.tensor([int(t) not in trials for t in engine.trial_of.tolist()],
                            device=self.device, dtype=torch.bool)
        if bool(keep.any()):
            engine.keep(keep.nonzero().squeeze(1))
        else:  # no engine is asked to keep zero models: an empty batch simply ends
            self.ended = True
        now = time.perf_counter() - self.started
        for t in trials:
            self.results[t].wall_time = now

    def state(self, epoch: int, elapsed: float | None = None, **within: Any) -> dict[str, Any]:
        """What a checkpoint holds after ``epoch`` (:data:`STATE_KEYS`; ``elapsed``: now, unless
        given), and where within the next epoch a stop landed (``minibatch``, ``order``)."""
        if elapsed is None:
            elapsed = time.perf_counter() - self.started
        return {"epoch": epoch, **within, "elapsed": elapsed,
                "results": [r.state() for r in self.results], "engine": self.engine.state()}

    def span_end(self, epoch: int, epochs: int, eval_every: int) -> int:
        """The last epoch to train in one call from ``epoch``: ``epoch`` itself unless the
        engine trains several at once (:class:`SpanEngine`); never past the next checkpoint,
        never within a resumed epoch or one a given-back span ran into."""
        at_once = getattr(self.engine, "epochs_at_once", None)
        if (at_once is None or self.order is not None or self.at
                or epoch <= self.one_by_one_until):
            return epoch
        next_checkpoint = -(-epoch // eval_every) * eval_every
        return min(epoch + at_once() - 1, next_checkpoint, epochs)

    def train_span(self, epoch: int, last: int, should_stop: Callable[[], bool] | None,
                   save: Checkpointer | None, at_checkpoint: bool = False
                   ) -> list[tuple[torch.Tensor, torch.Tensor]] | bool | None:
        """Epochs [epoch, last] in one engine call (``at_checkpoint``: a checkpoint follows
        ``last``): each epoch's flags; False: stopped before
        it, as :meth:`train_epoch` stops; None: a model diverged before the last of them —
        everything is back as before the span (the epochs after its divergence would have
        drawn their rows' order without it), and those epochs go one at a time."""
        engine = cast(SpanEngine, self.engine)
        before = engine.snapshot()
        engine.start_epoch()
        if should_stop is not None and should_stop():
            self._interrupt(epoch, 0, save)
            return False
        flags = engine.train_epochs(last - epoch + 1, score=at_checkpoint)
        first_bad = next((i for i, (bad, _) in enumerate(flags) if bool(bad.any())), None)
        if first_bad is not None and epoch + first_bad < last:
            engine.restore(before)
            self.one_by_one_until = epoch + first_bad
            return None
        return flags

    def train_epoch(self, epoch: int, should_stop: Callable[[], bool] | None,
                    on_progress: ProgressHook | None, save: Checkpointer | None) -> bool:
        """The epoch's minibatches, a slice at a time; False: stopped before a slice."""
        engine = self.engine
        if self.order is None:
            engine.start_epoch()
        else:  # the stopped epoch's own order, not a new draw
            engine.order, self.order = self.order.to(self.device), None
        for first in range(self.at, engine.n_batches, engine.slice_batches):
            if should_stop is not None and should_stop():
                self._interrupt(epoch, first, save)
                return False
            end = min(first + engine.slice_batches, engine.n_batches)
            engine.train_batches(first, end)
            if on_progress is not None:
                on_progress(epoch - 1 + end / engine.n_batches)
        self.at = 0
        return True

    def _interrupt(self, epoch: int, first: int, save: Checkpointer | None) -> None:
        """Stopped at minibatch ``first`` of ``epoch``: saved there if ``save`` keeps stops;
        the trials still training are interrupted."""
        engine, results = self.engine, self.results
        now = time.perf_counter() - self.started
        if save is not None and save.at_stop():
            save(self.state(epoch - 1, now, minibatch=first, order=engine.order.cpu().clone()))
        for t in set(engine.trial_of.tolist()):
            results[t].interrupted = True
            results[t].wall_time = now

    def end_epoch(self, epoch: int,
                  flags: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """The epoch counted for the trials still training; those that diverged leave
        (``flags``: the epoch's, from a span; else the engine's ``end_epoch``)."""
        engine = self.engine
        bad, nan = engine.end_epoch() if flags is None else flags
        diverged = _diverged(engine, bad, nan, epoch, self.results)
        for t in set(engine.trial_of.tolist()) - diverged:
            self.results[t].epochs = epoch
        if diverged:
            self.stop(diverged)

    def checkpoint(self, epoch: int, epochs: int, on_checkpoint: CheckpointHook | None
                   ) -> None:
        """Score the models; before the last epoch, those ``on_checkpoint`` prunes leave."""
        engine, results = self.engine, self.results
        means = _checkpoint(engine, self.n_trials, epoch, results)
        if on_checkpoint is not None and epoch < epochs:
            alive = set(engine.trial_of.tolist())
            pruned = {int(t) for t in on_checkpoint(epoch, means)} & alive
            if pruned:
                for t in pruned:
                    results[t].pruned = True
                self.stop(pruned)


# What run_epochs saves (the ``save`` hook) and resumes from, and a result's fields in it;
# a stop within an epoch also keeps the minibatch it was at and the epoch's row order
STATE_KEYS = frozenset({"epoch", "elapsed", "results", "engine"})
WITHIN_KEYS = STATE_KEYS | {"minibatch", "order"}
RESULT_KEYS = frozenset({"fold_accuracies", "epochs", "wall_time", "failure", "pruned",
                         "curve"})


def check_resume(resume: Any, n_trials: int, k: int, epochs: int,
                 make: Callable[[], Engine] | None = None) -> None:
    """Refuse (:class:`~dropsweep.train.checkpoints.Unusable`, naming the first field at fault)
    a state that a batch of ``n_trials`` trials of ``k`` splits, trained for ``epochs``,
    could not have saved: an epoch outside 1 to ``epochs - 1`` (0 too for a stop within an
    epoch), an elapsed time that is not a number of seconds, results not one per trial or
    not as :meth:`TrialResult.state` writes them. ``make`` builds the batch's engine
    afresh: the saved engine state must then be one of its own with exactly the models
    still training (the trials the results say are, every split of each) — its keys, its
    tensors' types and shapes, who trains — and must load; one made by another engine,
    device or form is :class:`~dropsweep.train.checkpoints.Elsewhere`. A stop within an epoch
    must also stand where a stop can (a minibatch that begins a slice) with the epoch's row
    order: each model's own rows shuffled, before its padding. Nothing trains: a resume
    checks first."""
    from dropsweep.train.checkpoints import Elsewhere, Unusable

    if not isinstance(resume, Mapping) or set(resume) not in (STATE_KEYS, WITHIN_KEYS):
        keys = sorted(resume) if isinstance(resume, Mapping) else type(resume).__name__
        raise Unusable(f"its state holds {keys}, not {sorted(STATE_KEYS)} (and, stopped "
                       "within an epoch, minibatch and order)")
    epoch, elapsed, results = resume["epoch"], resume["elapsed"], resume["results"]
    within = set(resume) == WITHIN_KEYS
    if type(epoch) is not int or not int(not within) <= epoch < epochs:
        raise Unusable(f"its epoch is {epoch!r}, and a checkpoint of {epochs} epochs is "
                       f"made after one of {int(not within)} to {epochs - 1}")
    minibatch, order = resume.get("minibatch", 0), resume.get("order")
    if type(minibatch) is not int or minibatch < 0:
        raise Unusable(f"its minibatch is {minibatch!r}, not a minibatch of an epoch")
    if within and (not isinstance(order, torch.Tensor) or order.dim() != 2):
        raise Unusable("its row order is not a table of rows for each model")
    if type(elapsed) not in (int, float) or not 0 <= elapsed < math.inf:
        raise Unusable(f"its elapsed time is {elapsed!r}, not a number of seconds")
    if not isinstance(results, list) or len(results) != n_trials:
        count = len(results) if isinstance(results, list) else type(results).__name__
        raise Unusable(f"it has {count} results for {n_trials} trials")
    alive = []
    for t, result in enumerate(results):
        problem = _result_problem(result, epoch)
        if problem:
            raise Unusable(f"the result of its place {t + 1} {problem}")
        if result["failure"] is None and not result["pruned"]:
            alive.append(t)
    if make is None:
        return
    engine = resume["engine"]
    if not alive:
        raise Unusable("it has no trial still training")
    reference = make()
    reference.keep(torch.tensor([t * k + f for t in alive for f in range(k)],
                                device=reference.trial_of.device))
    want = reference.state()  # on the CPU: one engine on the device at a time
    if not isinstance(engine, Mapping):
        raise Unusable(f"its engine state is a {type(engine).__name__}")
    made = {key: engine.get(key) for key, value in want.items() if isinstance(value, str)}
    here = {key: value for key, value in want.items() if isinstance(value, str)}
    if made != here:
        raise Elsewhere(f"it was made as {_named(made)}, and this batch trains as "
                        f"{_named(here)}")
    problem = _shape_problem(engine, want, "")
    if problem:
        raise Unusable(f"its engine state is not this batch's: {problem}")
    for key in ("trial_of", "fold_of"):
        if not torch.equal(engine[key], want[key]):
            raise Unusable(f"its models still training ({key}) are not those its results "
                           "say are")
    if within:
        problem = _within_problem(minibatch, order, reference)
        if problem:
            raise Unusable(problem)
    del reference
    try:
        make().load_state(engine)
    except Unusable:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a state that fits on paper trips
        raise Unusable(f"its engine state does not load ({type(exc).__name__})") from exc


def _within_problem(minibatch: int, order: torch.Tensor, engine: Engine) -> str | None:
    """Why a stop within an epoch at ``minibatch`` with row ``order`` is not one ``engine``
    (fresh, with the models still training) could have made, or None: a stop comes before a
    slice, and each model's order is a shuffle of its split's rows, its padding after them."""
    if minibatch >= engine.n_batches or minibatch % engine.slice_batches:
        return (f"its minibatch {minibatch} does not begin a slice of {engine.slice_batches} "
                f"of its epoch's {engine.n_batches}, where a stop would be")
    n_train = engine.n_train.cpu()
    models, width = int(n_train.numel()), int(engine.folds.max_train)
    if order.dtype != torch.int64 or tuple(order.shape) != (models, width):
        return (f"its row order is {order.dtype} {tuple(order.shape)}, not torch.int64 "
                f"{(models, width)}")
    positions = torch.arange(width)
    if not torch.equal(order.sort(dim=1).values, positions.expand(models, -1)) or bool(
            ((order < n_train[:, None]) != (positions < n_train[:, None])).any()):
        return "its row order is not each model's rows shuffled, its padding after them"
    return None


def _named(fields: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in fields.items())


def _result_problem(result: Any, epoch: int) -> str | None:
    """Why ``result`` is not one a batch at ``epoch`` saves (:meth:`TrialResult.state`),
    or None."""
    if not isinstance(result, Mapping) or set(result) != RESULT_KEYS:
        keys = sorted(result) if isinstance(result, Mapping) else type(result).__name__
        return f"holds {keys}, not {sorted(RESULT_KEYS)}"
    done, failure, pruned = result["epochs"], result["failure"], result["pruned"]
    if type(done) is not int or not 0 <= done <= epoch:
        return f"has {done!r} epochs at epoch {epoch}"
    if not isinstance(failure, (str, type(None))) or type(pruned) is not bool:
        return "has a failure or a pruned flag of another kind"
    if failure is None and not pruned and done != epoch:
        return f"has {done} epochs, though it was still training at epoch {epoch}"
    wall = result["wall_time"]
    if type(wall) not in (int, float) or not 0 <= wall < math.inf:
        return f"has a time of {wall!r}"
    folds = result["fold_accuracies"]
    if not isinstance(folds, list) or not all(_fraction(a) for a in folds):
        return "has fold accuracies that are not accuracies"
    curve, last = result["curve"], 0
    if not isinstance(curve, list):
        return "has no learning curve"
    for point in curve:
        if (not isinstance(point, (list, tuple)) or len(point) != 2
                or type(point[0]) is not int or not last < point[0] <= epoch
                or not _fraction(point[1])):
            return (f"has a learning curve point {point!r} that is not (an epoch after the "
                    f"last and at most {epoch}, an accuracy)")
        last = point[0]
    return None


def _fraction(value: Any) -> bool:
    return type(value) in (int, float) and 0.0 <= value <= 1.0


def _shape_problem(got: Any, want: Any, where: str) -> str | None:
    """The first place where ``got`` is not built as ``want`` (the same keys and lengths,
    tensors of the same type and shape, values of the same kind), or None."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where or 'it'} is not a tensor"
        if got.dtype != want.dtype or got.shape != want.shape:
            return (f"{where} is {got.dtype} {tuple(got.shape)}, not {want.dtype} "
                    f"{tuple(want.shape)}")
        return None
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            return f"{where or 'it'} is not a mapping"
        if set(got) != set(want):
            extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
            return f"{where or 'it'} " + " and ".join(
                [*([f"lacks {', '.join(map(str, missing))}"] if missing else []),
                 *([f"has {', '.join(map(str, extra))} besides"] if extra else [])])
        for key in want:
            problem = _shape_problem(got[key], want[key], f"{where}.{key}" if where else key)
            if problem:
                return problem
        return None
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return f"{where} has {len(got) if isinstance(got, (list, tuple)) else got!r} " \
                   f"items, not {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            problem = _shape_problem(g, w, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if type(got) is not type(want) and not (want is None or got is None):
        return f"{where} is a {type(got).__name__}, not a {type(want).__name__}"
    return None


def _diverged(engine: Engine, bad: torch.Tensor, nan: torch.Tensor, epoch: int,
              results: list[TrialResult]) -> set[int]:
    """The trials with a non-finite parameter after this epoch, each failed with its reason
    (a diverging model's weights become NaN or infinite within the epoch its loss does)."""
    diverged: set[int] = set()
    if bool(bad.any()):
        for m in bad.nonzero().squeeze(1).tolist():
            t = int(engine.trial_of[m])
            if t not in diverged:
                diverged.add(t)
                kind = "NaN" if bool(nan[m]) else "infinite"
                results[t].failure = (f"loss became {kind} at epoch {epoch}, "
                                      f"fold {int(engine.fold_of[m]) + 1}")
                results[t].epochs = epoch
    return diverged


def _checkpoint(engine: Engine, n_trials: int, epoch: int, results: list[TrialResult]
                ) -> list[float | None]:
    """Each training trial's mean held-out accuracy, added to its learning curve."""
    acc, _ = engine.evaluate()
    trial_of = engine.trial_of
    means: list[float | None] = [None] * n_trials
    for t in sorted(set(trial_of.tolist())):
        value = float(acc[trial_of == t].mean())
        means[t] = value
        results[t].curve.append((epoch, value))
    return means


def _final_scores(engine: Engine, results: list[TrialResult], started: float) -> None:
    """The scores of the trials that trained to the end, splits in order."""
    fold_of, trial_of = engine.fold_of, engine.trial_of
    acc, loss = engine.evaluate()
    tr_acc, _ = engine.evaluate(held_out=False)
    now = time.perf_counter() - started
    for t in sorted(set(trial_of.tolist())):
        sel = trial_of == t
        order_f = fold_of[sel].argsort()
        r = results[t]
        r.fold_accuracies = [float(a) for a in acc[sel][order_f]]
        r.test_log_loss = float(loss[sel].mean())
        r.train_accuracy = float(tr_acc[sel].mean())
        r.wall_time = now
        r.model = engine.trained(sel.nonzero().squeeze(1)[order_f])
        if not all(math.isfinite(a) for a in r.fold_accuracies) or not math.isfinite(
                r.test_log_loss):
            r.failure = f"loss became NaN or infinite by epoch {r.epochs}"
