"""The custom family's batched form (issue 15, item 2): every model of a batch in one
``torch.func`` call, held to the per-model loop (itself held to a hand-written PyTorch loop
in tests/test_custom_family.py); per-model dropout rates; the fallback to the loop, in one
line, for modules vmap cannot batch; checkpoints; the benchmark's quick mode."""

from __future__ import annotations

import copy
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from dropsweep.train.checkpoints import Unusable
from dropsweep.families.custom.batched import BatchedEngine, functional_copy
from dropsweep.families.custom.engine import (
    CustomEngine,
    Settings,
    choose_form,
    decide_form,
    resolve_network,
    shape_of,
    train_trials,
)
from dropsweep.train.loop import run_epochs

from helpers import SUITE
from test_custom_family import config, small_folds, sweep_of

REPO = Path(__file__).resolve().parents[1]


def engines(model: str, configs, epochs: int = 2, rows: int = 91, seed: int = 4,
            axis: str = "keras", grads: str = "autograd"):
    """The loop and the batched form, trained side by side on the same batch."""
    sweep = sweep_of(model)
    folds = small_folds(rows)
    network = resolve_network(sweep.sections, shape_of(folds), 10, seed)
    out = []
    for form in ("loop", "batched"):
        settings = Settings(epochs, 32, 1, axis, form)
        engine = (CustomEngine(configs, folds, network, settings, seed) if form == "loop" else
                  BatchedEngine(configs, folds, network, settings, seed, grads))
        for _ in range(epochs):
            engine.start_epoch()
            engine.train_batches(0, engine.n_batches)
        out.append(engine)
    return out


def assert_same(loop, batched, atol=1e-5):
    every = torch.arange(loop.trial_of.numel())
    for got, want in zip(batched.trained(every), loop.trained(every), strict=True):
        for (name, a), b in zip(got.state_dict().items(), want.state_dict().values()):
            assert torch.allclose(a, b, atol=atol), (name, float((a - b).abs().max()))


MODULES = {
    "gated": "{family: custom, module: 'custom_modules.nets:gated', max_norm: ['a', 'out']}",
    "cnn": "{family: custom, module: 'custom_modules.nets:cnn', max_norm: ['0', '5']}",
    "residual": "{family: custom, module: 'custom_modules.nets:residual', "
                "max_norm: ['stem', 'branch.*']}",
}


@pytest.mark.parametrize("name", MODULES)
def test_without_dropout_the_batched_form_is_the_loop(name):
    configs = [config(optimizer="sgd", learning_rate=0.05, momentum=0.9, max_norm=0.8),
               config(optimizer="adam", learning_rate=0.003, momentum=0.0),
               config(optimizer="sgd", learning_rate=0.1, momentum=0.0, max_norm=1.5)]
    loop, batched = engines(MODULES[name], configs)  # splits of 45 and 46 rows: padding
    assert_same(loop, batched)
    for held_out in (True, False):
        for a, b in zip(loop.evaluate(held_out), batched.evaluate(held_out)):
            assert torch.allclose(a, b, atol=1e-5)


def test_torch_func_grad_inside_the_vmap_computes_the_same():
    configs = [config(optimizer="sgd", learning_rate=0.05, momentum=0.9, max_norm=0.8),
               config(optimizer="adam", learning_rate=0.003, momentum=0.0)]
    loop, batched = engines(MODULES["residual"], configs, epochs=1, grads="func")
    assert batched.grads == "func"
    assert_same(loop, batched)


def test_max_norm_with_the_filter_axis_holds_in_both_forms():
    configs = [config(optimizer="adam", learning_rate=0.01, momentum=0.0, max_norm=0.3)]
    loop, batched = engines(MODULES["cnn"], configs, epochs=1, axis="filter")
    assert_same(loop, batched)
    w = batched.params["0.weight"]
    assert float(w.pow(2).sum((2, 3, 4)).sqrt().max()) <= 0.3 + 1e-5


