"""render.py: every format shows the report's numbers, and the machine formats parse."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from rich.console import Console

from dropsweep import records
from dropsweep.families.mlp import PLACEMENTS
from dropsweep.render.report import FORMATS, render_report, report_to_json
from dropsweep.render.studies import render_studies
from dropsweep.answers.report import build_report, list_studies
from dropsweep.answers.rows import PlacementRow, StudyReport, StudyRow, TrialRow

T0 = datetime(2025, 3, 1, 9, 0, 0)
TRIAL_KEYS = {
    "number",
    "state",
    "value",
    "params",
    "fold_accuracies",
    "accuracy_mean",
    "accuracy_std",
    "role",
    "train_accuracy",
    "test_log_loss",
    "epochs",
    "wall_time",
    "fail_reason",
}


def console(width: int = 200, terminal: bool = False) -> Console:
    """A recording console; ``terminal``: one as the CLI makes for a terminal (soft wrap:
    what rich does not wrap, the terminal would, cutting words and numbers anywhere)."""
    return Console(record=True, width=width, color_system=None, file=io.StringIO(),
                   force_terminal=terminal, soft_wrap=terminal)


def text_of(fmt: str, report: StudyReport, width: int = 200, terminal: bool = False) -> str:
    out = console(width, terminal)
    render_report(report, fmt, out)
    return out.file.getvalue()  # type: ignore[attr-defined]


def _trial(number: int, **kw: object) -> TrialRow:
    defaults: dict = dict(state="COMPLETE", value=None, params={}, datetime_start=T0)
    defaults.update(kw)
    return TrialRow(number=number, **defaults)  # type: ignore[arg-type]


BASELINE = _trial(
    0,
    value=0.8481,
    params={"placement": "none", "learning_rate": 0.01,
            "momentum": 0.8},
    role=records.ROLE_BASELINE,
    fold_accuracies=(0.80, 0.85, 0.82, 0.88, 0.8905),
    accuracy_mean=0.8481,
    accuracy_std=0.0345,
    train_accuracy=0.99,
    test_log_loss=0.41,
    epochs=100,
    wall_time=12.0,
    datetime_complete=T0 + timedelta(seconds=12),
)  # fmt: skip
BEST = _trial(
    1,
    value=0.8604,
    params={"placement": "input", "input_rate": 0.2,
            "learning_rate": 0.0123456, "momentum": 0.9},
    role=records.ROLE_SEARCH,
    fold_accuracies=(0.80, 0.85, 0.86, 0.90, 0.892),
    accuracy_mean=0.8604,
    accuracy_std=0.0512,
    train_accuracy=0.9712,
    test_log_loss=0.35,
    epochs=100,
    wall_time=75.0,
    datetime_complete=T0 + timedelta(seconds=90),
)  # fmt: skip
HIDDEN = _trial(
    2,
    value=0.8431,
    params={"placement": "hidden", "hidden_rate": 0.5,
            "learning_rate": 0.01, "momentum": 0.8,
            "max_norm": 3.0},
    role=records.ROLE_FIXED,
    fold_accuracies=(0.84, 0.85, 0.83, 0.84, 0.8555),
    accuracy_mean=0.8431,
    accuracy_std=0.0089,
    train_accuracy=0.95,
    wall_time=3700.0,
)  # fmt: skip
PRUNED = _trial(
    3,
    state="PRUNED",
    params={"placement": "both", "input_rate": 0.1,
            "hidden_rate": 0.2, "learning_rate": 0.05,
            "momentum": 0.5},
    role=records.ROLE_SEARCH,
    epochs=7,
    wall_time=2.0,
)  # fmt: skip
FAILED = _trial(
    4,
    state="FAIL",
    params={"placement": "input", "input_rate": 0.4,
            "learning_rate": 0.3, "momentum": 0.99},
    role=records.ROLE_SEARCH,
    fail_reason="loss became NaN at epoch 3, fold 2 [lr too high] | x",
    wall_time=1.5,
)  # fmt: skip
INTERRUPTED = _trial(5, state="FAIL", fail_reason="interrupted")
RUNNING = _trial(6, state="RUNNING", params={"placement": "none"})

PARAMS = [
    "placement",
    "input_rate",
    "hidden_rate",
    "learning_rate",
    "momentum",
    "max_norm",
]


@pytest.fixture
def report() -> StudyReport:
    return StudyReport(
        name="sonar-dropout",
        direction="MAXIMIZE",
        counts={"COMPLETE": 3, "PRUNED": 1, "FAIL": 2, "RUNNING": 1},
        total_wall_time=3791.5,
        first_start=T0,
        last_update=T0 + timedelta(hours=2),
        best=BEST,
        baseline=BASELINE,
        top=[BEST, BASELINE, HIDDEN],
        placements=[
            PlacementRow("none", 1, BASELINE, 0.0),
            PlacementRow("input", 1, BEST, 0.0123),
            PlacementRow("hidden", 1, HIDDEN, -0.005),
        ],
        importances={"learning_rate": 0.61234, "placement": 0.38766},
        importance_note=None,
        trials=[BASELINE, BEST, HIDDEN, PRUNED, FAILED, INTERRUPTED, RUNNING],
        param_names=PARAMS,
    )


# ----------------------------------------------------------------------------- table


def test_table_shows_the_formatted_numbers(report: StudyReport) -> None:
    text = text_of("table", report)
    assert "sonar-dropout" in text
    assert "7 (3 complete, 1 pruned, 2 fail, 1 running)" in text
    assert "1h 03m 12s" in text  # total time 3791.5 s
    assert "86.04% ± 5.12" in text and "84.81% ± 3.45" in text and "84.31% ± 0.89" in text
    assert "97.12%" in text  # train accuracy of the best trial
    assert "+1.23 pp" in text and "-0.50 pp" in text and "+0.00 pp" in text
    assert "0.01235" in text  # learning rate, 4 significant digits
    assert "1m 15s" in text and "12.0 s" in text
    assert "0.612" in text and "0.388" in text
    assert "loss became NaN at epoch 3, fold 2 [lr too high] | x" in text  # not read as markup
    assert "interrupted" in text
    for column in ("#", "role", "accuracy", "train acc", "time", "Δ vs baseline"):
        assert column in text
    for param in PARAMS:
        assert param.replace("_", " ") in text


def test_table_leaves_non_applying_params_empty(report: StudyReport) -> None:
    text = text_of("table", report)
    [line] = [line for line in text.splitlines() if re.match(r"\s*1\s+search\s", line)]
    # placement input, input rate 0.2, (no hidden rate), lr, momentum, (no max norm), time
    pattern = (
        r"\s*1\s+search\s+86\.04% ± 5\.12\s+97\.12%\s+input\s+0\.2"
        r"\s+0\.01235\s+0\.9\s+1m 15s\s*"
    )
    assert re.fullmatch(pattern, line), line


def test_table_shows_the_importance_note_and_omits_failures_when_none() -> None:
    report = StudyReport(
        name="tiny", direction="MAXIMIZE", counts={"COMPLETE": 1}, total_wall_time=3.0,
        first_start=T0, last_update=T0, best=BEST, baseline=None, top=[BEST],
        placements=[PlacementRow("input", 1, BEST, None)], importances={},
        importance_note="needs at least 2 complete trials (the study has 1) [/bold]",
        trials=[BEST], param_names=PARAMS,
    )  # fmt: skip
    text = text_of("table", report)
    assert "needs at least 2 complete trials (the study has 1) [/bold]" in text
    assert "Failed trials" not in text
    assert "no complete baseline" in text


def test_table_shows_a_caution_under_the_importances(report: StudyReport) -> None:
    noted = dataclasses.replace(report, importance_note="only 3 complete trials [/] rough")
    text = text_of("table", noted)
    assert "only 3 complete trials [/] rough" in text and "0.612" in text
    assert "_only 3 complete trials [/] rough_" in text_of("markdown", noted)


def test_table_of_an_empty_study() -> None:
    report = build_report(optuna.create_study(direction="maximize", study_name="empty"))
    text = text_of("table", report)
    assert "empty" in text and "no complete trial" in text


def test_piped_table_is_never_cut(report: StudyReport) -> None:
    """Into a pipe as into a terminal, a table fits the width without losing digits to "…":
    its least important columns are left out, and said to be."""
    text = text_of("table", report, width=60)
    assert "86.04% ± 5.12" in text and "0.01235" in text and "learning" in text
    _readable(text, 60)
    assert "(columns left out at 60 columns: role, train acc, momentum," in text
    out = console(60)
    render_report(report, "table", out)
    assert out.width == 60  # the console is left as it was


# ----------------------------------------------------------------------------- json


def test_json_parses_and_names_every_trial_field(report: StudyReport) -> None:
    text = text_of("json", report, width=40)  # long lines must not wrap
    data = json.loads(text)
    assert set(data) == {
        "study", "counts", "best", "baseline", "top", "placements", "importances", "trials",
        "selection", "overfitting", "confirmation", "balance", "test", "answer",
    }  # fmt: skip
    assert data["confirmation"] is None  # no dropsweep confirm yet
    assert [o["number"] for o in data["overfitting"]] == [p["best_number"]
                                                         for p in data["placements"]]
    assert [t["number"] for t in data["trials"]] == [0, 1, 2, 3, 4, 5, 6]
    for trial in data["trials"]:
        assert TRIAL_KEYS <= set(trial)
    by_number = {t["number"]: t for t in data["trials"]}
    assert by_number[3]["state"] == "PRUNED" and by_number[3]["value"] is None
    assert by_number[4]["state"] == "FAIL" and by_number[4]["fail_reason"].startswith("loss")
    assert by_number[5]["fail_reason"] == "interrupted"
    assert by_number[1]["fold_accuracies"] == [0.80, 0.85, 0.86, 0.90, 0.892]
    assert by_number[1]["accuracy_mean"] == 0.8604 and by_number[1]["accuracy_std"] == 0.0512
    assert by_number[1]["datetime_start"] == T0.isoformat()
    assert data["best"]["number"] == 1 and data["baseline"]["number"] == 0
    assert [t["number"] for t in data["top"]] == [1, 0, 2]
    assert data["placements"][1]["diff_from_baseline"] == 0.0123
    assert data["counts"] == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 2, "RUNNING": 1}
    assert list(data["importances"]) == ["learning_rate", "placement"]
    assert data["study"]["name"] == "sonar-dropout"
    assert data == report_to_json(report)


def test_json_has_no_colour_even_on_a_terminal(report: StudyReport) -> None:
    out = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=60)
    render_report(report, "json", out)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[" not in text
    json.loads(text)


def test_json_turns_non_finite_numbers_into_null(report: StudyReport) -> None:
    nan_trial = _trial(9, state="COMPLETE", value=0.5, test_log_loss=float("nan"))
    data = json.loads(json.dumps(report_to_json(dataclasses.replace(report, trials=[nan_trial]))))
    assert data["trials"][0]["test_log_loss"] is None


# ----------------------------------------------------------------------------- csv


def test_csv_has_one_row_per_trial(report: StudyReport) -> None:
    rows = list(csv.DictReader(io.StringIO(text_of("csv", report, width=40))))
    assert [r["number"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6"]
    header = list(rows[0])
    assert header[:11] == [
        "number", "state", "value", "role", "accuracy_mean", "accuracy_std", "train_accuracy",
        "test_log_loss", "epochs", "wall_time", "fail_reason",
    ]  # fmt: skip
    assert header[11:17] == PARAMS
    assert header[17:] == ["fold_1", "fold_2", "fold_3", "fold_4", "fold_5"]
    best = rows[1]
    assert float(best["accuracy_mean"]) == 0.8604 and best["fold_5"] == "0.892"
    assert best["hidden_rate"] == "" and best["input_rate"] == "0.2"
    assert float(best["learning_rate"]) == 0.0123456  # full precision
    assert rows[3]["state"] == "PRUNED" and rows[3]["value"] == "" and rows[3]["fold_1"] == ""
    assert rows[4]["fail_reason"] == FAILED.fail_reason
    assert rows[6]["state"] == "RUNNING"


# ----------------------------------------------------------------------------- markdown


def test_markdown_tables(report: StudyReport) -> None:
    text = text_of("markdown", report, width=40)
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("| #")]
    assert headers, "the top-trials table has a header row"
    assert lines[headers[0] + 1].startswith("|---:|")
    assert all(line.startswith("|") and line.endswith("|") for line in lines if "|" in line[:1])
    separators = [line for line in lines if set(line) <= set("|-: ") and "---" in line]
    assert len(separators) == 6  # study, top, placements, overfitting, importances, failed
    assert "### Top 3 trials" in text and "### Failed trials" in text
    best = "| 1 | search | 86.04% ± 5.12 | 97.12% | input | 0.2 |  | 0.01235 | 0.9 |  | 1m 15s |"
    assert best in text
    assert "+1.23 pp" in text
    assert "\\| x" in text  # a "|" in a reason is escaped, not a new column


# ----------------------------------------------------------------------------- misc


def test_unknown_format(report: StudyReport) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render_report(report, "yaml", console())


def test_every_format_renders_a_real_study() -> None:
    study = optuna.create_study(direction="maximize", study_name="real")
    study.add_trial(
        optuna.trial.create_trial(
            value=0.75,
            params={"placement": "none"},
            distributions={"placement": CategoricalDistribution(PLACEMENTS)},
            user_attrs={
                records.ROLE: records.ROLE_BASELINE,
                records.FOLD_ACCURACIES: [0.7, 0.8],
                records.ACCURACY_MEAN: 0.75,
                records.ACCURACY_STD: 0.05,
            },
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params={"placement": "input", "input_rate": 0.2},
            distributions={
                "placement": CategoricalDistribution(PLACEMENTS),
                "input_rate": FloatDistribution(0, 0.5),
            },
            user_attrs={records.INTERRUPTED: True},
        )
    )
    report = build_report(study)
    for fmt in FORMATS:
        assert text_of(fmt, report)
    assert "75.00% ± 5.00" in text_of("table", report)
    data = json.loads(text_of("json", report))
    assert [t["state"] for t in data["trials"]] == ["COMPLETE", "FAIL"]
    assert data["trials"][1]["fail_reason"] == "interrupted"


def test_render_studies(tmp_path: Path) -> None:
    rows = [
        StudyRow("sonar-a", {"COMPLETE": 9, "PRUNED": 2, "FAIL": 1}, 12, 0.8604, T0),
        StudyRow("sonar-b", {}, 0, None, None),
    ]
    text = _render_studies_text(rows, "table")
    assert "sonar-a" in text and "12 (9 complete, 2 pruned, 1 fail)" in text
    assert "86.04%" in text and "2025-03-01 09:00:00" in text and "sonar-b" in text
    data = json.loads(_render_studies_text(rows, "json"))
    assert data[0]["name"] == "sonar-a" and data[0]["counts"]["PRUNED"] == 2
    assert data[0]["best_value"] == 0.8604 and data[1]["best_value"] is None
    assert data[0]["last_update"] == T0.isoformat()

    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(storage=url, study_name="stored")
    assert "stored" in _render_studies_text(list_studies(url), "table")


def test_studies_mark_companions_and_show_a_best_for_searches_only(tmp_path: Path) -> None:
    from test_report import _sqlite_with_companions

    rows = list_studies(_sqlite_with_companions(tmp_path))
    text = _render_studies_text(rows, "table")
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert re.search(r"recent\s+search\s", lines["recent"])
    assert re.search(r"recent:confirm\s+confirmation of recent\s", lines["recent:confirm"])
    assert re.search(r"held-back\s+test of recent\s", lines["held-back"])
    assert re.search(r"looks:test\s+search\s", lines["looks:test"])
    assert "99.00%" not in lines["held-back"] and "99.00%" in lines["looks:test"]
    assert "%" not in lines["recent:confirm"] + lines["gone:confirm"]
    data = {d["name"]: d for d in json.loads(_render_studies_text(rows, "json"))}
    assert (data["held-back"]["kind"], data["held-back"]["of"]) == ("test", "recent")
    assert (data["recent:confirm"]["kind"], data["recent:confirm"]["of"]) == (
        "confirmation", "recent")
    assert (data["recent"]["kind"], data["recent"]["of"]) == ("search", None)
    assert data["held-back"]["best_value"] is None and data["recent:confirm"]["best_value"] is None
    assert data["looks:test"]["best_value"] == pytest.approx(0.99)
    markdown = _render_studies_text(rows, "markdown")
    assert "| held-back | test of recent |" in markdown


def _render_studies_text(rows: list[StudyRow], fmt: str) -> str:
    out = console()
    render_studies(rows, fmt, out)
    return out.file.getvalue()  # type: ignore[attr-defined]


def test_render_is_formatting_only() -> None:
    import dropsweep.render.report  # noqa: F401

    source = Path(sys.modules["dropsweep.render.report"].__file__).read_text()
    for module in ("torch", "optuna", "click", "numpy"):
        assert f"import {module}" not in source and f"from {module}" not in source


def _confirmation(per_placement: bool):
    """A confirmation of three rows by hand; with its per-placement reading or without."""
    from dropsweep.answers.stats import Comparison, Interval
    from dropsweep.answers.verdict import (Confirmation, ConfirmedRow, PairComparison,
                                   PlacementVerdict, verdict)

    def row(source: int, role: str, placement: str, mean: float, rate: dict) -> ConfirmedRow:
        config = {"placement": placement, "input_rate": 0.0, "hidden_rate": 0.0,
                  "learning_rate": 0.01, "momentum": 0.8, "max_norm": None, **rate}
        vs = None if role == records.ROLE_BASELINE else Comparison(
            Interval(mean - 0.80, mean - 0.85, mean - 0.75, 50), 3.0, 0.004)
        return ConfirmedRow(source, role, placement, config, 5,
                            Interval(mean, mean - 0.04, mean + 0.04, 50), vs)

    base = row(0, records.ROLE_BASELINE, "none", 0.80, {})
    inp = row(5, records.ROLE_CANDIDATE, "input", 0.831, {"input_rate": 0.2})
    hid = row(7, records.ROLE_CANDIDATE, "hidden", 0.81, {"hidden_rate": 0.5})
    pv = None
    if per_placement:
        pairs = [PairComparison(inp, base, Comparison(Interval(0.031, 0.005, 0.057, 50), 3.1,
                                                      0.007), 0.021),
                 PairComparison(hid, base, Comparison(Interval(0.01, -0.02, 0.04, 50), 0.7,
                                                      0.48), 0.96),
                 PairComparison(inp, hid, Comparison(Interval(0.021, -0.01, 0.052, 50), 1.4,
                                                     0.17), 0.34)]
        pv = PlacementVerdict([base, inp, hid], {"none": base, "input": inp, "hidden": hid},
                              pairs)
    rows = [base, inp, hid]
    return Confirmation("s:confirm", "s", 10, 5, rows, verdict(rows), per_placement=pv)


def test_the_per_placement_comparison_in_every_format(report: StudyReport) -> None:
    from dropsweep.render.confirmation import confirmation_to_json, render_confirmation

    with_pp = dataclasses.replace(report, confirmation=_confirmation(True))
    markdown = text_of("markdown", with_pp)
    assert markdown.index("### Confirmed") < markdown.index("### Per-placement comparison")
    assert "| ahead | behind | Δ (pp) | 95% CI (pp) | p | Holm p |" in markdown
    assert ("| input dropout 0.2 (#5) | the no-dropout baseline | +3.10 | [+0.50, +5.70] | 0.007 "
            "| 0.021 |") in markdown, markdown
    assert ("input dropout 0.2 (#5) is ahead of the no-dropout baseline by 3.10 points (95% CI "
            "+0.50 to +5.70), adjusted p = 0.021") in markdown
    assert ("No other difference is significant at 5%; hidden dropout 0.5 (#7) does not differ "
            "significantly from no dropout.") in markdown
    assert "Holm-adjusted over 3 comparisons" in markdown
    table = " ".join(text_of("table", with_pp, width=250).split())
    assert "Per-placement comparison" in table and "Holm p" in table
    data = json.loads(text_of("json", with_pp))["confirmation"]["per_placement"]
    assert [p["p_adjusted"] for p in data["pairs"]] == [0.021, 0.96, 0.34]
    assert data["rows"]["input"]["source_trial"] == 5 and "adjusted p = 0.021" in data["text"]

    without = _confirmation(False)
    assert confirmation_to_json(without)["per_placement"] is None
    assert "Per-placement" not in text_of("markdown", dataclasses.replace(report,
                                                                          confirmation=without))
    out = console()
    render_confirmation(without, out)
    assert "Confirmed" in out.file.getvalue() and "Per-placement" not in out.file.getvalue()


def test_a_switch_reads_yes_or_no_and_importances_use_the_column_names(
        report: StudyReport) -> None:
    conv = _trial(7, value=0.9, accuracy_mean=0.9, role="search",
                  params={"placement": "conv", "conv_rate": 0.41, "spatial": True})
    dense = _trial(8, value=0.8, accuracy_mean=0.8, role="search",
                   params={"placement": "conv", "conv_rate": 0.2, "spatial": False})
    report = dataclasses.replace(report, top=[conv, dense],
                                 param_names=["placement", "conv_rate", "spatial"],
                                 importances={"conv_rate": 0.7, "spatial": 0.3})
    lines = text_of("table", report).splitlines()
    [row7] = [line for line in lines if re.match(r"\s*7\s+search\s", line)]
    [row8] = [line for line in lines if re.match(r"\s*8\s+search\s", line)]
    assert re.search(r"conv\s+0\.41\s+yes\b", row7) and re.search(r"conv\s+0\.2\s+no\b", row8)
    assert any(re.fullmatch(r"\s*conv rate\s+0\.700\s*", line) for line in lines)
    assert "True" not in "\n".join(lines)


# ----------------------------------------------------------------------------- narrow terminals

WIDTHS = (80, 120, 200)


@pytest.fixture(scope="module")
def searched_storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Real studies in one SQLite file: a search over every placement with max-norm on, its
    per-placement confirmation, and a second search to compare it with."""
    import numpy as np

    from dropsweep.study.confirm import run_confirm
    from dropsweep.data.dataset import Dataset
    from dropsweep.study.runner import run_search
    from test_runner import SMALL, sweep_of

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    X = rng.normal(size=(80, 6)).astype(np.float32) + y[:, None] * 1.5
    data = Dataset(X=X, y=y, classes=("a", "b"), name="blobs", source="memory",
                   feature_names=tuple(f"f{i}" for i in range(6)))
    url = f"sqlite:///{tmp_path_factory.mktemp('narrow')}/studies.db"
    for name, trials in (("small", 12), ("other-study", 5), ("third-study-name", 5)):
        run_search(sweep_of(SMALL, f"name={name}", f"search.trials={trials}",
                            "search.sampler=random"),
                   data, storage_url=url, device="cpu", batch=6)
    run_confirm(optuna.load_study(study_name="small", storage=url), data, repeats=2,
                device="cpu")  # each placement's best
    return url


