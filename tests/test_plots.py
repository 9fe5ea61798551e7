"""plots.py: the figures of ``report --plots``, read from matplotlib's objects (not pixels)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from dropsweep.study.confirm import run_confirm
from dropsweep.data.dataset import Dataset
from dropsweep.render.plots import draw, write_plots
from dropsweep.answers.report import build_report
from dropsweep.study.runner import run_search

import test_holdout
from test_runner import SMALL, sweep_of

pytest.importorskip("matplotlib")


def _data() -> Dataset:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    X = rng.normal(size=(80, 6)).astype(np.float32) + y[:, None] * 1.5
    return Dataset(X=X, y=y, classes=("a", "b"), name="blobs", source="memory",
                   feature_names=tuple(f"f{i}" for i in range(6)))


def _figures(url: str, sweep, per_placement: bool) -> dict:
    data = _data()
    run_search(sweep, data, storage_url=url, device="cpu", batch=6)
    study = optuna.load_study(study_name="small", storage=url)
    # each placement's best (the default), or the 2 best (--top 2)
    run_confirm(study, data, top=None if per_placement else 2, repeats=2, device="cpu")
    report = build_report(study)
    return draw(study, report, report.confirmation)


def _texts(fig) -> list[str]:
    return [t for ax in fig.axes for t in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel())
            if t]


def _accuracy_axes(figures: dict) -> list:
    """Every axis labelled with an accuracy."""
    found = []
    for fig in figures.values():
        for ax in fig.axes:
            for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
                if "accuracy" in label:
                    found.append(axis)
    return found


@pytest.mark.slow
def test_figures_show_accuracy_in_percent_and_name_dimensions_in_words(tmp_path) -> None:
    figures = _figures(f"sqlite:///{tmp_path}/k.db",
                       sweep_of(SMALL, "search.trials=10", "search.sampler=random"), True)
    assert set(figures) == {"history.png", "placements.png", "rates.png", "importances.png",
                            "confirmed.png", "placements_confirmed.png"}
    axes = _accuracy_axes(figures)
    assert len(axes) >= 5
    for axis in axes:  # ticks as the tables print accuracy: 0.8 reads "80%"
        assert axis.get_major_formatter()(0.8, 0) in ("80%", "80.0%")
    texts = [t for fig in figures.values() for t in _texts(fig)]
    assert not [t for t in texts if "_" in t], texts  # "learning rate", not "learning_rate"
    titles = [ax.get_title() for ax in figures["rates.png"].axes]
    assert "Accuracy against input rate" in titles and "Accuracy against hidden rate" in titles
    assert "2 x 3-fold CV on new splits" in figures["confirmed.png"].axes[0].get_title()
    labels = [t.get_text() for t in figures["importances.png"].axes[0].get_yticklabels()]
    assert labels and not [t for t in labels if "_" in t]
    import matplotlib.pyplot as plt

    plt.close("all")


def test_a_holdout_confirmation_is_titled_by_its_splits(tmp_path) -> None:
    figures = _figures(f"sqlite:///{tmp_path}/h.db", test_holdout.sweep_of(), False)
    title = figures["confirmed.png"].axes[0].get_title()
    assert "2 new hold-out splits" in title and "fold" not in title, title
    assert figures["confirmed.png"].axes[0].get_xlabel() == "validation accuracy"
    assert figures["history.png"].axes[0].get_ylabel() == "validation accuracy"
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.mark.slow
def test_write_plots_saves_each_figure(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    data = _data()
    run_search(sweep_of(SMALL, "search.trials=4"), data, storage_url=url, device="cpu",
               batch=4)
    study = optuna.load_study(study_name="small", storage=url)
    report = build_report(study)
    written = write_plots(study, report, None, tmp_path / "figs")
    assert sorted(p.name for p in written) == sorted(draw(study, report, None))
    assert all(p.stat().st_size > 1000 for p in written)


def test_a_figure_that_cannot_be_written_leaves_no_half_file(tmp_path, monkeypatch) -> None:
    """A full disk (or a stop) while a figure is written: one line, and nothing half-written
    under its name nor a temporary beside it."""
    import matplotlib.pyplot as plt

    from dropsweep.errors import DropsweepError
    from dropsweep.render import plots

    fig = plt.figure()
    fig.add_subplot().plot([0, 1])
    monkeypatch.setattr(plots, "draw", lambda *args: {"history.png": fig})

    def torn(self, out, **kwargs):
        out.write(b"\x89PNG\r\n half a figure")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(fig), "savefig", torn)
    with pytest.raises(DropsweepError) as err:
        plots.write_plots(None, None, None, tmp_path / "figs")
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    assert list((tmp_path / "figs").iterdir()) == []