def test_each_model_gets_its_rates_a_zero_rate_trains_as_without_dropout():
    model = MODULES["cnn"]
    off = config("site_3+site_7", "adam", 0.003, 0.0, site_3_rate=0.0, site_7_rate=0.0)
    high = config("site_3+site_7", "adam", 0.003, 0.0, site_3_rate=0.6, site_7_rate=0.6)
    loop, batched = engines(model, [config(optimizer="adam", learning_rate=0.003,
                                           momentum=0.0)] * 2)
    _, mixed = engines(model, [off, high])
    rates = mixed.buffers["3.rate"].tolist()
    assert rates == pytest.approx([0.0, 0.0, 0.6, 0.6])
    every = torch.arange(4)
    plain, dropped = batched.trained(every), mixed.trained(every)
    for m in (0, 1):  # rate 0 at every site: exactly as with dropout off
        for a, b in zip(plain[m].state_dict().values(), dropped[m].state_dict().values()):
            assert torch.allclose(a, b, atol=1e-6)
    assert max(float((a - b).abs().max()) for a, b in zip(
        plain[2].state_dict().values(), dropped[2].state_dict().values())) > 1e-3
    assert dropped[2][3].p == 0.6 and type(dropped[2][3]).__name__ == "Dropout2d"


def test_spatial_sites_drop_whole_channels_each_model_at_its_own_rate():
    net = torch.nn.Sequential(torch.nn.Dropout2d(0.0), torch.nn.Dropout(0.0))
    template = functional_copy(net, {"maps": ["0"], "units": ["1"]})
    assert [type(m).__name__ for m in template] == ["RateDropout", "RateDropout"]
    copies = []
    for rate in (0.5, 0.0, 0.3):
        model = copy.deepcopy(template)
        model[0].rate.fill_(rate)
        copies.append(model)
    _, buffers = stack_module_state(copies)
    base = template.to("meta").train()
    base[1].active = False
    x = torch.ones(3, 64, 6, 5, 5)
    out = vmap(lambda b, x: functional_call(base, b, (x,)), randomness="different")(
        buffers, x)
    for m, keep in enumerate((0.5, 1.0, 0.7)):
        maps = out[m].flatten(2)
        assert bool((maps == maps[:, :, :1]).all())  # one draw per (example, channel)
        assert all(v == 0 or v == pytest.approx(1 / keep) for v in maps[:, :, 0].unique().tolist())
    kept = (out[0].flatten(2)[:, :, 0] > 0).float().mean()
    assert 0.35 < float(kept) < 0.65 and bool((out[1] == 1).all())
    assert not bool((out[0] == out[2]).all())  # models draw apart


def test_batchnorm_falls_back_to_the_loop_in_one_line_and_still_trains_as_the_loop(capsys):
    sweep = sweep_of("{family: custom, module: 'custom_modules.nets:cnn', args: {bn: true}}")
    folds = small_folds()
    network = resolve_network(sweep.sections, shape_of(folds), 10, 2)
    form, why = choose_form(network)
    assert form == "loop" and len(why.splitlines()) == 1
    assert "BatchNorm2d '1' updates running statistics" in why
    assert "model by model" in why and "the batched form's time" in why
    configs = [config(optimizer="adam", learning_rate=0.003, momentum=0.0)]
    results = train_trials(configs, folds, sweep.sections, 2)
    note = capsys.readouterr().err.strip().splitlines()
    assert note == [f"note: {why}"]
    want = CustomEngine(configs, folds, network, Settings(2, 32, 1), 2)
    run_epochs(want, 1, 2, 1)
    for got, ref in zip(results[0].model, want.trained(torch.arange(2))):
        for a, b in zip(got.state_dict().values(), ref.state_dict().values()):
            assert torch.equal(a, b)


