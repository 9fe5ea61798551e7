"""The conv-net family end to end: its model section and space, the engine that trains
every split of several trials as one batch (against per-model training on exactly each
model's rows), checkpoints, export into a plain ``nn.Sequential``, and the CLI (issue 14)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from dropsweep.sweep import space as spaces
from dropsweep.cli import main
from dropsweep.sweep.config import build_sweep
from dropsweep.data.dataset import load_dataset
from dropsweep.errors import SweepError
from dropsweep.families.cnn import CNN, config, dropout_rates, sites_of
from dropsweep.families.cnn.engine import (
    CNNEngine,
    choose_form,
    cost_of,
    settings_of,
    spec_of,
)
from dropsweep.families.cnn import engine as cnn_engine
from dropsweep.families.cnn.network import FORMS, ConvNets, ConvSpec
from dropsweep.data.protocols import make_folds
from dropsweep.sweep.file import parse_sweep_text
from dropsweep.train.loop import run_epochs

from helpers import assert_one_line

DIGITS = """\
name: digits-cnn
data: {dataset: digits, scale: unit}
model: {family: cnn, conv: [4, 6], dense: [12], padding: same}
train: {epochs: 2, batch_size: 33, eval_every: 1}
eval: {protocol: holdout, validation: 0.2, test: 0.2}
search: {trials: 4, sampler: random}
"""


def sweep_of(text: str = DIGITS, file: str = "s.yaml"):
    return build_sweep(parse_sweep_text(text, file))


def small_folds(rows: int = 100, k: int = 3):
    """Three folds of 100 digits: training splits of 66 and 67 rows, so with minibatches
    of 33 one split has no row left for the third minibatch of an epoch."""
    dataset = load_dataset(sweep_of())
    X, y = dataset.X[:rows], dataset.y[:rows]
    return make_folds(X, y, k, seed=3, n_classes=10, scale="unit", pixel_max=16.0,
                      image_shape=dataset.image_shape)


# ----------------------------------------------------------------------------- the sweep


def test_the_model_section_takes_keras_s_defaults_and_refuses_mistakes_in_one_line():
    sweep = sweep_of()
    assert sweep.model.to_dict() == {"family": "cnn", "conv": [4, 6], "kernel": 3, "pool": 2,
                                     "dense": [12], "init": "he_uniform", "padding": "same",
                                     "max_norm_axis": "keras"}
    assert sweep.baseline["optimizer"] == "adam" and sweep.baseline["learning_rate"] == 1e-3
    bad = {"model: {family: cnn, init: lecun}": ("model.init", "must be one of"),
           "model: {family: cnn, conv: []}": ("model.conv", "list of channels"),
           "model: {family: cnn, conv: [8, 0]}": ("model.conv.1", "at least 1"),
           "model: {family: cnn, kernel: 4, padding: same}": ("model.kernel", "odd kernel"),
           "model: {family: cnn, max_norm_axis: rows}": ("model.max_norm_axis", "keras"),
           "model: {family: cnn, hidden: [3]}": ("model.hidden", "unknown key")}
    for text, (key, fragment) in bad.items():
        with pytest.raises(SweepError) as err:
            sweep_of(f"name: x\n{text}\n")
        assert_one_line(err.value, "s.yaml", 2, key, fragment)


def test_a_network_that_does_not_fit_the_images_names_the_key():
    deep = sweep_of(DIGITS.replace("conv: [4, 6]", "conv: [4, 6, 8, 8]"))
    with pytest.raises(SweepError) as err:
        spec_of(deep.sections, (8, 8), 10)
    assert_one_line(err.value, "s.yaml", 3, "model.conv", "pooling leaves no feature map")
    with pytest.raises(SweepError) as err:
        spec_of(sweep_of().sections, None, 2)  # a table, Sonar say
    assert_one_line(err.value, "s.yaml", 3, "model.family", "needs images")


def test_a_search_on_a_table_or_too_deep_a_net_is_a_user_error(tmp_path: Path):
    for text, key in ((DIGITS.replace("data: {dataset: digits, scale: unit}",
                                      "data: {dataset: sonar}").replace(
                                          "eval: {protocol: holdout, validation: 0.2, "
                                          "test: 0.2}", "cv: {folds: 3}"), "model.family"),
                      (DIGITS.replace("conv: [4, 6]", "conv: [4, 6, 8, 8]"), "model.conv")):
        path = tmp_path / "s.yaml"
        path.write_text(text)
        result = CliRunner().invoke(main, ["search", str(path), "--storage",
                                           f"sqlite:///{tmp_path}/s.db"])
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and key in result.stderr
        assert not (tmp_path / "s.db").exists() or not optuna.get_all_study_names(
            f"sqlite:///{tmp_path}/s.db")


def test_rates_are_sampled_only_at_the_sites_a_placement_uses_and_momentum_only_for_sgd():
    space = spaces.defaults(CNN.dimensions)
    seen = set()
    for seed in range(200):
        rng = np.random.default_rng(seed)

        def pick(dim, param):
            if isinstance(param, spaces.Choices):
                return param.values[rng.integers(len(param.values))]
            return float(rng.uniform(param.low, param.high))

        c = spaces.walk(CNN.dimensions, space, pick)
        sites = sites_of(c["placement"])
        for site in ("input", "conv", "dense"):
            assert (c[f"{site}_rate"] > 0) == (site in sites)
        assert c["spatial"] is False or "conv" in sites
        assert (c["momentum"] > 0) == (c["optimizer"] == "sgd")
        seen.add((c["placement"], c["optimizer"], c["spatial"]))
    assert {p for p, _, _ in seen} == set(CNN.group_values)
    assert any(s for _, _, s in seen)


def test_a_listed_adam_configuration_with_momentum_is_refused():
    text = DIGITS + ("space:\n  - {placement: conv, conv_rate: 0.3, spatial: true, "
                     "optimizer: adam, learning_rate: 0.001, momentum: 0.9}\n")
    with pytest.raises(SweepError) as err:
        sweep_of(text)
    assert_one_line(err.value, "s.yaml", 8, "space.0.momentum", "does not use momentum")
    with pytest.raises(SweepError) as err:
        sweep_of(DIGITS + "space: {spatial: [0, 1]}\n")
    assert "space.spatial.0" in str(err.value) and "true or false" in str(err.value)


def test_configurations_read_as_words():
    assert CNN.describe(config("conv+dense", conv_rate=0.41, spatial=True, dense_rate=0.5,
                               learning_rate=3e-4)) == \
        "conv dropout 0.41 (spatial), dense 0.5, Adam lr 0.0003"
    assert CNN.describe(config(optimizer="sgd", learning_rate=0.01, momentum=0.9,
                               max_norm=2)) == "no dropout, SGD lr 0.01 momentum 0.9, max-norm 2"
    assert dropout_rates(config("dense", conv_rate=0.3, spatial=True, dense_rate=0.5)) == (
        0.0, 0.0, 0.5, False)


def test_the_form_is_the_one_measured_fastest_and_a_resumed_batch_keeps_its_own(monkeypatch):
    """auto times every form on throwaway engines (nothing of the batch's draws), keeps the
    faster for this network, model count, minibatch and machine, and reads it back instead
    of timing again; a forced engine and a resumed batch's form win over the measurement."""
    from dropsweep.train import forms
    from dropsweep.train.hooks import TrainHooks

    folds = small_folds()
    sweep = sweep_of()
    spec = spec_of(sweep.sections, folds.image_shape, 10)
    configs = [config(), config("dense", dense_rate=0.5)]
    timed: list[str] = []
    real_fastest = forms.fastest

    def made_up(slow: str):
        """forms.fastest, its timer a stand-in: the ``slow`` form takes 2 s a step."""
        def fastest(key, candidates, stepper, device):
            def timer(steps, device):
                for form, step in steps.items():
                    step()  # the throwaway engine really trains a minibatch
                    timed.append(form)
                return {form: 2.0 if form == slow else 1.0 for form in steps}
            return real_fastest(key, candidates, stepper, device, timer)
        return fastest

    for slow, fast in (("loop", "grouped"), ("grouped", "loop")):
        forms._MEMO.clear()
        for f in Path(forms.cache_dir()).glob("forms.json"):
            f.unlink()
        monkeypatch.setattr(forms, "fastest", made_up(slow))
        timed.clear()
        engine = CNNEngine(configs, folds, settings_of(sweep.sections, spec), seed=5)
        assert engine.form == fast and sorted(timed) == sorted(FORMS)  # each once
        forms._MEMO.clear()  # another process: the cache file answers, no timing
        assert CNNEngine(configs, folds, settings_of(sweep.sections, spec), seed=5).form == fast
        assert len(timed) == len(FORMS)
        # another number of models is another measurement
        CNNEngine(configs[:1], folds, settings_of(sweep.sections, spec), seed=5)
        assert len(timed) == 2 * len(FORMS)
        assert CNNEngine(configs, folds, settings_of(sweep.sections, spec, slow),
                         seed=5).form == slow
        resumed = cnn_engine.batch_engine(configs, folds, sweep.sections, 5, TrainHooks(
            resume={"engine": {"form": slow}}))
        assert resumed.form == slow
    stored = json.loads((forms.cache_dir() / "forms.json").read_text())
    assert {entry["form"] for entry in stored.values()} == {"loop"}
    assert all(set(entry["seconds_per_step"]) == set(FORMS)
               for entry in stored.values())
    with pytest.raises(ValueError, match="engine must be one of"):
        choose_form(spec, "vmap")


def test_the_measured_choice_changes_no_result():
    """A batch that timed its forms first trains to exactly the numbers of one told the
    form it chose: the timing's engines draw from their own generators."""
    folds = small_folds()
    sweep = sweep_of()
    spec = spec_of(sweep.sections, folds.image_shape, 10)
    configs = [config("conv+dense", conv_rate=0.3, dense_rate=0.5), config()]
    auto = CNNEngine(configs, folds, settings_of(sweep.sections, spec), seed=7)
    told = CNNEngine(configs, folds, settings_of(sweep.sections, spec, auto.form), seed=7)
    for engine in (auto, told):
        engine.start_epoch()
        engine.train_batches(0, engine.n_batches)
    for a, b in zip(auto.nets.tensors(), told.nets.tensors()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- the engine


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("optimizer,max_norm", [("sgd", None), ("adam", 0.8)])
def test_the_batch_trains_each_split_as_if_alone(form, optimizer, max_norm):
    """Two trials x three splits of unequal size (66 and 67 rows, minibatches of 33: one
    split has nothing left for an epoch's last minibatch and must not step) against each
    model trained alone, minibatch by minibatch on exactly its real rows, from the same
    initial weights (dropout off): the same weights after two epochs."""
    folds = small_folds()
    assert sorted(set(folds.n_train.tolist())) == [66, 67]
    sweep = sweep_of()
    spec = spec_of(sweep.sections, folds.image_shape, 10)
    configs = [config(optimizer=optimizer, learning_rate=0.01, momentum=0.9,
                      max_norm=max_norm),
               config(optimizer=optimizer, learning_rate=0.003, momentum=0.5,
                      max_norm=max_norm)]
    engine = CNNEngine(configs, folds, settings_of(sweep.sections, spec, form), seed=5)
    alone = [engine.nets.select(torch.tensor([m])) for m in range(engine.size)]
    orders = []
    for _ in range(2):
        engine.start_epoch()
        orders.append(engine.order.clone())
        engine.train_batches(0, engine.n_batches)
    bs = engine.bs
    for m, net in enumerate(alone):
        fold, cfg = int(engine.fold_of[m]), configs[int(engine.trial_of[m])]
        n = int(folds.n_train[fold])
        for order in orders:
            for b in range(engine.n_batches):
                positions = order[m, b * bs:min((b + 1) * bs, n)]
                if positions.numel() == 0:
                    continue
                x, y = folds.gather(torch.tensor([fold]), positions[None])
                net.step(engine.images(x), y, optimizer=optimizer,
                         lr=torch.tensor([cfg["learning_rate"]]),
                         momentum=torch.tensor([cfg["momentum"]]),
                         max_norm_c=torch.tensor([max_norm or math.inf]), form="loop")
        for got, want in zip(engine.nets.parameters(), net.parameters()):
            torch.testing.assert_close(got[m:m + 1], want, rtol=1e-5, atol=1e-6)
        assert int(engine.nets.steps[m]) == int(net.steps[0])
    # 67 rows: minibatches of 33, 33 and 1, three steps an epoch; 66 rows: two
    assert sorted(set(engine.nets.steps.tolist())) == [4, 6]


def test_dropout_and_spatial_maps_reach_the_engine():
    """With conv dropout the batch's models drift apart from the dropout-free ones, and a
    spatial model's first conv block sees whole maps zeroed."""
    folds = small_folds()
    sweep = sweep_of()
    spec = spec_of(sweep.sections, folds.image_shape, 10)
    configs = [config(), config("conv", conv_rate=0.5, spatial=True)]
    engine = CNNEngine(configs, folds, settings_of(sweep.sections, spec), seed=1)
    assert bool(engine.dropping) and engine.spatial.tolist() == [False] * 3 + [True] * 3
    assert engine.p_conv.tolist() == [0.0] * 3 + [0.5] * 3


def test_a_checkpoint_goes_on_exactly_as_if_never_stopped():
    folds = small_folds()
    sweep = sweep_of(DIGITS.replace("epochs: 2", "epochs: 4"))
    spec = spec_of(sweep.sections, folds.image_shape, 10)
    configs = [config("all", input_rate=0.2, conv_rate=0.3, spatial=True, dense_rate=0.5),
               config("dense", dense_rate=0.4, optimizer="sgd", learning_rate=0.05,
                      momentum=0.9, max_norm=2.0)]
    settings = settings_of(sweep.sections, spec)
    whole = run_epochs(CNNEngine(configs, folds, settings, 9), 2, 4, 1)
    saved = []

    class Save:
        def due(self):
            return True

        def __call__(self, state):
            saved.append(state)

    run_epochs(CNNEngine(configs, folds, settings, 9), 2, 4, 1, save=Save())
    resumed = run_epochs(CNNEngine(configs, folds, settings, 9), 2, 4, 1,
                         resume=saved[1])  # after epoch 2
    for a, b in zip(whole, resumed):
        assert a.fold_accuracies == b.fold_accuracies and a.curve == b.curve
        for p, q in zip(a.model.parameters(), b.model.parameters()):
            assert torch.equal(p, q)


def test_evaluation_in_chunks_scores_as_one_pass(monkeypatch: pytest.MonkeyPatch):
    folds = small_folds()
    sweep = sweep_of()
    spec = spec_of(sweep.sections, folds.image_shape, 10)
    engine = CNNEngine([config()], folds, settings_of(sweep.sections, spec), seed=2)
    whole = engine.evaluate()
    monkeypatch.setattr(CNNEngine, "eval_rows", lambda self: 7)
    chunked = engine.evaluate()
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_search_report_and_export_into_a_plain_sequential(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")  # a wide terminal: the confirmed table's every column
    (tmp_path / "s.yaml").write_text(DIGITS + "space:\n  placement: [none, conv, all]\n"
                                              "  spatial: [false, true]\n")
    runner = CliRunner()
    out = {}
    for args in (["search", "s.yaml"], ["report"], ["confirm", "--per-placement",
                                                     "--repeats", "2"],
                 ["test", "--repeats", "2"], ["report"],
                 ["export", "-o", "best.yaml", "--model", "best.pt"]):
        result = runner.invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        out[args[0]] = result.stdout
    assert "conv rate" in out["report"] and "spatial" in out["report"]
    assert re.search(r"\bspatial\b", out["report"]) and "True" not in out["report"]
    # confirmation and the test speak of the conv net's sites and its optimizer
    assert re.search(r"(no dropout|conv dropout [0-9.]+( \(spatial\))?)[^\n]*Adam lr",
                     out["confirm"]), out["confirm"]
    # Adam has no momentum: its rows leave that column empty rather than claim a 0
    assert re.search(r"\badam\s+\S+\s+off\s", out["confirm"]), out["confirm"]
    assert not re.search(r"\badam\s+\S+\s+0\s", out["confirm"])
    assert re.search(r"Test: .* scores [0-9.]+% on the \d+ test rows", out["test"])
    assert "Test (digits-cnn:test" in out["report"]  # the second report shows the test
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    assert saved["image_shape"] == [8, 8, 1] and saved["conv"] == [4, 6]
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(6 * 2 * 2, 12), nn.ReLU(), nn.Linear(12, 10))
    net.load_state_dict(saved["state_dict"])
    data = load_dataset(sweep_of())
    x = (torch.from_numpy(data.X.astype(np.float32)) - saved["mean"]) / saved["scale"]
    with torch.no_grad():
        predicted = net(x.view(-1, 1, 8, 8)).argmax(1)
    accuracy = float((predicted == torch.from_numpy(data.y)).float().mean())
    assert accuracy == pytest.approx(saved["train_accuracy"], abs=1e-6)
    assert accuracy > 0.3  # two epochs: well above chance (0.1)
    spec = spec_of(sweep_of().sections, (8, 8), 10)
    assert cost_of(spec).parameters == sum(p.numel() for p in net.parameters())
    study = optuna.load_study(study_name="digits-cnn", storage="sqlite:///results/dropsweep.db")
    assert {t.user_attrs["config"]["placement"] for t in study.trials} <= {"none", "conv",
                                                                          "all"}


def test_an_evaluation_chunk_counts_the_patches_form_s_image_patches(monkeypatch):
    """The first convolution's patches (k*k*C floats per output pixel) can outweigh its
    maps (one 8x8 channel, 2 maps): in the patches form a chunk holds fewer rows."""
    folds = small_folds()
    spec = ConvSpec(in_shape=(1, 8, 8), conv=(2,), dense=(8,), classes=10, padding="same")
    cost = cost_of(spec)
    assert cost.patches == 3 * 3 * 1 * 8 * 8
    assert cost.floats == 2 * (8 * 8 + 4 * 4) + 8 + 10
    budget = 4 * 2 * 3 * 100 * (cost.floats + cost.patches)  # 100 rows of 3 models, patched
    monkeypatch.setattr(cnn_engine, "EVAL_BYTES", budget)
    rows = {form: CNNEngine([config()], folds, settings_of(sweep_of().sections, spec, form),
                            seed=0).eval_rows() for form in FORMS}
    models = 3  # one trial on three folds
    assert rows["patches"] == budget // (4 * models * 2 * (cost.floats + cost.patches))
    assert rows["loop"] == rows["grouped"] == budget // (4 * models * 2 * cost.floats)
    assert rows["patches"] < rows["loop"]


def test_a_trial_s_memory_counts_its_activations_and_the_patches_form_s_patches():
    sweep = sweep_of()
    dataset = load_dataset(sweep)
    cost = cost_of(spec_of(sweep.sections, dataset.image_shape, dataset.n_classes))
    need = cnn_engine.need(sweep.sections, dataset, 3)
    assert cost.patches == 9 * 8 * 8 and need.activations == 4 * 3 * 33 * (
        3 * cost.floats + cost.patches)


def test_trained_nets_select_models_without_sharing_storage():
    spec = spec_of(sweep_of().sections, (8, 8), 10)
    nets = ConvNets(spec, 3, torch.Generator().manual_seed(0))
    one = nets.select(torch.tensor([2]))
    assert one.models == 1 and torch.equal(one.conv_w[0][0], nets.conv_w[0][2])
    one.conv_w[0].zero_()
    assert nets.conv_w[0].abs().sum() > 0


def test_the_shipped_conv_net_sweeps_are_valid_and_fit_their_images():
    repo = Path(__file__).resolve().parent.parent
    from dropsweep.sweep.file import load_sweep

    digits = build_sweep(load_sweep(repo / "sweeps" / "digits-cnn.yaml"))
    cifar = build_sweep(load_sweep(repo / "sweeps" / "cifar10.yaml"))
    assert spec_of(digits.sections, (8, 8, 1), 10).flat() == 32 * 2 * 2
    example = spec_of(cifar.sections, (32, 32, 3), 10)  # the Keras example's network
    assert (example.conv, example.dense, example.flat()) == ((64, 64), (256,), 64 * 6 * 6)
    # the Keras example's model.summary(): 1,792 + 36,928 + 590,080 + 2,570 parameters
    assert cost_of(example).parameters == 631_370
    assert (cifar.train.batch_size, cifar.train.epochs, cifar.eval.validation) == (250, 55, 0.2)
    assert cifar.baseline["optimizer"] == "adam" and cifar.baseline["max_norm"] == 2.0
