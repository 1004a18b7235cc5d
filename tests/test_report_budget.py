"""`fewsam report`: the U-Net baseline's rows and line, training budgets, and the archive's
keeping of budgets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.axes
import pytest
from test_report import _git

from core.errors import InputError
from fewsam import exp_archive
from fewsam.ablation import COMPONENTS
from fewsam.exp_records import ExpRecord
from fewsam.paper_report import TRAIN_LOGS, ablation_markdown, budget_reader, markdown, plot
from fewsam.report_rows import (
    FEWSAM,
    NO_SYNTH,
    UNET,
    UNET_NO_SYNTH,
    ZERO_SHOT,
    metric,
    table_rows,
)
from fewsam.report_stats import Summary, log_budget

REPO = Path(__file__).resolve().parents[1]
EXEMPLARS_ONLY = {"enabled": True, **{key: 0.0 for keys in COMPONENTS.values() for key in keys}}


def _record(
    name: str,
    dsc: float,
    unet: tuple[float, float] | None = None,
    exemplars: int = 9,
    nested: bool = False,
    budget: dict[str, list[float]] | None = None,
    time: str = "2025-01-01T10:00:00",
    synth: dict[str, Any] | None = None,
) -> ExpRecord:
    """A finished experiment; `unet`: the U-Net's (Dice, HD95), flat or in the nested block."""
    params = {
        "exemplars": exemplars,
        "dataset": {"format": "synapse"},
        "synth": synth or {"enabled": "nosynth" not in name},
    }
    metrics: dict[str, Any] = {"dsc": dsc, "hd95": 10.0, "dsc_prompt_free": dsc, "hd95_unit": "mm"}
    if unet is not None and nested:
        metrics["methods"] = {"unet": {"dice": unet[0], "hd95": unet[1]}}
    elif unet is not None:
        metrics.update(unet_dsc=unet[0], unet_hd95=unet[1])
    return ExpRecord(name, f"{name}-rev", "base", "success", time, params, metrics, budget=budget)


def _grid() -> list[ExpRecord]:
    return [
        _record("x-9-synth-s0", 0.7, unet=(0.4, 20.0)),
        _record("x-9-synth-s1", 0.8, unet=(0.6, 24.0), nested=True),  # nested block only
        _record("x-9-synth-s2", 0.9),  # run before the baseline existed
        _record("x-9-nosynth-s0", 0.5, unet=(0.3, 30.0)),
        # Ablation only (every synthesis component off): no U-Net row.
        _record("x-9-exonly-s0", 0.6, unet=(0.2, 40.0), synth=EXEMPLARS_ONLY),
        _record("x-18-synth-s0", 0.95, exemplars=18),
    ]


# --- U-Net rows --------------------------------------------------------------------------------


def test_metric_reads_the_unet_from_flat_or_nested_keys() -> None:
    assert metric({"unet_dsc": 0.5, "methods": {"unet": {"dice": 0.1}}}, "unet_dsc") == 0.5
    assert metric({"methods": {"unet": {"dice": 0.25, "hd95": 3.0}}}, "unet_dsc") == 0.25
    assert metric({"methods": {"unet": {"dice": 0.25, "hd95": 3.0}}}, "unet_hd95") == 3.0
    assert metric({"dsc": 0.5}, "unet_dsc") is None


def test_unet_rows_pool_the_replicates_that_scored_it() -> None:
    rows = table_rows(_grid())
    (unet,) = [r for r in rows if r.method == UNET]
    # Replicates 0 and 1 scored it: mean 0.5, sd |0.6 - 0.4| / sqrt(2); HD95 22 ± 4 / sqrt(2).
    assert unet.point == "x-9-synth" and unet.exemplars == "9" and unet.dataset == "Synapse"
    assert unet.experiments == ("x-9-synth-s0", "x-9-synth-s1")
    assert unet.dsc.n == 2 and unet.dsc.mean == pytest.approx(0.5)
    assert unet.dsc.sd == pytest.approx(0.2 / 2**0.5)
    assert unet.hd95.mean == pytest.approx(22.0) and unet.hd95.sd == pytest.approx(4 / 2**0.5)
    assert unet.dsc_prompt_free == unet.dsc  # the U-Net takes no prompt
    assert unet.diff is None and unet.hd95_unit == "mm"
    (fewsam,) = [r for r in rows if r.point == "x-9-synth" and r.method == FEWSAM]
    assert fewsam.dsc.n == 3  # fewsam keeps every replicate


def test_unet_rows_without_and_with_synthesis_are_distinct_and_ordered() -> None:
    rows = table_rows(_grid())
    nine = [(r.method, r.point) for r in rows if r.exemplars == "9"]
    assert nine == [
        (NO_SYNTH, "x-9-nosynth"),
        (UNET_NO_SYNTH, "x-9-nosynth"),
        (FEWSAM, "x-9-exonly"),  # shown in the ablation table only
        (FEWSAM, "x-9-synth"),
        (UNET, "x-9-synth"),
    ]
    (off,) = [r for r in rows if r.method == UNET_NO_SYNTH]
    assert off.dsc == Summary(0.3, None, 1) and off.hd95 == Summary(30.0, None, 1)
    assert [r.method for r in rows if r.exemplars == "18"] == [FEWSAM]  # no U-Net scored