def test_item_in_forward_falls_back_and_the_batched_form_is_taken_otherwise():
    folds = small_folds()
    itemised = sweep_of("{family: custom, module: 'custom_modules.nets:itemised'}")
    item = resolve_network(itemised.sections, shape_of(folds), 10, 0)
    form, why = choose_form(item)
    assert form == "loop" and why.count("\n") == 0 and "vmap raises" in why
    assert "calling .item() on a Tensor" in why and why.endswith("small MLP or CNN)")
    sweep = sweep_of(MODULES["residual"])
    plain = resolve_network(sweep.sections, shape_of(folds), 10, 0)
    assert choose_form(plain) == ("batched", None)
    assert choose_form(plain, "loop") == ("loop", None)
    assert decide_form(sweep.sections, plain, 10, "auto", torch.device("cpu")) == "batched"
    with pytest.raises(ValueError, match="auto"):
        choose_form(plain, "grouped")


def test_a_random_operation_in_forward_falls_back_to_the_loop_and_evaluates(capsys):
    """The probe evaluates as well as trains: noise drawn in ``forward`` passes a training
    step's vmap (randomness "different") but not the evaluation's, so the module trains
    model by model, said in one note, instead of failing at its first score."""
    sweep = sweep_of("{family: custom, module: 'custom_modules.hostile:noisy'}")
    folds = small_folds()
    network = resolve_network(sweep.sections, shape_of(folds), 10, 0)
    form, why = choose_form(network)
    assert form == "loop" and len(why.splitlines()) == 1
    assert "vmap raises RuntimeError" in why and "random operation" in why
    configs = [config(optimizer="adam", learning_rate=0.003, momentum=0.0),
               config(optimizer="sgd", learning_rate=0.05, momentum=0.9)]
    results = train_trials(configs, folds, sweep.sections, 0)
    assert capsys.readouterr().err.strip().splitlines() == [f"note: {why}"]
    for r in results:
        assert r.failure is None and len(r.fold_accuracies) == folds.k
    SUITE["hostile custom modules"] += 1


def test_a_batched_checkpoint_resumes_exactly_and_a_loop_checkpoint_is_refused():
    sweep = sweep_of(MODULES["cnn"])
    folds = small_folds()
    configs = [config("site_3", "adam", 0.003, 0.0, site_3_rate=0.3, site_7_rate=0.0),
               config("site_7", max_norm=1.0, site_3_rate=0.0, site_7_rate=0.5)]
    network = resolve_network(sweep.sections, shape_of(folds), 10, 5)

    def engine(form="batched"):
        cls = BatchedEngine if form == "batched" else CustomEngine
        return cls(configs, folds, network, Settings(2, 32, 1, form=form), 5)

    whole, first = engine(), engine()
    for e in (whole, first):
        e.start_epoch()
        e.train_batches(0, e.n_batches)
    first.keep(torch.tensor([0, 1, 3]))
    whole.keep(torch.tensor([0, 1, 3]))
    buffer = io.BytesIO()
    torch.save(first.state(), buffer)
    buffer.seek(0)
    resumed = engine()
    resumed.load_state(torch.load(buffer, weights_only=True))
    for e in (whole, resumed):
        e.start_epoch()
        e.train_batches(0, e.n_batches)
    for n in whole.params:
        assert torch.equal(whole.params[n], resumed.params[n])
    assert resumed.fold_of.tolist() == [0, 1, 1]
    with pytest.raises(Unusable, match="'loop'"):
        engine().load_state(engine("loop").state())
    with pytest.raises(Unusable, match="'batched'"):
        engine("loop").load_state(engine().state())


@pytest.mark.slow
def test_the_benchmark_s_quick_mode_prints_its_ratios():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "custom_batched.py"),
                           "--quick"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines()
            if re.match(r"(mlp|cnn) +\d+ models +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+x +[\d.]+x "
                        r"+(loop|batched)$", line)]
    assert len(rows) == 4, done.stdout
