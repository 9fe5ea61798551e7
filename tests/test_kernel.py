"""The compiled C kernel: its dropout masks, one dropout step against autograd, and how it
is built and chosen. (Without dropout it is held to the per-fold ``nn.Linear`` reference by
the ``engine``-parametrised tests in test_trainer.py.)"""

from __future__ import annotations

import functools
import json
import subprocess
from dataclasses import replace
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dropsweep.families.mlp import engine as trainer
from dropsweep.env import EnvError
from dropsweep.families.mlp import kernel
from dropsweep.families.mlp.tiles import TILES
from dropsweep.families.mlp import config as mlp_config
from dropsweep.families.mlp.network import glorot_init, layer_sizes
from dropsweep.families.mlp.engine import TrainSettings, train_trials, use_kernel
from dropsweep.data.protocols import make_folds
from dropsweep.train import forms
from dropsweep.train.loop import epoch_order, epoch_orders

pytestmark = pytest.mark.skipif(kernel.load() is None,
                                reason="the C kernel cannot be built here (no C compiler)")


def seeded(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def blob_data(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % 2
    X = (rng.normal(size=(rows, features)) + y[:, None]).astype(np.float32)
    return X, y.astype(np.int64)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5, 0.8])
def test_masks_keep_units_at_one_minus_the_rate_and_scale_them_by_its_inverse(rate):
    mask = kernel.masks(200_000, key=12345, counter=0, rate=rate)
    values = torch.unique(mask).tolist()
    assert all(v == 0.0 or v == pytest.approx(1 / (1 - rate)) for v in values)
    assert (0.0 in values) == (rate > 0)
    assert abs(float((mask > 0).double().mean()) - (1 - rate)) < 0.005
    assert float(mask.double().mean()) == pytest.approx(1.0, abs=0.01)  # inverted: E[mask] = 1


def test_masks_are_a_stream_per_key_that_the_counter_walks_along():
    whole = kernel.masks(1000, key=7, counter=0, rate=0.5)
    assert torch.equal(whole[400:], kernel.masks(600, key=7, counter=400, rate=0.5))
    other = kernel.masks(1000, key=8, counter=0, rate=0.5)
    assert float((whole != other).double().mean()) > 0.3
    # the draws do not depend on the rate: a higher rate only drops more of the same units
    assert bool(((kernel.masks(1000, 7, 0, 0.7) > 0) <= (whole > 0)).all())


def splitmix_masks(n: int, key: int, counter: int, rate: float) -> np.ndarray:
    """The mask stream written from kernel.c's own description: unit u is kept when 16-bit
    lane u % 4 of SplitMix64(key + (u // 4) * golden) is below (1 - rate) * 2^16."""
    m64, golden = (1 << 64) - 1, 0x9E3779B97F4A7C15
    keep = int(np.rint((1.0 - float(np.float32(rate))) * 65536.0))
    scale = np.float32(1.0) / (np.float32(1.0) - np.float32(rate))
    out = np.empty(n, dtype=np.float32)
    for i, u in enumerate(range(counter, counter + n)):
        z = (key + (u >> 2) * golden) & m64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m64
        z ^= z >> 31
        out[i] = scale if (z >> (16 * (u & 3))) & 0xFFFF < keep else 0.0
    return out


@pytest.mark.parametrize("counter, n", [(0, 1000), (1, 7), (3, 1030), (258, 4 * 64 + 5)])
def test_masks_are_splitmix64_lanes_however_a_draw_starts_and_ends(counter, n):
    """A draw that starts inside a word, runs over the kernel's blocks of 64 words (its
    vectorised path) and ends inside a word gives the units the formula does."""
    for rate in (0.2, 0.5):
        got = kernel.masks(n, key=0xDEADBEEF12345, counter=counter, rate=rate).numpy()
        assert np.array_equal(got, splitmix_masks(n, 0xDEADBEEF12345, counter, rate))


@pytest.fixture(params=[None, 4, 8, 16], ids=["native", "vl4", "vl8", "vl16"])
def vector_width(request, tmp_path, monkeypatch):
    """The kernel as this CPU builds it, and forced to each vector width the source chooses
    among (AVX-512, AVX, SSE), so every width's code runs on any machine."""
    if request.param is not None:
        monkeypatch.setenv("DROPSWEEP_KERNEL_DIR", str(tmp_path))
        monkeypatch.setattr(kernel, "FLAGS", [*kernel.FLAGS, f"-DVL={request.param}"])
        monkeypatch.setattr(kernel, "_lib", kernel._UNSET)
        assert kernel.load() is not None, kernel.unavailable()
    return request.param