def _report_of(url: str, name: str = "small") -> StudyReport:
    return build_report(optuna.load_study(study_name=name, storage=url))


TITLES = ("Study", "Top ", "Each placement's best", "Best trial of each placement",
          "Recommended", "Overfitting", "Parameter importances", "Failed trials", "Confirmed (",
          "Per-placement comparison", "Studies")


def _sections(text: str) -> dict[str, tuple[str, set[str]]]:
    """The text of each table by its title, with the columns its note says were left out."""
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        title = next((t for t in TITLES if line.startswith(t)), None)
        if title is not None:
            current = title
            found[current] = []
        if current is not None:
            found[current].append(line)
    result = {}
    for title, lines in found.items():
        body = "\n".join(lines)
        flat = " ".join(body.split())
        left = re.search(r"\(columns left out at \d+ columns: (.*?); ", flat)
        result[title] = (body, set(left.group(1).split(", ")) if left else set())
    return result


def _whole(number: str, text: str) -> bool:
    """``number`` is in ``text`` with no digit cut from either end."""
    return re.search(rf"(?<![\d.]){re.escape(number)}(?![\d])", text) is not None


def _readable(text: str, width: int) -> None:
    assert "…" not in text
    wide = [line for line in text.splitlines() if len(line.rstrip()) > width]
    assert not wide, wide


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
@pytest.mark.parametrize("width", WIDTHS)
def test_every_table_of_a_confirmed_report_fits_its_width_with_every_number_whole(
        searched_storage: str, width: int, terminal: bool) -> None:
    """Every shown column's numbers, as the JSON has them, appear whole; columns left out
    are said once under their table, in the order of their stated priority."""
    report = _report_of(searched_storage)
    text = text_of("table", report, width=width, terminal=terminal)
    _readable(text, width)
    data = report_to_json(report)
    sections = _sections(text)

    top, left = sections["Top "]
    for trial in data["top"]:
        assert _whole(f"{_pct(trial['accuracy_mean'])}% ± {_pct(trial['accuracy_std'])}", top)
        if "train acc" not in left:
            assert _whole(f"{_pct(trial['train_accuracy'])}%", top)
        for name, value in trial["params"].items():
            shown = name.replace("_", " ")
            if shown not in left and isinstance(value, float):
                assert _whole(f"{value:.4g}", top), (name, value)
    if any(p.replace("_", " ") in left for p in data["study"]["param_names"]):
        # the notes of a trial go before its parameters
        assert {"role", "time", "train acc"} <= left
    if width >= 200:
        assert not left

    placed, left = sections["Each placement's best"]
    assert not left  # every column fits in 80
    for p in data["placements"]:
        acc = p["confirmed"]["accuracy"]
        assert _whole(f"[{_pct(acc['low'])}, {_pct(acc['high'])}]", placed)
        assert _whole(f"{_pct(acc['mean'])}%", placed)

    confirmed, left = sections["Confirmed ("]
    assert {"trial", "dropout", "accuracy", "Δ vs baseline", "95% CI (pp)", "p"}.isdisjoint(left)
    for row in data["confirmation"]["rows"]:
        acc = row["accuracy"]
        assert _whole(f"{_pct(acc['mean'])}%", confirmed)
        if "95% CI" not in left:
            assert _whole(f"[{_pct(acc['low'])}, {_pct(acc['high'])}]", confirmed)
        if row["vs_baseline"] is not None:
            diff = row["vs_baseline"]["diff"]
            assert _whole(f"{diff['mean'] * 100:+.2f} pp", confirmed)
            assert _whole(f"[{diff['low'] * 100:+.2f}, {diff['high'] * 100:+.2f}]", confirmed)
            p = row["vs_baseline"]["p"]
            assert _whole("< 0.001" if p < 0.001 else f"{p:.3f}", confirmed)

    pairs, left = sections["Per-placement comparison"]
    for pair in data["confirmation"]["per_placement"]["pairs"]:
        assert _whole(f"{pair['diff']['mean'] * 100:+.2f}", pairs)
        p = pair["p_adjusted"]
        assert _whole("< 0.001" if p < 0.001 else f"{p:.3f}", pairs)
        if "95% CI (pp)" not in left:
            low, high = pair["diff"]["low"] * 100, pair["diff"]["high"] * 100
            assert _whole(f"[{low:+.2f}, {high:+.2f}]", pairs)

    over, left = sections["Overfitting"]
    for o, p in zip(data["overfitting"], data["placements"]):
        assert _whole(f"{o['gap'] * 100:+.2f} pp", over)
        assert _whole(f"{_pct(p['best']['train_accuracy'])}%", over)
    importances, _ = sections["Parameter importances"]
    for value in data["importances"].values():
        assert _whole(f"{value:.3f}", importances)


