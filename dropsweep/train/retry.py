"""A batch that runs out of memory trains in halves instead of failing its trials.

The batch size is estimated from the device's free memory before training
(:func:`dropsweep.study.memory_fit.batch_that_fits`), but a GPU's free memory changes under other
processes, and the estimate is only an estimate. When a batch of trials still runs out of
memory (``torch.OutOfMemoryError``), its two halves train one after the other, each halved
again if it runs out too; a trial that runs out of memory alone fails with that reason, as
any other failed trial does, and the search goes on.

Pure: it knows neither torch nor Optuna. The caller says what training a batch is, what
counts as running out of memory, and what a failed trial's result is.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")  # one place of the batch (the runner: an index into it)
R = TypeVar("R")  # one place's result


def train_in_halves(batch: Sequence[T], train: Callable[[Sequence[T]], Sequence[R]],
                    is_oom: Callable[[BaseException], bool], fail: Callable[[T, BaseException], R],
                    before_retry: Callable[[Sequence[T], BaseException], None] | None = None,
                    ) -> list[R]:
    """``train(batch)``'s results, one per place in order; where it runs out of memory
    (``is_oom``), ``before_retry(batch, error)`` (free the memory, drop what the failed
    attempt left behind), then the first half and the second half, each the same way down
    to one place, whose result is then ``fail(place, error)``. Any other error propagates."""
    try:
        results = list(train(batch))
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is ours; the rest re-raised
        if not is_oom(exc):
            raise
        error = exc.with_traceback(None)
    else:
        if len(results) != len(batch):
            raise ValueError(f"train gave {len(results)} results for a batch of {len(batch)}")
        return results
    # Out of the except block, the traceback dropped: the failed attempt's frames, and the
    # memory their tensors hold, are freed before the halves train.
    if before_retry is not None:
        before_retry(batch, error)
    if len(batch) == 1:
        return [fail(batch[0], error)]
    half, _ = halves(len(batch))
    return (train_in_halves(batch[:half], train, is_oom, fail, before_retry)
            + train_in_halves(batch[half:], train, is_oom, fail, before_retry))


def halves(size: int) -> tuple[int, int]:
    """The sizes the halves of a batch of ``size`` get (the first takes the odd one)."""
    return (size + 1) // 2, size // 2