def test_markdown_shows_the_unet_rows_after_the_fewsam_rows() -> None:
    rows = table_rows(_grid())
    lines = markdown(rows).splitlines()
    methods = [line.split(" | ")[1] for line in lines[2:]]
    assert methods == [NO_SYNTH, UNET_NO_SYNTH, FEWSAM, UNET, FEWSAM]
    assert lines[5] == (
        "| Synapse | U-Net on the same data | 9 | 50.00 ± 14.14 | 22.00 ± 2.83 | 50.00 ± 14.14 "
        "| 2 | – | – | x-9-synth |"
    )
    assert "exonly" not in markdown(rows)
    assert ablation_markdown(rows).splitlines()[2:] == [  # the U-Net stays out of it
        "| Synthesis | 9 exemplars |",
        "|---|---:|",
        "| w/o synthesis | 50.00 (1) |",
        "| exemplars only | 60.00 (1) |",
        "| + geometric | – |",
        "| + intensity | – |",
        "| + pasting | 80.00 ± 10.00 (3) |",
    ]


def test_no_unet_rows_without_unet_results() -> None:
    records = [_record("x-9-synth-s0", 0.7), _record("x-9-nosynth-s0", 0.5)]
    rows = table_rows(records)
    assert [r.method for r in rows] == [NO_SYNTH, FEWSAM]
    assert "U-Net" not in markdown(rows)


def test_plot_draws_one_unet_line_per_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels: list[str] = []
    original = matplotlib.axes.Axes.errorbar

    def errorbar(self: matplotlib.axes.Axes, *args: Any, **kwargs: Any) -> Any:
        labels.append(kwargs.get("label", ""))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", errorbar)
    records = [*_grid(), _record("y-9-synth-s0", 0.6, unet=(0.5, 9.0))]
    plot(table_rows(records), tmp_path / "plot.png")
    assert sorted(labels) == [
        "U-Net on the same data (x)",
        "U-Net on the same data (y)",
        "fewsam (x)",
        "fewsam (y)",
        "fewsam w/o synthesis (x)",
    ]  # the U-Net w/o synthesis is in the table only
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- budgets -----------------------------------------------------------------------------------

TRAIN_LOG = """step,loss,ce,dice,lr,seconds
0,5.6,4.8,0.97,3.3e-05,0.5
1,5.9,5.1,0.97,6.6e-05,1.25
2,5.1,4.4,0.96,1e-04,2
"""
BASELINE_LOG = """step,loss,ce,dice,lr,seconds
0,1.2,0.9,0.5,0.001,4.5
1,1.1,0.8,0.4,0.001,6
"""
EMPTY_LOG = "step,loss,ce,dice,lr,seconds\n"


def test_log_budget_counts_rows_and_sums_seconds() -> None:
    assert log_budget(TRAIN_LOG) == (3, pytest.approx(3.75))  # 0.5 + 1.25 + 2
    assert log_budget(BASELINE_LOG) == (2, pytest.approx(10.5))
    assert log_budget(EMPTY_LOG) == (0, 0.0)
    with pytest.raises(ValueError, match="no `seconds` column"):
        log_budget("step,loss\n0,1.0\n")
    with pytest.raises(ValueError, match="no `seconds` column"):
        log_budget("")
    with pytest.raises(ValueError, match="line 3: seconds 'x'"):
        log_budget(EMPTY_LOG + "0,1,1,1,1,0.5\n1,1,1,1,1,x\n")
    with pytest.raises(ValueError, match="seconds 'nan'"):
        log_budget(EMPTY_LOG + "0,1,1,1,1,nan\n")


def _commit(root: Path, files: dict[str, str]) -> str:
    """Commit `files` (path -> text) in the repository at `root`; returns the commit."""
    if not (root / ".git").exists():
        _git(root, "init", "-q")
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
        _git(root, "add", path)
    _git(root, "commit", "-q", "--allow-empty", "-m", "logs")
    return _git(root, "rev-parse", "HEAD")


def test_budget_reader_reads_both_logs_of_a_commit(tmp_path: Path) -> None:
    both = _commit(tmp_path, {TRAIN_LOGS["adapter"]: TRAIN_LOG, TRAIN_LOGS["unet"]: BASELINE_LOG})
    stub = _commit(tmp_path, {TRAIN_LOGS["unet"]: EMPTY_LOG})  # a disabled baseline
    broken = _commit(tmp_path, {TRAIN_LOGS["unet"]: "step\n0\n"})
    read = budget_reader(tmp_path)
    budget = read(ExpRecord("x-9-synth", both, "base", "success", "t"))
    assert budget == {"adapter": [3, pytest.approx(3.75)], "unet": [2, pytest.approx(10.5)]}
    assert read(ExpRecord("x-9-synth", stub, "base", "success", "t")) == {
        "adapter": [3, pytest.approx(3.75)]
    }
    assert read(ExpRecord("gone", "0" * 40, "base", "success", "t")) is None
    kept = {"adapter": [1, 2.0]}  # an archived budget is not read again
    assert read(ExpRecord("gone", "0" * 40, "base", "success", "t", budget=kept)) is kept
    with pytest.raises(InputError, match=r"baseline_log.csv: no `seconds` column \(experiment b\)"):
        read(ExpRecord("b", broken, "base", "success", "t"))


