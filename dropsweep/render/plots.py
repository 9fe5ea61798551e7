"""``dropsweep report --plots DIR``: the report's numbers as PNG figures (matplotlib).

Optuna draws the optimisation history (its matplotlib visualisation); the rest is drawn
here from the report's rows, importances included, so the figures show the numbers of the
report's tables and compute nothing anew. matplotlib is an optional extra (``dropsweep[plots]``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from dropsweep import records
from dropsweep.data.fetch import replace_atomically
from dropsweep.errors import DropsweepError
from dropsweep.families import family_of_rows
from dropsweep.render.confirmation import confirmation_protocol
from dropsweep.answers.rows import StudyReport
from dropsweep.answers.verdict import Confirmation

# One colour per value of the family's group dimension, in its order (the MLP's none,
# input, hidden, both: grey, blue, orange, green).
PALETTE = ("tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise DropsweepError("--plots needs matplotlib: pip install 'dropsweep[plots]'") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _percent_axis(axis: Any) -> None:
    """Accuracy ticks in percent ("80%"), as the tables print it; the data stay fractions."""
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(xmax=1.0))


def _scored(report: StudyReport) -> str:
    """What a search trial's accuracy is, in words: a mean over folds, or one split's."""
    return "validation accuracy" if report.protocol == "holdout" else "mean held-out accuracy"


def _confirmed_label(confirmation: Confirmation) -> str:
    return "validation accuracy" if confirmation.holdout else "mean accuracy"


def draw(study: optuna.Study, report: StudyReport, confirmation: Confirmation | None
         ) -> dict[str, Any]:
    """Every figure that has data, by file name (matplotlib figures, not yet saved): the
    numbers of the report's tables, accuracy in percent, dimensions named in words."""
    plt = _pyplot()
    complete = [t for t in report.trials if t.accuracy_mean is not None and t.state == "COMPLETE"]
    figures: dict[str, Any] = {}
    fam = family_of_rows(report)
    group, groups = fam.group, fam.group_values
    colours = dict(zip(groups, PALETTE))
    rates = [d for d in fam.dimensions if d.when is not None]  # sampled by placement
    scored = _scored(report)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib plots are "experimental"
        if complete:
            ax = optuna.visualization.matplotlib.plot_optimization_history(study)
            ax.set(title="Search history", ylabel=scored)
            _percent_axis(ax.yaxis)
            handles, _ = ax.get_legend_handles_labels()
            if len(handles) == 2:  # Optuna's "Objective Value", "Best Value"
                ax.legend(handles, ["trial", "best so far"])
            figures["history.png"] = ax.figure

            fig, ax = plt.subplots(figsize=(6, 4))
            used = [p for p in groups if any(t.params.get(group) == p for t in complete)]
            ax.boxplot([[t.accuracy_mean for t in complete if t.params.get(group) == p]
                        for p in used])
            ax.set_xticks(range(1, len(used) + 1), used)
            if report.baseline is not None and report.baseline.accuracy_mean is not None:
                ax.axhline(report.baseline.accuracy_mean, color="tab:red", linestyle="--",
                           label="baseline")
                ax.legend()
            ax.set(title="Accuracy by dropout placement (complete trials)", ylabel=scored)
            _percent_axis(ax.yaxis)
            figures["placements.png"] = fig

            if rates:
                fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4), sharey=True,
                                         squeeze=False)
                axes = axes[0]
                for ax, dim in zip(axes, rates):
                    for placement in groups:
                        points = [(t.params[dim.name], t.accuracy_mean) for t in complete
                                  if dim.name in t.params and t.params.get(group) == placement]
                        if points:
                            xs, ys = zip(*points)
                            ax.scatter(xs, ys, s=14, label=placement,
                                       color=colours.get(placement, "k"))
                    ax.set(xlabel=dim.label, title=f"Accuracy against {dim.label}")
                    if ax.get_legend_handles_labels()[0]:
                        ax.legend()
                axes[0].set_ylabel(scored)
                _percent_axis(axes[0].yaxis)  # shared: every panel's ticks
                figures["rates.png"] = fig

        if report.importances:  # the report's own numbers: the figure matches the table
            names = list(report.importances)[::-1]
            fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.5))
            ax.barh([n.replace("_", " ") for n in names],  # as the importances table
                    [report.importances[n] for n in names], color="tab:blue")
            ax.set(title="Parameter importances (PED-ANOVA)", xlabel="importance")
            figures["importances.png"] = fig

        if confirmation is not None and confirmation.rows:
            figures.update(_confirmed(plt, confirmation, colours))
    return figures


