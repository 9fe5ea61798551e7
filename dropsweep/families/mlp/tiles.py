"""Which of the C kernel's tile plans trains a shape fastest, measured on its first calls.

The kernel cuts its products into register tiles one of two ways (kernel.c: NARROW, WIDE),
and which is faster depends on the CPU: on a Zen 4 EPYC the wide tiles trained a Sonar epoch
1.3x slower, where on Intel's AVX-512 they were the only plan. Both give the same numbers to
the bit, so the choice is made as torch's ``cudnn.benchmark`` makes its own: by timing real
work. A shape's first calls run every plan in turn, twice (ABBA, so a machine slowing down
or warming up favours neither much), and from then on the plan whose best call took the
least time per unit of work runs (the best, not the sum: a call slowed by load elsewhere on a
shared machine does not condemn its plan; a near-tie goes to narrow, which costs nothing).
Nothing is timed beyond the training that was to be done anyway; the slower plan costs its
share of two calls. The kernel remembers each choice in dropsweep's cache beside
the conv nets' timed forms (:mod:`dropsweep.train.forms`), so later processes on the machine
start with it (:meth:`TileChooser.settle`).
"""

from __future__ import annotations

from typing import Hashable, Sequence

TILES = ("narrow", "wide")  # kernel.c's plans, by number
ROUNDS = 2  # timed calls of every plan before one is chosen


class TileChooser:
    """The plan for each shape (any hashable key: layer sizes, batch size, threads): tried
    in turn on its first calls, then the fastest. ``forced`` (a name in ``TILES``) skips
    the trial and always runs that plan."""

    def __init__(self, plans: int, forced: str | None = None) -> None:
        if forced is not None and TILES.index(forced) >= plans:
            raise ValueError(f"tile plan {forced!r} is not in this kernel")
        self.plans = plans
        self.forced = None if forced is None else TILES.index(forced)
        # the order in which a shape's first calls try the plans: 0, 1, 1, 0 for two
        self._trial = [p for r in range(ROUNDS)
                       for p in (range(plans) if r % 2 == 0 else reversed(range(plans)))]
        self._times: dict[Hashable, list[tuple[int, float]]] = {}  # (plan, seconds per work)
        self._chosen: dict[Hashable, int] = {}

    def plan(self, key: Hashable) -> int:
        """The plan the next call of this shape runs."""
        if self.forced is not None:
            return self.forced
        if key in self._chosen:
            return self._chosen[key]
        return self._trial[len(self._times.get(key, ())) % len(self._trial)]

    def deciding(self, key: Hashable) -> bool:
        """Whether a call of this shape is timed (its plan is still on trial)."""
        return self.forced is None and self.plans > 1 and key not in self._chosen

    def record(self, key: Hashable, plan: int, seconds: float, work: float) -> str | None:
        """A call of ``plan`` took ``seconds`` for ``work`` (any measure proportional to its
        arithmetic, e.g. models x minibatches); once every plan has had its calls, the one
        with the least time per work is chosen for good (ties: the lower number), and its
        name returned (else None)."""
        if not self.deciding(key) or work <= 0:
            return None
        times = self._times.setdefault(key, [])
        times.append((plan, seconds / work))
        # (counted per plan: calls that overlapped, planned before either was recorded,
        # may have run the same plan; the trial goes on until each has had its calls)
        if any(sum(q == p for q, _ in times) < ROUNDS for p in range(self.plans)):
            return None
        best = self.best(key)
        self._chosen[key] = min(range(self.plans), key=lambda p: (best[TILES[p]], p))
        return TILES[self._chosen[key]]

    def settle(self, key: Hashable, name: str) -> None:
        """Take ``name``, a plan chosen by an earlier process, for this shape (not a plan
        of this kernel, or a forced plan: nothing changes)."""
        if self.deciding(key) and name in TILES[:self.plans]:
            self._chosen[key] = TILES.index(name)

    def chosen(self) -> dict[Hashable, str]:
        """Each shape decided so far and its plan's name (for benchmarks and reports)."""
        return {key: TILES[p] for key, p in self._chosen.items()}

    def best(self, key: Hashable) -> dict[str, float]:
        """Each plan's best time per unit of work on this shape so far."""
        best: dict[str, float] = {}
        for plan, t in self.timings(key):
            best[plan] = min(t, best.get(plan, t))
        return best

    def timings(self, key: Hashable) -> Sequence[tuple[str, float]]:
        """A shape's timed calls so far: (plan, seconds per unit of work)."""
        return [(TILES[p], t) for p, t in self._times.get(key, ())]