def test_a_table_too_wide_leaves_out_its_least_important_columns_and_says_so(
        searched_storage: str) -> None:
    """The top trials' stated priority: time and role go first, then the training accuracy,
    then the parameters from the last; the rest stay, and the note names what went once."""
    report = _report_of(searched_storage)
    top, left = _sections(text_of("table", report, width=80))["Top "]
    params = [p.replace("_", " ") for p in report.param_names]
    order = ["time", "role", "train acc", *reversed(params)]
    assert {"time", "role"} <= left and left == set(order[:len(left)])
    flat = " ".join(top.split())
    assert flat.count("columns left out") == 1
    shown = [c for c in ("role", "train acc", *params, "time") if c in left]
    assert (f"(columns left out at 80 columns: {', '.join(shown)}; widen the terminal or use "
            "--format json)") in flat  # in table order
    rows = [line for line in top.splitlines() if re.match(r"\s*\d+\s+\d+\.\d\d% ±", line)]
    assert [int(line.split()[0]) for line in rows] == [t.number for t in report.top]


def test_a_comparison_of_more_studies_than_fit_stacks_one_block_per_placement(
        searched_storage: str) -> None:
    from dropsweep.render.comparison import render_comparison
    from dropsweep.answers.select import compare_studies

    names = ("small", "other-study", "third-study-name")
    reports = [_report_of(searched_storage, n) for n in names]
    compared = compare_studies(reports)
    cells = [f"#{c.best.number} {_pct(c.best.accuracy_mean)}% ± {_pct(c.best.accuracy_std)} "
             f"({c.diff_from_baseline * 100:+.2f} pp)"
             for row in compared for c in row.cells if c is not None]
    for width, terminal in [(w, t) for w in WIDTHS for t in (True, False)]:
        out = console(width, terminal)
        render_comparison(list(names), compared, "table", out)
        text = out.file.getvalue()  # type: ignore[attr-defined]
        _readable(text, width)
        for cell in cells:
            assert cell in text, (width, cell)  # one reading, never wrapped
        stacked = re.search(r"^third-study-name\s+#\d", text, flags=re.M) is not None
        assert stacked == (width == 80), text  # 3 studies side by side need ~100 columns


