"""dropsweep.train.forms: the form a batch trains in is the one timed fastest here, timed once
per shape and machine, kept across processes, and never a form that cannot run."""

from __future__ import annotations

import json

import pytest
import torch

from dropsweep.train import forms

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_memo():
    forms._MEMO.clear()
    yield
    forms._MEMO.clear()


def stand_in(seconds: dict[str, float], calls: list[str]):
    """A timer that runs each step once and reports the given seconds."""
    def timer(steps, device):
        for form, step in steps.items():
            step()
            calls.append(form)
        return {form: seconds[form] for form in steps}
    return timer


def test_the_fastest_form_is_kept_and_read_back_without_timing_again():
    calls: list[str] = []
    ran: list[str] = []
    stepper = lambda form: (lambda: ran.append(form))  # noqa: E731
    key = forms.cache_key("cnn", {"models": 8}, CPU)
    timer = stand_in({"loop": 0.3, "grouped": 0.1}, calls)
    assert forms.fastest(key, ("loop", "grouped"), stepper, CPU, timer) == "grouped"
    assert sorted(calls) == ["grouped", "loop"]
    stored = json.loads((forms.cache_dir() / "forms.json").read_text())
    assert stored[key] == {"form": "grouped", "timed": ["grouped", "loop"],
                           "seconds_per_step": {"grouped": 0.1, "loop": 0.3}}
    forms._MEMO.clear()  # another process on this machine: read from the file
    slower = stand_in({"loop": 0.1, "grouped": 0.3}, calls)
    assert forms.fastest(key, ("loop", "grouped"), stepper, CPU, slower) == "grouped"
    assert len(calls) == 2
    # another shape is timed on its own and kept beside the first
    other = forms.cache_key("cnn", {"models": 32}, CPU)
    assert forms.fastest(other, ("loop", "grouped"), stepper, CPU, slower) == "loop"
    stored = json.loads((forms.cache_dir() / "forms.json").read_text())
    assert {stored[key]["form"], stored[other]["form"]} == {"grouped", "loop"}


def test_a_choice_made_among_fewer_forms_is_timed_again():
    """A form added since a choice was recorded (the conv nets' ``patches``) is timed: the
    old entry, or one from before entries listed their forms, does not answer; a choice
    among all of them does, whichever process asks."""
    calls: list[str] = []
    stepper = lambda form: (lambda: None)  # noqa: E731
    key = forms.cache_key("cnn", {"models": 8}, CPU)
    path = forms.cache_dir() / "forms.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({key: {"form": "grouped",  # written before "timed" existed
                                      "seconds_per_step": {"grouped": 0.1, "loop": 0.3}}}))
    two = stand_in({"loop": 0.3, "grouped": 0.1}, calls)
    assert forms.fastest(key, ("loop", "grouped"), stepper, CPU, two) == "grouped"
    assert sorted(calls) == ["grouped", "loop"]  # timed again: the entry named no forms
    assert forms.fastest(key, ("loop", "grouped"), stepper, CPU, two) == "grouped"
    assert len(calls) == 2  # now it does
    three = stand_in({"loop": 0.3, "grouped": 0.1, "patches": 0.05}, calls)
    assert forms.fastest(key, ("loop", "grouped", "patches"), stepper, CPU, three) == "patches"
    assert len(calls) == 5
    forms._MEMO.clear()  # another process reads the file
    assert forms.fastest(key, ("loop", "grouped", "patches"), stepper, CPU, three) == "patches"
    assert len(calls) == 5
    assert forms.cached(key, ("loop", "grouped", "patches", "vmap")) is None
    assert forms.cached(key) == "patches"


def test_a_form_that_cannot_run_is_never_chosen():
    def stepper(form):
        if form == "grouped":
            def fails():
                raise RuntimeError("grouped convolution not supported on this device")
            return fails
        return lambda: None

    key = forms.cache_key("cnn", {"models": 4}, CPU)
    timer = stand_in({"loop": 5.0, "grouped": 0.001}, [])
    assert forms.fastest(key, ("grouped", "loop"), stepper, CPU, timer) == "loop"


def test_a_damaged_cache_is_timed_again_and_rewritten_whole():
    path = forms.cache_dir() / "forms.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    key = forms.cache_key("custom", {"models": 2}, CPU)
    calls: list[str] = []
    stepper = lambda form: (lambda: None)  # noqa: E731
    got = forms.fastest(key, ("loop", "batched"), stepper, CPU,
                        stand_in({"loop": 0.2, "batched": 0.1}, calls))
    assert got == "batched" and len(calls) == 2
    assert json.loads(path.read_text())[key]["form"] == "batched"
    assert not list(path.parent.glob(".forms-*"))  # no temporary file left behind


def test_the_key_names_the_machine_and_the_real_timer_takes_turns():
    key = json.loads(forms.cache_key("cnn", {"models": 1}, CPU))
    assert key["device"] == "cpu" and key["torch"] == torch.__version__
    assert key["threads"] == torch.get_num_threads() and key["models"] == 1
    assert key["device_name"] == forms.cpu_name() and key["device_name"]
    order: list[str] = []
    got = forms.timed({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, CPU,
                      rounds=2)
    assert order == ["a", "b", "a", "b"]  # turn by turn
    assert set(got) == {"a", "b"} and all(s >= 0 for s in got.values())
