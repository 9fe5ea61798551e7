"""The choice of the C kernel's tile plan: each plan tried on a shape's first calls, then the
fastest per unit of work, per shape; a forced plan or a one-plan build times nothing."""

from __future__ import annotations

import pytest

from dropsweep.families.mlp.tiles import TILES, TileChooser


def run(chooser: TileChooser, key, seconds_of: dict[str, float], work: float = 1.0) -> str:
    """One call of shape ``key``: the plan it ran (taking ``seconds_of[plan] * work``)."""
    plan = chooser.plan(key)
    chooser.record(key, plan, seconds_of[TILES[plan]] * work, work)
    return TILES[plan]


def test_both_plans_are_tried_twice_in_abba_order_then_the_faster_runs():
    chooser = TileChooser(2)
    slow_wide = {"narrow": 1.0, "wide": 1.3}
    assert [run(chooser, "sonar", slow_wide) for _ in range(4)] == [
        "narrow", "wide", "wide", "narrow"]
    assert [run(chooser, "sonar", slow_wide) for _ in range(3)] == ["narrow"] * 3
    assert chooser.chosen() == {"sonar": "narrow"}
    other = TileChooser(2)
    for _ in range(4):
        run(other, "sonar", {"narrow": 1.0, "wide": 0.7})
    assert other.chosen() == {"sonar": "wide"} and other.plan("sonar") == 1
    assert not other.deciding("sonar")


def test_time_is_compared_per_unit_of_work_and_each_plans_best_call_counts():
    """A call over fewer models (pruned) is not taken for a faster plan; one slow call (the
    machine busy elsewhere) does not condemn a plan: its best call counts."""
    def decide(calls) -> str:
        chooser = TileChooser(2)
        for plan, seconds, work in calls:
            assert chooser.plan("k") == plan
            chooser.record("k", plan, seconds, work)
        return chooser.chosen()["k"]

    # wide's calls are quicker in seconds, but did half the work: 0.12 and 0.14 s a unit
    assert decide([(0, 1.0, 10), (1, 0.6, 5), (1, 0.7, 5), (0, 1.1, 10)]) == "narrow"
    # wide's best call, 0.09 s a unit, beats narrow's 0.1, though its other call was slow
    # (its mean, 0.295, and its worst would not)
    assert decide([(0, 1.0, 10), (1, 0.45, 5), (1, 5.0, 10), (0, 1.1, 10)]) == "wide"
    tie = TileChooser(2)
    for _ in range(4):
        run(tie, "k", {"narrow": 1.0, "wide": 1.0})
    assert tie.chosen() == {"k": "narrow"}  # a tie keeps the lower plan


def test_shapes_are_chosen_apart_and_untimed_or_empty_calls_change_nothing():
    chooser = TileChooser(2)
    for _ in range(4):
        run(chooser, "small", {"narrow": 1.0, "wide": 2.0})
    assert chooser.plan("large") == 0 and chooser.deciding("large")
    chooser.record("large", 0, 3.0, 0)  # no work: nothing learnt
    assert chooser.timings("large") == []
    for _ in range(4):
        run(chooser, "large", {"narrow": 2.0, "wide": 1.0})
    assert chooser.chosen() == {"small": "narrow", "large": "wide"}
    assert [plan for plan, _ in chooser.timings("large")] == ["narrow", "wide", "wide", "narrow"]


def test_calls_that_overlapped_on_one_plan_do_not_end_the_trial_early():
    """Calls planned before any was recorded all run the same plan; the trial goes on until
    each plan has had its two calls (it never compares a plan with no time)."""
    chooser = TileChooser(2)
    overlapping = [chooser.plan("k") for _ in range(3)]
    assert overlapping == [0, 0, 0]
    for plan in overlapping:
        assert chooser.record("k", plan, 1.0, 1.0) is None
    assert chooser.deciding("k") and chooser.plan("k") == 0  # (the 4th of the trial order)
    chooser.record("k", 0, 1.0, 1.0)
    assert chooser.plan("k") == 0  # the 5th, 0 again
    chooser.record("k", 0, 1.0, 1.0)
    assert chooser.plan("k") == 1
    assert chooser.record("k", 1, 0.5, 1.0) is None
    assert chooser.record("k", 1, 0.6, 1.0) == "wide"


def test_a_forced_plan_or_a_build_with_one_plan_times_nothing():
    forced = TileChooser(2, "wide")
    assert [run(forced, "k", {"narrow": 1.0, "wide": 9.0}) for _ in range(5)] == ["wide"] * 5
    assert not forced.deciding("k") and forced.timings("k") == [] and forced.chosen() == {}
    single = TileChooser(1)
    assert [run(single, "k", {"narrow": 1.0}) for _ in range(5)] == ["narrow"] * 5
    assert not single.deciding("k") and single.timings("k") == []
    with pytest.raises(ValueError, match="not in this kernel"):
        TileChooser(1, "wide")


def test_a_plan_remembered_from_an_earlier_process_is_taken_without_timing():
    chooser = TileChooser(2)
    chooser.settle("k", "wide")
    assert chooser.plan("k") == 1 and not chooser.deciding("k") and chooser.timings("k") == []
    chooser.settle("other", "hexagonal")  # not a plan of this kernel: timed as usual
    assert chooser.deciding("other")
    single = TileChooser(1)
    single.settle("k", "wide")  # remembered by a build with two plans: not this one's
    assert single.plan("k") == 0
    forced = TileChooser(2, "narrow")
    forced.settle("k", "wide")
    assert forced.plan("k") == 0