def _confirmed(plt: Any, confirmation: Confirmation, colours: dict[str, str]
               ) -> dict[str, Any]:
    figures = {}
    rows = confirmation.rows
    label = _confirmed_label(confirmation)
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.5))
    labels = [("baseline" if r.role == records.ROLE_BASELINE else f"#{r.source_trial}")
              + f" {r.placement}" for r in rows]
    for i, r in enumerate(rows):
        a = r.accuracy
        ax.errorbar([a.mean], [i], xerr=[[a.mean - a.low], [a.high - a.mean]], fmt="o",
                    color=colours.get(r.placement, "k"), capsize=4)
    ax.axvline(rows[0].accuracy.mean, color="tab:red", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    # "5 x 10-fold CV on new splits", "5 new hold-out splits": as the confirmed table says
    ax.set(title=f"Confirmed: {label}, 95% CI ({confirmation_protocol(confirmation)})",
           xlabel=label)
    _percent_axis(ax.xaxis)
    figures["confirmed.png"] = fig
    per = confirmation.per_placement
    if per is not None:  # each placement's best, confirmed: the fair comparison
        chosen = [("baseline", r) for r in per.rows if r.role == records.ROLE_BASELINE]
        chosen += [(p, r) for p, r in per.placements.items()
                   if all(r is not b for _, b in chosen)]
        fig, ax = plt.subplots(figsize=(7, 0.6 * len(chosen) + 1.5))
        for i, (name, r) in enumerate(chosen):
            a = r.accuracy
            ax.errorbar([a.mean], [i], xerr=[[a.mean - a.low], [a.high - a.mean]],
                        fmt="o", capsize=4, color=colours.get(r.placement, "k"))
        ax.set_yticks(range(len(chosen)),
                      [f"{name} (#{r.source_trial})" if r.source_trial >= 0 else name
                       for name, r in chosen])
        ax.invert_yaxis()
        repeats = max(r.repeats for r in per.rows)
        ax.set(title=f"Each placement's best, confirmed\n{label}, 95% CI "
                     f"({confirmation_protocol(confirmation, repeats)})", xlabel=label)
        _percent_axis(ax.xaxis)
        figures["placements_confirmed.png"] = fig
    return figures


def write_plots(study: optuna.Study, report: StudyReport, confirmation: Confirmation | None,
                directory: str | Path) -> list[Path]:
    """Write every figure that has data; return their paths."""
    plt = _pyplot()
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DropsweepError(f"--plots {out}: cannot create it: {exc.strerror}") from None
    figures = draw(study, report, confirmation)
    written: list[Path] = []
    try:
        for name, fig in figures.items():
            path = out / name
            fig.tight_layout()
            try:  # whole or not at all: a stop or a full disk leaves no half figure
                replace_atomically(path, lambda out, fig=fig, kind=path.suffix[1:]:
                                   fig.savefig(out, format=kind, dpi=120),
                                   prefix=f".{path.stem}-", suffix=path.suffix)
            except OSError as exc:
                raise DropsweepError(f"--plots: cannot write {path}: {exc.strerror or exc}"
                                     ) from None
            written.append(path)
    finally:
        for fig in figures.values():
            plt.close(fig)
    return written