def test_rows_carry_the_mean_budget_of_their_model() -> None:
    budgets = {
        "x-9-synth-s0": {"adapter": [300, 120.0], "unet": [600, 90.0]},
        "x-9-synth-s1": {"adapter": [300, 140.0], "unet": [600, 100.0]},
        "x-9-synth-s2": {"adapter": [200, 2.5]},  # no U-Net log
        "x-9-nosynth-s0": None,  # logs gone
    }
    rows = table_rows(_grid(), read_budget=lambda r: budgets.get(r.name))
    by = {(r.method, r.point): r for r in rows}
    # adapter over s0..s2: (300 + 300 + 200) / 3 steps, (120 + 140 + 2.5) / 3 = 87.5 s
    assert by[FEWSAM, "x-9-synth"].budget == pytest.approx((800 / 3, 87.5))
    assert by[UNET, "x-9-synth"].budget == pytest.approx((600, 95.0))
    assert by[NO_SYNTH, "x-9-nosynth"].budget is None
    assert by[UNET_NO_SYNTH, "x-9-nosynth"].budget is None
    lines = markdown(rows).splitlines()
    training = {line.split(" | ")[1]: line.split(" | ")[-2] for line in lines[2:]}
    assert training[UNET] == "600 steps / 95 s"
    assert training[NO_SYNTH] == "–"
    (fewsam,) = [line for line in lines if line.endswith("| x-9-synth |") and "| fewsam |" in line]
    assert fewsam.split(" | ")[-2] == "267 steps / 88 s"
    small = table_rows(
        [_record("z-1-synth", 0.5, exemplars=1)], read_budget=lambda r: {"adapter": [4, 2.25]}
    )
    assert "| 4 steps / 2.2 s |" in markdown(small)  # under 10 s: one decimal
    zero_shot = table_rows(
        [ExpRecord("z", "r", "b", "success", "t", {}, {"dsc": 0.5, "zero_shot_dsc": 0.4})],
        read_budget=lambda r: {"adapter": [4, 2.25]},
    )
    assert [r.budget for r in zero_shot if r.method == ZERO_SHOT] == [None]


# --- the archive keeps budgets -----------------------------------------------------------------


def test_archive_round_trip_keeps_the_budget(tmp_path: Path) -> None:
    records = [
        _record("x-9-synth-s0", 0.7, unet=(0.4, 20.0), budget={"adapter": [300, 120.5]}),
        _record("x-9-nosynth-s0", 0.5),
    ]
    path = tmp_path / "archive.json"
    exp_archive.save(path, records)
    assert exp_archive.load(path) == records
    saved = json.loads(path.read_text())["experiments"]
    assert [item["budget"] for item in saved] == [{"adapter": [300, 120.5]}, None]


def test_archive_without_budgets_still_loads(tmp_path: Path) -> None:
    item = {
        "name": "x-9-synth",
        "rev": "r",
        "baseline": "b",
        "state": "success",
        "timestamp": "t",
        "params": {},
        "metrics": {"dsc": 0.5},
        "cases": {"c1": 0.5},
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"version": exp_archive.VERSION, "experiments": [item]}))
    (record,) = exp_archive.load(path)
    assert record.budget is None and record.cases == {"c1": 0.5}
    committed = exp_archive.load(REPO / "docs" / "grid_cpu_records.json")  # written before budgets
    assert committed and all(r.state == "success" for r in committed)


def test_merge_fills_budgets_of_live_records_only() -> None:
    archived = [_record("old", 0.5), _record("both", 0.5, time="2025-01-01T08:00:00")]
    live = [
        _record("both", 0.6, time="2025-01-02T08:00:00"),
        _record("kept", 0.6, budget={"unet": [5, 1.0]}),
        ExpRecord("failed", "r", "b", "failed", "t"),
    ]
    read: list[str] = []

    def read_budget(record: ExpRecord) -> dict[str, list[float]]:
        read.append(record.name)
        return {"adapter": [len(record.name), 1.0]}

    merged = {r.name: r for r in exp_archive.merge(archived, live, lambda r: None, read_budget)}
    assert list(merged) == ["both", "kept", "old"]
    assert merged["both"].budget == {"adapter": [4, 1.0]} and merged["both"].metrics["dsc"] == 0.6
    assert merged["kept"].budget == {"unet": [5, 1.0]}  # already known: not read again
    assert merged["old"].budget is None  # archived: its commit may be gone
    assert read == ["both"]
    plain = exp_archive.merge(archived, live, lambda r: None)
    assert {r.name: r.budget for r in plain}["both"] is None