@pytest.mark.slow
def test_one_dropout_step_equals_autograd_with_the_kernels_own_masks(vector_width):
    """Input and hidden dropout on, one minibatch (the whole fold), momentum and max-norm:
    the kernel's weights after one step equal a float64 autograd step that uses the masks
    drawn from the model's own key in the kernel's order (each row's input units, then each
    hidden layer's units row by row). Widths 7 and 4 and 5 features pad every layer."""
    X, y = blob_data(24, 5)
    folds = make_folds(X, y, 2, seed=0)  # 12 training rows a fold
    config = mlp_config("both", input_rate=0.3, hidden_rate=0.5, learning_rate=0.3,
                         momentum=0.9, max_norm=0.6)
    settings = TrainSettings(hidden=(7, 4), epochs=1, batch_size=16, engine="c")
    sizes = layer_sizes(5, settings.hidden, 2)
    init = glorot_init(2, sizes, seeded(1))
    seed = 11
    result = train_trials([config], folds, settings, seed=seed, init=init)[0]
    assert result.failure is None and result.model is not None
    keys = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    order = epoch_order(seeded(seed), folds.n_train, folds.x_train.shape[1])
    for f in range(2):
        n = int(folds.n_train[f])
        rows = order[f, :n]
        key, counter = int(keys[f]), 0
        in_mask = kernel.masks(n * 5, key, counter, 0.3).view(n, 5).double()
        counter += n * 5
        hid_masks = []
        for width in settings.hidden:
            hid_masks.append(kernel.masks(n * width, key, counter, 0.5).view(n, width).double())
            counter += n * width
        ws = [init.weights[i][f].double().clone().requires_grad_() for i in range(3)]
        bs = [init.biases[i][f, 0].double().clone().requires_grad_() for i in range(3)]
        h = folds.x_train[f, rows].double() * in_mask
        for i in range(3):
            h = h @ ws[i] + bs[i]
            if i < 2:
                h = torch.relu(h) * hid_masks[i]
        F.binary_cross_entropy_with_logits(h[:, 0], folds.y_train[f, rows].double()).backward()
        for i in range(3):
            w = ws[i].detach() - 0.3 * ws[i].grad  # v = 0.9*0 - lr*g; w += v
            if i < 2:
                norms = w.pow(2).sum(0, keepdim=True).sqrt()
                w = w * norms.clamp(0, 0.6) / (1e-7 + norms)
            torch.testing.assert_close(result.model.weights[i][f].double(), w, rtol=0, atol=1e-5)
            torch.testing.assert_close(result.model.biases[i][f, 0].double(),
                                       bs[i].detach() - 0.3 * bs[i].grad, rtol=0, atol=1e-5)
        assert float((in_mask == 0).double().mean()) > 0.1  # dropout really dropped units


def _bit_cases() -> tuple[list, list]:
    """Both outputs (sigmoid, softmax), odd widths that leave a product's last rows and columns
    over, dropout, max-norm and a short last minibatch."""
    rng = np.random.default_rng(3)
    cases = []
    for classes, hidden in ((2, (67, 21)), (3, (40, 11, 6))):
        y = np.arange(70) % classes
        X = (rng.normal(size=(70, 13)) + y[:, None]).astype(np.float32)
        cases.append((make_folds(X, y, 3, seed=1),
                      TrainSettings(hidden=hidden, epochs=6, batch_size=9, engine="c")))
    configs = [mlp_config(p, 0.3, 0.45, learning_rate=0.03 * (i + 1), momentum=0.85,
                          max_norm=[None, 1.5][i % 2])
               for i, p in enumerate(["none", "input", "hidden", "both"])]
    return cases, configs