def test_studies_fit_every_width(searched_storage: str) -> None:
    rows = list_studies(searched_storage)
    for width in WIDTHS:
        out = console(width)
        render_studies(rows, "table", out)
        text = out.file.getvalue()  # type: ignore[attr-defined]
        _readable(text, width)
        for row in rows:
            assert row.name in text
            if row.best_value is not None:
                assert _whole(f"{_pct(row.best_value)}%", text)


def test_fit_table_leaves_out_by_priority_then_stacks_and_never_cuts_a_number() -> None:
    from dropsweep.render.tables import Column, fit_table, print_table

    columns = [Column("#", right=True), Column("accuracy", right=True),
               Column("configuration"), Column("momentum", priority=1, right=True),
               Column("note", priority=2)]
    rows = [("12", "83.63% ± 3.49", "input dropout 0.2 with max-norm 3", "0.7312",
             "the best of its placement"),
            ("7", "80.01% ± 1.10", "no dropout", "0.95", "")]
    wide = fit_table(console(200), columns, rows)
    assert not wide.left_out and not wide.stacked and wide.width <= 200
    assert not fit_table(console(60), columns, rows).left_out  # the text wraps instead
    assert fit_table(console(50), columns, rows).left_out == ("note",)
    narrow = fit_table(console(40), columns, rows)
    assert narrow.left_out == ("momentum", "note") and not narrow.stacked
    assert narrow.width <= 40
    stacked = fit_table(console(30), columns, rows)
    assert stacked.stacked and not stacked.left_out and stacked.width <= 30
    for width in (200, 60, 50, 40, 30, 12):  # at 12 the stacked rows overflow rather than cut
        out = console(width)
        fit = print_table(out, columns, rows, title="Trials")
        text = out.file.getvalue()  # type: ignore[attr-defined]
        assert "…" not in text and "83.63% ± 3.49" in text and "80.01% ± 1.10" in text
        if fit.width <= width:
            _readable(text, width)
        assert out.width == width  # the console is left as it was
    text = " ".join(_print(columns, rows, 40).split())
    assert "(columns left out at 40 columns: momentum, note; widen the terminal" in text


def _print(columns, rows, width: int) -> str:
    from dropsweep.render.tables import print_table

    out = console(width)
    print_table(out, columns, rows)
    return out.file.getvalue()  # type: ignore[attr-defined]