def _trained_by_build(extra: list[str], where, monkeypatch) -> list:
    """Every case trained by the kernel built with ``extra`` flags: scores, curves, weights."""
    cases, configs = _bit_cases()
    monkeypatch.setenv("DROPSWEEP_KERNEL_DIR", str(where))
    monkeypatch.setattr(kernel, "FLAGS", [*kernel.FLAGS, *extra])
    monkeypatch.setattr(kernel, "_lib", kernel._UNSET)
    try:
        assert kernel.load() is not None, kernel.unavailable()
        return [(r.fold_accuracies, r.curve, [w.clone() for w in r.model.weights])
                for folds, settings in cases
                for r in train_trials(configs, folds, settings, seed=0)]
    finally:
        monkeypatch.undo()


def _assert_same_bits(a: list, b: list) -> None:
    for (acc, curve, weights), (acc_b, curve_b, weights_b) in zip(a, b, strict=True):
        assert (acc, curve) == (acc_b, curve_b)
        assert all(torch.equal(w, w_b) for w, w_b in zip(weights, weights_b, strict=True))


@pytest.mark.slow
def test_every_vector_width_gives_the_same_numbers_bit_for_bit(tmp_path, monkeypatch):
    """The kernel built for AVX-512's 16 floats a vector, AVX's 8 and SSE's 4 (rows padded to
    each, transposes and sums over vectors of each) trains every weight to the same bits:
    each sum runs in the same order and each multiply-add is fused where the source says and
    nowhere else (the compiler's own fusing once gave every width, and every unrelated edit,
    other last bits)."""
    trained = {width: _trained_by_build([f"-DVL={width}"], tmp_path / str(width), monkeypatch)
               for width in (4, 8, 16)}
    _assert_same_bits(trained[8], trained[4])
    _assert_same_bits(trained[16], trained[4])


@pytest.mark.slow
def test_every_tile_plan_gives_the_same_numbers_bit_for_bit(tmp_path, monkeypatch):
    """The products cut into narrow tiles (strips of 2 vectors) or wide ones (4 vectors x 4
    rows), as the kernel chooses by timing, train every weight to the same bits: each sum
    still runs over k in order. The 16-float build has both plans on any machine."""
    trained = {}
    for tiles in TILES:
        monkeypatch.setenv("DROPSWEEP_KERNEL_TILES", tiles)
        trained[tiles] = _trained_by_build(["-DVL=16"], tmp_path / "vl16", monkeypatch)
    _assert_same_bits(trained["narrow"], trained["wide"])


@pytest.fixture
def two_plan_run(tmp_path, monkeypatch):
    """The 16-float build (both tile plans on any machine) in its own kernel and cache
    directories, no plan forced or chosen yet; returns a run of a small batch, four spans of
    10 epochs (four timed calls)."""
    monkeypatch.setenv("DROPSWEEP_KERNEL_DIR", str(tmp_path / "kernels"))
    monkeypatch.setenv("DROPSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DROPSWEEP_KERNEL_TILES", raising=False)
    monkeypatch.setattr(kernel, "FLAGS", [*kernel.FLAGS, "-DVL=16"])
    monkeypatch.setattr(kernel, "_lib", kernel._UNSET)
    monkeypatch.setattr(kernel, "_tiles", None)
    monkeypatch.setattr(forms, "_MEMO", {})
    X, y = blob_data(60, 5)
    settings = TrainSettings(hidden=(20, 10), epochs=40, eval_every=10, batch_size=8,
                             engine="c")
    configs = [mlp_config("both", 0.2, 0.3, 0.05, 0.9, None)] * 2
    return functools.partial(train_trials, configs, make_folds(X, y, 3, seed=0), settings,
                             seed=0)


@pytest.mark.slow
def test_a_shapes_tile_plan_is_timed_once_and_remembered_for_later_processes(tmp_path,
                                                                            two_plan_run):
    """A shape's first four calls run narrow, wide, wide, narrow; the faster is recorded in
    the cache's forms.json beside the conv nets' forms, and a later process (nothing in
    memory) takes it without timing again, to the same numbers."""
    first = two_plan_run()
    ((shape, plan),) = kernel.tile_choices().items()
    assert [p for p, _ in kernel._tiles[1].timings(shape)] == ["narrow", "wide", "wide",
                                                                "narrow"]
    table = json.loads((tmp_path / "cache" / "forms.json").read_text())
    (entry,) = [e for key, e in table.items() if '"mlp-kernel-tiles"' in key]
    assert entry["form"] == plan and set(entry["seconds_per_step"]) == set(TILES)
    kernel.use_tiles(None)  # a later process: a fresh chooser, nothing in memory
    forms._MEMO.clear()
    again = two_plan_run()
    assert kernel.tile_choices() == {shape: plan} and kernel._tiles[1].timings(shape) == []
    for a, b in zip(first, again, strict=True):
        assert a.curve == b.curve
        assert all(torch.equal(u, v) for u, v in zip(a.model.weights, b.model.weights))


class _Recording:
    """The kernel library, noting the tile plan (its last argument) of every call."""

    def __init__(self, lib) -> None:
        self._lib, self.plans = lib, []

    def __getattr__(self, name: str):
        return getattr(self._lib, name)

    def dropsweep_epoch(self, *args):
        self.plans.append(args[-1])
        return self._lib.dropsweep_epoch(*args)


@pytest.mark.slow
def test_the_plan_forced_or_on_trial_is_the_one_the_kernel_runs(tmp_path, monkeypatch,
                                                                 two_plan_run):
    """DROPSWEEP_KERNEL_TILES's plan reaches every kernel call; on trial, both do; a plan
    beyond the build's is refused by the kernel itself (a malformed call)."""
    lib = kernel.load()
    assert lib is not None and kernel.tile_plans() == TILES
    for tiles, seen in (("narrow", {0}), ("wide", {1}), ("auto", {0, 1})):
        monkeypatch.setenv("DROPSWEEP_KERNEL_TILES", tiles)
        recording = _Recording(lib)
        monkeypatch.setattr(kernel, "_lib", recording)
        monkeypatch.setattr(kernel, "_tiles", None)
        two_plan_run()
        assert set(recording.plans) == seen, tiles
    (shape,) = kernel.tile_choices()  # decided on trial (auto, four spans)
    monkeypatch.setenv("DROPSWEEP_CACHE_DIR", str(tmp_path / "forgotten"))  # on trial again
    kernel.use_tiles(None)
    monkeypatch.setattr(kernel._tiles[1], "plan", lambda shape: 2)  # no such plan
    with pytest.raises(MemoryError, match="malformed"):
        two_plan_run()
    assert kernel._tiles[1].timings(shape) == []  # a call that failed is not timed


def test_a_tile_plan_the_kernel_lacks_is_one_line_naming_the_variable(monkeypatch):
    class OnePlan:  # a build for AVX2 or SSE: narrow tiles only
        def dropsweep_tile_plans(self) -> int:
            return 1

    monkeypatch.setattr(kernel, "_tiles", None)
    monkeypatch.setenv("DROPSWEEP_KERNEL_TILES", "wide")
    with pytest.raises(EnvError, match="DROPSWEEP_KERNEL_TILES: is 'wide', but this CPU's "
                                       "kernel has only narrow tiles"):
        kernel._chooser(OnePlan())
    monkeypatch.setenv("DROPSWEEP_KERNEL_TILES", "square")
    with pytest.raises(EnvError, match="must be one of auto, narrow, wide, not 'square'"):
        kernel._chooser(OnePlan())
    monkeypatch.setenv("DROPSWEEP_KERNEL_TILES", "Narrow")
    assert kernel._chooser(OnePlan()).forced == 0


@pytest.mark.slow
def test_the_one_output_layers_own_update_gives_the_products_bits(tmp_path, monkeypatch):
    """A sigmoid's layer (one output) is updated with its inputs across the vector, not by
    the general product: the same multiply-adds in the same order, so every weight of every
    layer is the general product's to the bit (the general build: -DGENERAL_PRODUCTS), at
    this CPU's width and at the narrowest."""
    for width in ([], ["-DVL=4"]):
        own = _trained_by_build(width, tmp_path / f"own{len(width)}", monkeypatch)
        general = _trained_by_build([*width, "-DGENERAL_PRODUCTS"],
                                    tmp_path / f"general{len(width)}", monkeypatch)
        _assert_same_bits(own, general)


@pytest.mark.parametrize("classes, pixels", [(2, False), (3, False), (4, True)],
                         ids=["sigmoid", "softmax", "softmax-pixels"])
def test_the_kernels_held_out_scores_are_the_torch_evaluations(classes, pixels):
    """After a span of whole epochs the kernel scores every model on its held-out rows while
    its parameters are in cache; the engine's evaluation answers from those scores. They are
    what the torch evaluation of the same weights gives: the same rows predicted right (a
    sigmoid's logit > 0, else argmax), the same summed loss to float32 rounding, with held-out
    splits of several lengths (none a multiple of the minibatch), 8-bit pixels divided as they
    are read, and a model driven to non-finite weights scored as NaN by both."""
    rng = np.random.default_rng(classes)
    y = np.arange(83) % classes
    if pixels:
        X = rng.integers(0, 256, size=(83, 12), dtype=np.uint8)
        X[:, :3] = np.minimum(255, X[:, :3] // 2 + 60 * y[:, None]).astype(np.uint8)
        folds = make_folds(X, y, 4, seed=2, scale="unit", pixel_max=255.0)
        assert folds.divisor == 255.0
    else:
        X = (rng.normal(size=(83, 12)) + y[:, None]).astype(np.float32)
        folds = make_folds(X, y, 4, seed=2)
    configs = [mlp_config(p, 0.2, 0.3, learning_rate=lr, momentum=0.9, max_norm=3.0)
               for p, lr in (("none", 0.05), ("both", 0.02), ("input", 0.01), ("hidden", 0.05))]
    settings = TrainSettings(hidden=(9, 6), epochs=4, batch_size=7, engine="c")
    engine = trainer.MLPEngine(configs, folds, settings, seed=3)
    assert engine.compiled and len(set(folds.n_test.tolist())) > 1
    with torch.no_grad():
        engine.net.model.weights[1][-4:, 0, 0] = float("nan")  # the last trial's 4 folds
    engine.start_epoch()
    engine.train_epochs(3, score=True)
    acc, loss = engine.evaluate()
    assert engine._held_out is not None  # answered from the kernel's scores
    for held_out in (True, False):  # and the training rows, scored alone
        c_acc, c_loss = engine.evaluate(held_out)
        torch_acc, torch_loss = engine._torch_evaluation(held_out)
        assert torch.equal(c_acc, torch_acc)
        finite = torch.isfinite(torch_loss)
        assert not bool(finite[-4:].any()) and bool(finite[:-4].all())  # the NaN weights
        assert torch.equal(torch.isnan(c_loss), torch.isnan(torch_loss))
        torch.testing.assert_close(c_loss[finite], torch_loss[finite], rtol=2e-6, atol=1e-6)
    finite = torch.isfinite(loss)
    assert 0.3 < float(acc[:4].mean()) <= 1.0  # the scores are of trained models
    engine._held_out = None  # scored alone, by a kernel call that trains nothing
    weights = [w.clone() for w in engine.net.model.weights]
    alone = engine.evaluate()
    assert torch.equal(alone[0], acc) and torch.equal(alone[1].isnan(), loss.isnan())
    assert torch.equal(alone[1][finite], loss[finite])
    assert all(torch.equal(w.view(torch.int32), w0.view(torch.int32))  # NaN != NaN
               for w, w0 in zip(engine.net.model.weights, weights))


def test_the_engines_kept_scores_follow_the_models_it_keeps_and_go_with_new_weights():
    """The engine keeps the kernel's held-out scores only while they are of its weights: the
    models it keeps keep theirs, in their new places; after a slice of an epoch, or weights
    put back (a span given back), the kernel scores them again."""
    X, y = blob_data(60, 5)
    folds = make_folds(X, y, 3, seed=0)
    configs = [mlp_config("none", 0, 0, learning_rate=0.1 * (i + 1), momentum=0.5,
                          max_norm=None) for i in range(3)]
    engine = trainer.MLPEngine(configs, folds, TrainSettings(hidden=(4,), batch_size=8,
                                                             engine="c"), seed=0)
    engine.start_epoch()
    engine.train_epochs(2)
    assert engine._held_out is None  # no checkpoint after that span: nothing scored
    engine.start_epoch()
    engine.train_epochs(2, score=True)
    acc, loss = engine.evaluate()
    engine.keep(torch.tensor([6, 7, 8, 0, 1, 2]))
    assert engine._held_out is not None
    kept_acc, kept_loss = engine.evaluate()
    assert torch.equal(kept_acc, acc[[6, 7, 8, 0, 1, 2]])
    assert torch.equal(kept_loss, loss[[6, 7, 8, 0, 1, 2]])
    before = engine.snapshot()
    engine.start_epoch()
    engine.train_batches(0, 1)
    assert engine._held_out is None
    engine.train_epochs(1, score=True)
    assert engine._held_out is not None
    engine.restore(before)
    assert engine._held_out is None


def test_a_span_trains_into_other_tensors_and_leaves_the_ones_before_it_as_they_were():
    """On the kernel a span's parameters go into a second set of tensors, so the snapshot
    before it (to give a span back where a model diverged) copies nothing and still holds
    the parameters before the span; restored, the next spans never write over them."""
    X, y = blob_data(60, 5)
    folds = make_folds(X, y, 3, seed=0)
    configs = [mlp_config("both", 0.2, 0.3, learning_rate=0.1, momentum=0.8, max_norm=2.0)
               for _ in range(2)]
    engine = trainer.MLPEngine(configs, folds, TrainSettings(hidden=(7, 4), batch_size=8,
                                                             engine="c"), seed=0)

    def values() -> list[torch.Tensor]:
        return [t.clone() for t in engine._trained_tensors()]

    def same(a, b) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

    engine.start_epoch()
    engine.train_epochs(2)
    before = values()
    snap = engine.snapshot()
    assert all(a is b for a, b in zip(snap[0], engine._trained_tensors()))  # no copy
    engine.start_epoch()
    engine.train_epochs(2)
    assert not same(values(), before) and same(snap[0], before)
    engine.restore(snap)
    assert same(values(), before)
    for _ in range(2):  # the restored set is the network's: spans write elsewhere
        again = engine.snapshot()
        engine.start_epoch()
        engine.train_epochs(1)
        assert same(again[0], before)
        engine.restore(again)
    engine.restore(engine.snapshot())  # given back with no span in between
    held = engine.snapshot()
    engine.start_epoch()
    engine.train_epochs(1)
    assert same(held[0], before)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_spans_orders_drawn_at_once_are_its_epochs_orders(threads):
    """A span's epochs' orders are drawn in one go (every key at once, sorted on the
    kernel's threads): exactly what its epochs would draw one after another (the CPU
    generator's numbers do not depend on how many are asked for at a time), and the
    generator ends where they would leave it."""
    n_train = torch.randint(150, 189, (161,), generator=seeded(1))
    one_by_one, at_once = seeded(5), seeded(5)
    expected = torch.stack([epoch_order(one_by_one, n_train, 188, kernel.sorted_positions)
                            for _ in range(9)])
    sort = functools.partial(kernel.sorted_positions, threads=threads)
    assert torch.equal(epoch_orders(at_once, n_train, 188, 9, sort), expected)
    assert torch.equal(at_once.get_state(), one_by_one.get_state())
    assert torch.equal(epoch_orders(seeded(5), n_train, 188, 9), expected)  # NumPy's path


@pytest.mark.parametrize("models, width", [(20_000, 188), (6, 54_001), (5, 1), (40, 2),
                                           (9, 256), (9, 257)])
def test_the_kernels_sort_of_epoch_orders_gives_numpys_order(models, width):
    """The engine sorts each epoch's row keys in C (linear time); the order is the one the
    NumPy path gives: by key, tied keys (20,000 rows of 188 have some) by position, each
    model's padding positions last (none, all, or more rows than the width), whatever the
    row's width (one bucket a key up to 2^20)."""
    n_train = torch.randint(max(1, width - 3), width + 1, (models,), generator=seeded(models))
    n_train[:3] = torch.tensor([0, width // 2, width + 5])[:len(n_train[:3])]
    numpy_order = epoch_order(seeded(width), n_train, width)
    c_order = epoch_order(seeded(width), n_train, width, kernel.sorted_positions)
    assert torch.equal(c_order, numpy_order)


def test_each_model_draws_masks_where_its_placement_says(monkeypatch):
    """Per model, the mask counter advances by exactly the units its placement masks: the
    features of every training row (input), every hidden unit of every row (hidden), both,
    or none."""
    X, y = blob_data(30, 4)
    folds = make_folds(X, y, 2, seed=0)  # 15 training rows a fold
    settings = TrainSettings(hidden=(7, 5), epochs=2, batch_size=8, engine="c")
    real = kernel.train_epoch
    advances = []

    def recording(*args, **kwargs):
        counter = args[14]  # train_epoch(..., key, counter, ...)
        before = counter.clone()
        flags = real(*args, **kwargs)
        advances.append((counter - before).tolist())
        return flags

    monkeypatch.setattr(kernel, "train_epoch", recording)
    configs = [mlp_config("input", 0.3, 0.6), mlp_config("hidden", 0.9, 0.4),
               mlp_config("both", 0.2, 0.5), mlp_config("none", 0.5, 0.5)]
    train_trials(configs, folds, settings, seed=0)
    per_row = [4, 12, 16, 0]  # features, 7 + 5 hidden units, both, none
    # (one call may train both epochs: see test_spans_of_epochs_change_no_number)
    total = np.sum(advances, axis=0).tolist()
    assert total == [2 * 15 * u for u in per_row for _ in range(2)]


def test_threads_share_the_models_out_and_change_no_number(monkeypatch):
    """The kernel's threads take the next model as they come free (a shared claim counter):
    every model is trained exactly once an epoch, whichever thread takes it, so weights,
    velocities, mask counters and results are the same on one thread and on three."""
    X, y = blob_data(40, 6)
    folds = make_folds(X, y, 4, seed=1)
    settings = TrainSettings(hidden=(9, 5), epochs=3, batch_size=8, engine="c")
    configs = [mlp_config(p, 0.3, 0.4, learning_rate=0.05 * (i + 1), momentum=0.8,
                          max_norm=[None, 2.0][i % 2])
               for i, p in enumerate(["none", "input", "hidden", "both", "both"])]
    real = kernel.train_epoch
    states = {}

    def recording(threads):
        def run(*args, **kwargs):
            out = real(*args[:-2], threads, args[-1], **kwargs)
            weights, _, vweights, _ = kwargs.get("out") or args[:4]  # where it trained into
            states.setdefault(threads, []).append(
                [t.clone() for t in (*weights, *vweights, args[14])])
            return out
        return run

    results = {}
    for threads in (1, 3):
        monkeypatch.setattr(kernel, "train_epoch", recording(threads))
        got = train_trials(configs, folds, settings, seed=0)
        results[threads] = [(r.fold_accuracies, r.curve, r.epochs) for r in got]
    assert results[1] == results[3]
    assert len(states[1]) == len(states[3]) >= 1
    for one, three in zip(states[1], states[3]):
        assert all(torch.equal(a, b) for a, b in zip(one, three))


def test_spans_of_epochs_change_no_number(monkeypatch):
    """Several whole epochs in one kernel call (each model trains them in a row) give the
    results, learning curves and weights of one epoch a call, a diverging trial included:
    its span is given back (everything as before it) and its epochs go one at a time, since
    the epochs after a divergence draw their rows' order without the diverged models."""
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    X = (rng.normal(size=(60, 6)) * 30 + y[:, None]).astype(np.float32)
    folds = make_folds(X, y, 3, seed=1)
    settings = TrainSettings(hidden=(9, 5), epochs=25, batch_size=8, eval_every=10,
                             engine="c")
    configs = [mlp_config(p, 0.2, 0.3, learning_rate=lr, momentum=0.9, max_norm=c)
               for p, lr, c in [("none", 0.01, None), ("input", 0.05, 3.0),
                                ("hidden", 0.02, None), ("both", 0.1, 2.0)]]
    configs.append(mlp_config("none", 0.0, 0.0, learning_rate=3000.0, momentum=0.99,
                              max_norm=None))  # NaN at epoch 4, within the first span
    calls = {"spans": 0, "restored": 0}
    spans, restore = trainer.MLPEngine.train_epochs, trainer.MLPEngine.restore

    def counting_spans(self, count, **kw):
        calls["spans"] += 1
        return spans(self, count, **kw)

    def counting_restore(self, snapshot):
        calls["restored"] += 1
        return restore(self, snapshot)

    def run() -> list:
        return [(r.fold_accuracies, r.curve, r.epochs, r.failure,
                 None if r.model is None else [w.clone() for w in r.model.weights])
                for r in train_trials(configs, folds, settings, seed=0)]

    monkeypatch.setattr(trainer.MLPEngine, "train_epochs", counting_spans)
    monkeypatch.setattr(trainer.MLPEngine, "restore", counting_restore)
    spanned = run()
    # 1-10 given back; 1 to 4 one at a time; then 5-10, 11-20, 21-25
    assert calls == {"spans": 4, "restored": 1}
    monkeypatch.setattr(trainer.MLPEngine, "epochs_at_once", lambda self: 1)
    single = run()
    assert calls["spans"] == 4
    assert spanned[-1][3] == "loss became NaN at epoch 4, fold 2" == single[-1][3]

    def alike(a: list, b: list) -> None:
        for x, z in zip(a, b):
            assert x[:4] == z[:4]
            assert (x[4] is None) == (z[4] is None)
            if x[4] is not None:
                assert all(torch.equal(p, q) for p, q in zip(x[4], z[4]))

    alike(spanned, single)
    # a divergence in a span's last epoch keeps the span: nothing after it was drawn
    settings = replace(settings, eval_every=4)
    single = run()
    monkeypatch.undo()
    monkeypatch.setattr(trainer.MLPEngine, "train_epochs", counting_spans)
    monkeypatch.setattr(trainer.MLPEngine, "restore", counting_restore)
    calls.update(spans=0, restored=0)
    spanned = run()
    alike(spanned, single)
    assert spanned[-1][3] == "loss became NaN at epoch 4, fold 2"
    assert calls == {"spans": 6, "restored": 0}  # 1-4 (its last diverged), ..., 21-24; 25


@pytest.mark.slow
def test_loading_the_kernel_leaves_subnormal_floats_alone():
    """-ffast-math's start-up code would flush subnormals to zero in the whole process."""
    code = ("import numpy as np; from dropsweep.families.mlp import kernel; assert kernel.load(); "
            "x = np.float32(1e-39); print(bool(x * np.float32(0.5) > 0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux") or
                    __import__("platform").machine() not in ("x86_64", "AMD64"),
                    reason="the flush-to-zero mode is set on x86 only")
def test_an_epoch_flushes_subnormals_as_tensorflow_does_and_gives_the_mode_back():
    """Updates so small that they are subnormal become exactly zero inside the kernel (as in
    TensorFlow's CPU kernels: a velocity decaying there costs a hundred cycles a step), while
    the calling thread keeps its own mode: subnormals still work after the call."""
    from dropsweep.train.loop import run_epochs

    X, y = blob_data(24, 3)
    folds = make_folds(X, y, 2, seed=0)
    tiny = mlp_config("none", learning_rate=1e-39, momentum=0.0)  # every step subnormal
    engines = {}
    for name in ("c", "torch"):
        settings = TrainSettings(hidden=(4,), epochs=1, batch_size=4, engine=name)
        engines[name] = trainer.MLPEngine([tiny], folds, settings, seed=0)
        run_epochs(engines[name], 1, 1, 1)
    assert all(torch.count_nonzero(v) == 0 for v in engines["c"].net.velocity)
    assert any(torch.count_nonzero(v) > 0 for v in engines["torch"].net.velocity)
    x = np.float32(1e-39)  # this thread ran the kernel (one model: no worker threads)
    assert x * np.float32(0.5) > 0


def test_engine_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert use_kernel("auto", cpu) and use_kernel("c", cpu) and not use_kernel("torch", cpu)
    with pytest.raises(ValueError, match="engine must be one of"):
        use_kernel("fortran", cpu)
    monkeypatch.setattr(kernel, "_lib", None)  # as if no compiler were found
    assert not use_kernel("auto", cpu)
    with pytest.raises(RuntimeError, match="cannot run here"):
        use_kernel("c", cpu)


def test_dropsweep_kernel_torch_switches_the_kernel_off(monkeypatch):
    monkeypatch.setattr(kernel, "_lib", kernel._UNSET)
    monkeypatch.setenv("DROPSWEEP_KERNEL", "torch")
    assert kernel.load() is None
    assert trainer.use_kernel("auto", torch.device("cpu")) is False


@pytest.mark.slow
def test_the_build_is_cached_and_rebuilt_for_another_source(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPSWEEP_KERNEL_DIR", str(tmp_path))
    first = kernel._build("cc")
    assert first.parent == tmp_path and first.exists()
    mtime = first.stat().st_mtime_ns
    assert kernel._build("cc") == first and first.stat().st_mtime_ns == mtime
    source = tmp_path / "kernel.c"
    source.write_text(kernel.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(kernel, "SOURCE", source)
    assert kernel._build("cc") != first
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".c", ".so", ".so"]  # no temp left
