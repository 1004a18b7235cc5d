"""`fewsam report`: reading `dvc exp show --json`, the paper's table and plot, headline metrics."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest

from core.errors import FewsamError
from evaluate import reports
from evaluate.protocols import ClassScore, Summary
from fewsam.ablation import COMPONENTS
from fewsam.exp_records import (
    DvcError,
    ExpRecord,
    dvc_env,
    file_at,
    parse_show,
    read_experiments,
)
from fewsam.paper_report import (
    PER_CASE,
    ablation_markdown,
    case_reader,
    markdown,
    write_report,
)
from fewsam.report_rows import (
    FEWSAM,
    NO_SYNTH,
    ZERO_SHOT,
    metric,
    point_of,
    table_rows,
)
from fewsam.report_stats import (
    Summary as Stats,
)
from fewsam.report_stats import (
    bootstrap_mean_ci,
    case_dice,
    paired_differences,
    summarize,
)


def _rev(sha: str, name: str | None, time: str, params: dict, metrics: dict | None) -> dict:
    """One revision as DVC 3.67 writes it in `dvc exp show --json`."""
    data: dict[str, Any] = {
        "rev": sha,
        "timestamp": time,
        "params": {"params.yaml": {"data": params}},
        "deps": {},
        "outs": {},
        "meta": {},
    }
    if metrics is not None:
        data["metrics"] = {"reports/metrics.json": {"data": metrics}}
    return {"rev": sha, "name": name, "data": data, "error": None, "experiments": None}


def _exp(name: str, state: str | None, exemplars: Any, synth: bool, dsc: float, time: str) -> dict:
    """One experiment; HD95 is 12.5 and the prompt-free DSC 0.5 throughout."""
    params = {"exemplars": exemplars, "dataset": {"format": "synapse"}, "synth": {"enabled": synth}}
    metrics = {
        "dsc": dsc,
        "hd95": 12.5,
        "dsc_prompt_free": 0.5,
        "zero_shot_dsc": 0.7454,
        "zero_shot_hd95": 20.0,
        "hd95_unit": "voxel",
    }
    executor = None
    if state is not None:
        executor = {"state": state, "name": "dvc-task", "local": {"returncode": 0}}
    return {
        "executor": executor,
        "name": name,
        "revs": [_rev(f"{name}-sha", name, time, params, metrics)],
    }


def show_sample() -> list[dict]:
    """A workspace row, then a commit with finished, failed and queued experiments."""
    workspace = _rev("workspace", None, None, {"exemplars": 9}, {"dsc": 0.1})  # type: ignore[arg-type]
    workspace["experiments"] = None
    failed = _exp("synapse-1-synth", "failed", 1, True, 0.99, "2025-01-01T10:00:00")
    failed["revs"][0]["error"] = {"msg": "Experiment run failed", "type": ""}
    queued = _exp("synapse-36-synth", "queued", 36, True, 0.5, "2025-01-01T10:00:00")
    del queued["revs"][0]["data"]["metrics"]
    commit = _rev("abc123", "main", "2025-01-01T09:00:00", {"exemplars": 9}, {"dsc": 0.2})
    commit["experiments"] = [
        _exp("synapse-9-synth", "success", 9, True, 0.7908, "2025-01-01T11:00:00"),
        _exp("old-9-synth", "success", 9, True, 0.5, "2025-01-01T08:00:00"),
        _exp("synapse-9-nosynth", None, 9, False, 0.76, "2025-01-01T11:30:00"),
        _exp("synapse-all", "success", "all", False, 0.8595, "2025-01-01T12:00:00"),
        failed,
        queued,
    ]
    return [
        {
            "rev": "workspace",
            "name": None,
            "data": workspace["data"],
            "error": None,
            "experiments": None,
        },
        commit,
    ]


def test_parse_show_reads_states_params_and_metrics() -> None:
    records = parse_show(json.loads(json.dumps(show_sample())))
    by_name = {r.name: r for r in records}
    assert list(by_name) == [
        "synapse-9-synth",
        "old-9-synth",
        "synapse-9-nosynth",
        "synapse-all",
        "synapse-1-synth",
        "synapse-36-synth",
    ]
    assert by_name["synapse-9-synth"].state == "success"
    assert by_name["synapse-9-nosynth"].state == "success"  # ran in the workspace: no executor
    assert by_name["synapse-1-synth"].state == "failed"
    assert by_name["synapse-36-synth"].state == "queued"
    assert by_name["synapse-36-synth"].metrics == {}
    assert by_name["synapse-all"].params["exemplars"] == "all"
    assert by_name["synapse-all"].metrics["dsc"] == 0.8595
    assert by_name["synapse-all"].baseline == "abc123"


@pytest.mark.parametrize("bad", [{}, "text", None])
def test_parse_show_refuses_what_is_not_a_list_of_commits(bad: Any) -> None:
    with pytest.raises(DvcError, match="list of commits"):
        parse_show(bad)


def test_parse_show_skips_malformed_entries() -> None:
    data = [{"rev": "x", "experiments": [{"name": "a", "revs": []}, "junk", {"revs": [None]}]}, 3]
    assert parse_show(data) == []


def test_table_rows_one_per_grid_point_zero_shot_first_failed_skipped() -> None:
    rows = table_rows(parse_show(show_sample()))
    assert [(r.method, r.exemplars, r.point) for r in rows] == [
        (ZERO_SHOT, "", "synapse-all"),  # from the newest experiment
        (NO_SYNTH, "9", "synapse-9-nosynth"),
        (FEWSAM, "9", "old-9-synth"),  # another prefix: a grid point of its own
        (FEWSAM, "9", "synapse-9-synth"),
        (NO_SYNTH, "all", "synapse-all"),
    ]
    assert rows[0].dsc == Stats(0.7454, None, 1) and rows[0].hd95 == Stats(20.0, None, 1)
    assert rows[0].dsc_prompt_free == Stats(None, None, 0)
    assert rows[3].dsc == Stats(0.7908, None, 1) and rows[3].experiments == ("synapse-9-synth",)
    assert rows[3].dsc_prompt_free == Stats(0.5, None, 1) and rows[3].hd95_unit == "voxel"
    assert {r.dataset for r in rows} == {"Synapse"}
    assert all(r.diff is None for r in rows)  # no per-case reader: no paired differences


def test_table_rows_same_name_on_two_commits_newest_wins() -> None:
    older = _record("x-9-synth", 0.4, time="2025-01-01T08:00:00", rev="a")
    newer = _record("x-9-synth", 0.6, time="2025-02-01T08:00:00", rev="b")
    for records in ([older, newer], [newer, older]):
        (row,) = [r for r in table_rows(records) if r.method == FEWSAM]
        assert row.dsc == Stats(0.6, None, 1) and row.experiments == ("x-9-synth",)


def test_metric_falls_back_to_nested_keys_and_rejects_non_numbers() -> None:
    nested = {"adapted": {"prompted": {"dice": 0.5}}, "zero_shot": {"dice": 0.25}}
    assert metric(nested, "dsc") == 0.5 and metric(nested, "zero_shot_dsc") == 0.25
    assert metric({"dsc": 0.3, "adapted": {"prompted": {"dice": 0.5}}}, "dsc") == 0.3
    assert metric({"dsc": None}, "dsc") is None
    assert metric({"dsc": True}, "dsc") is None
    assert metric({"dsc": float("nan")}, "dsc") is None


def test_markdown_table_in_percent_with_the_hd95_unit() -> None:
    text = markdown(table_rows(parse_show(show_sample())))
    lines = text.splitlines()
    assert lines[0] == (
        "| Dataset | Method | Exemplars | DSC (%) | HD95 (voxel) | DSC prompt-free (%) | n | "
        "ΔDSC vs w/o synthesis [95% CI] | Training | Grid point |"
    )
    assert len(lines) == 7
    assert lines[2] == (
        "| Synapse | zero-shot SAM | – | 74.54 | 20.00 | – | – | – | – | synapse-all |"
    )
    assert lines[5] == (
        "| Synapse | fewsam | 9 | 79.08 | 12.50 | 50.00 | 1 | – | – | synapse-9-synth |"
    )  # no budget reader: no budget
    assert lines[6] == (
        "| Synapse | fewsam w/o synthesis | all | 85.95 | 12.50 | 50.00 | 1 | – | – | synapse-all |"
    )


def test_write_report_writes_table_and_plot(tmp_path: Path) -> None:
    table, plot = write_report(table_rows(parse_show(show_sample())), tmp_path / "reports")
    text = table.read_text()
    assert text.count("\n") == 7  # header, rule, 5 rows
    assert "Synthesis components" not in text  # no ablation experiments: no ablation table
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "dsc_vs_exemplars.png",
        "paper_table.md",
    ]


def test_write_report_without_finished_experiments_fails(tmp_path: Path) -> None:
    with pytest.raises(FewsamError, match="no finished experiment"):
        write_report([], tmp_path)
    record = ExpRecord("q", "sha", "base", "queued", "", {"exemplars": 1}, {})
    assert table_rows([record]) == []


def _summary(dice: float, hd95: float) -> Summary:
    return Summary(
        dice, hd95, [dice], [hd95], {"both": 1, "gt_only": 0, "pred_only": 0, "both_empty": 0}
    )


def test_metrics_json_has_flat_headline_keys_first(tmp_path: Path) -> None:
    summaries = {
        "prompt_free": _summary(0.5, 4.0),
        "prompted": _summary(0.75, 2.0),
        "zero_shot": _summary(0.25, 8.0),
    }
    metrics = reports.metrics_dict("transunet", ["liver"], 1, summaries)
    assert (metrics["dsc"], metrics["hd95"]) == (0.75, 2.0)  # the prompted mode
    assert (metrics["dsc_prompt_free"], metrics["hd95_prompt_free"]) == (0.5, 4.0)
    assert (metrics["zero_shot_dsc"], metrics["zero_shot_hd95"]) == (0.25, 8.0)
    assert metrics["adapted"]["prompted"]["dice"] == 0.75  # the nested blocks stay
    reports.write_metrics(tmp_path / "metrics.json", metrics)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == metrics
    assert list(written)[:6] == [
        "dsc",
        "hd95",
        "dsc_prompt_free",
        "hd95_prompt_free",
        "zero_shot_dsc",
        "zero_shot_hd95",
    ]
    assert list(written)[6:] == sorted(list(written)[6:])
    no_zero_shot = reports.metrics_dict(
        "transunet", ["liver"], 1, {"prompted": summaries["prompted"]}
    )
    assert "zero_shot_dsc" not in no_zero_shot and "dsc_prompt_free" not in no_zero_shot


def test_read_experiments_outside_a_dvc_repository_says_so(tmp_path: Path) -> None:
    with pytest.raises(DvcError, match="dvc exp show --json.*not inside of a DVC repository"):
        read_experiments(tmp_path)


# --- statistics --------------------------------------------------------------------------------


def test_summarize_mean_sample_sd_and_count_skipping_none() -> None:
    s = summarize([0.5, None, 0.7, 0.9])
    # mean 0.7; squared deviations 0.04 + 0 + 0.04 over n - 1 = 2: variance 0.04, sd 0.2
    assert s.n == 3
    assert s.mean == pytest.approx(0.7) and s.sd == pytest.approx(0.2)
    xs = [0.12, 0.55, 0.31, 0.98, 0.47]
    s = summarize(xs)
    assert s.mean == pytest.approx(statistics.fmean(xs))
    assert s.sd == pytest.approx(statistics.stdev(xs))  # the sample sd (ddof 1)
    assert summarize([0.3]) == Stats(0.3, None, 1)  # one value: no sd
    # Six equal values: numpy's sd of them is rounding noise (6e-17), reported as 0.
    assert float(np.std([0.417778] * 6, ddof=1)) != 0
    assert summarize([0.417778] * 6).sd == 0.0
    assert summarize([]) == Stats(None, None, 0)
    assert summarize([None, None]) == Stats(None, None, 0)


def test_bootstrap_of_constant_differences_is_a_point() -> None:
    ci = bootstrap_mean_ci([0.25] * 7)
    assert (ci.mean, ci.low, ci.high, ci.n) == (0.25, 0.25, 0.25, 7)
    one = bootstrap_mean_ci([-0.5])
    assert (one.mean, one.low, one.high, one.n) == (-0.5, -0.5, -0.5, 1)


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_pairs() -> None:
    rng = np.random.default_rng(123)
    few = rng.normal(0.03, 0.05, 20)
    many = rng.normal(0.03, 0.05, 400)
    a, b = bootstrap_mean_ci(few.tolist()), bootstrap_mean_ci(many.tolist())
    assert a.mean == pytest.approx(few.mean()) and a.n == 20 and b.n == 400
    assert a.low < a.mean < a.high and b.low < b.mean < b.high
    assert b.high - b.low < a.high - a.low
    # Against the normal approximation of the mean's 95% interval (z = 1.96 and the plug-in sd
    # the bootstrap resamples from): with 400 values both agree closely.
    half = 1.959964 * many.std(ddof=0) / np.sqrt(many.size)
    assert (b.high - b.low) / 2 == pytest.approx(half, rel=0.08)
    assert (b.low + b.high) / 2 == pytest.approx(many.mean(), abs=0.15 * half)
    narrower = bootstrap_mean_ci(many.tolist(), level=0.5)
    assert b.low < narrower.low < narrower.high < b.high
    assert bootstrap_mean_ci(few.tolist()) == a  # a fixed seed: the report is reproducible


PER_CASE_TEXT = """case,method,class,outcome,dice,hd95
c1,prompted,liver,both,0.8,3.0
c1,prompted,spleen,both,0.6,2.0
c1,prompted,kidney,both_empty,,
c1,prompt_free,liver,both,0.1,9.0
c2,prompted,liver,gt_only,0.0,
c2,prompted,spleen,both,0.9,1.0
c3,prompt_free,liver,both,0.5,1.0
c4,prompted,liver,both_empty,,
c5,zero_shot,liver,both,0.3,4.0
"""


def test_case_dice_averages_the_scored_classes_of_one_method() -> None:
    assert case_dice(PER_CASE_TEXT, "prompted") == pytest.approx({"c1": 0.7, "c2": 0.45})
    assert case_dice(PER_CASE_TEXT, "prompt_free") == pytest.approx({"c1": 0.1, "c3": 0.5})
    assert case_dice(PER_CASE_TEXT, "zero_shot") == pytest.approx({"c5": 0.3})
    assert case_dice(PER_CASE_TEXT, "other") == {}
    assert case_dice("case,method,class,outcome,dice,hd95\n", "prompted") == {}


def test_case_dice_reads_what_the_score_stage_writes(tmp_path: Path) -> None:
    results = {
        "prompted": {
            "a": [ClassScore(1, "both", 0.5, 2.0), ClassScore(2, "both_empty", None, None)],
            "b": [ClassScore(1, "both", 0.75, 1.0), ClassScore(2, "gt_only", 0.25, None)],
        },
        "prompt_free": {"a": [ClassScore(1, "both", 0.1, 5.0)]},
    }
    reports.write_per_case(tmp_path / "per_case.csv", results, ["liver", "spleen"])
    text = (tmp_path / "per_case.csv").read_text()
    assert case_dice(text, reports.HEADLINE) == pytest.approx({"a": 0.5, "b": 0.5})


def test_paired_differences_pair_only_common_replicates_and_cases() -> None:
    on = {0: {"a": 0.8, "b": 0.6}, 1: {"a": 0.7, "c": 0.5}, 2: {"a": 0.9}}
    off = {0: {"a": 0.5, "b": 0.6, "d": 0.1}, 1: {"a": 0.6}, 3: {"a": 0.0}}
    # (0, a): 0.3, (0, b): 0.0, (1, a): 0.1; replicate 2 and 3, cases c and d have no partner
    assert paired_differences(on, off) == pytest.approx([0.3, 0.0, 0.1])
    assert paired_differences(on, {}) == []


# --- rows: replicates pooled, paired differences, the ablation ---------------------------------


def test_point_of_strips_the_replicate_suffix() -> None:
    assert point_of("a-9-synth-s2") == ("a-9-synth", 2)
    assert point_of("a-9-synth-s12") == ("a-9-synth", 12)
    assert point_of("a-9-synth") == ("a-9-synth", 0)
    assert point_of("synapse-all-s0") == ("synapse-all", 0)
    assert point_of("a-9-synth-sx") == ("a-9-synth-sx", 0)


def _record(
    name: str,
    dsc: float,
    hd95: float = 10.0,
    exemplars: Any = 9,
    synth: dict[str, Any] | None = None,
    time: str = "2025-01-01T10:00:00",
    rev: str | None = None,
) -> ExpRecord:
    params = {
        "exemplars": exemplars,
        "dataset": {"format": "synapse"},
        "synth": synth if synth is not None else {"enabled": "nosynth" not in name},
    }
    metrics = {"dsc": dsc, "hd95": hd95, "dsc_prompt_free": dsc / 2, "hd95_unit": "mm"}
    return ExpRecord(name, rev or f"{name}-rev", "base", "success", time, params, metrics)


def _pooled_records() -> list[ExpRecord]:
    return [
        *(_record(f"x-9-synth-s{r}", 0.6 + 0.1 * r, 10.0 + 2 * r) for r in range(3)),
        *(_record(f"x-9-nosynth-s{r}", (0.5, 0.55, 0.6)[r]) for r in range(3)),
        _record("a-9-nosynth", 0.3),  # another prefix, one run (replicate 0)
        _record("z-9-synth-s0", 0.9),  # no twin of its own prefix
        _record("x-18-synth-s0", 0.95, exemplars=18),  # no row without synthesis at 18
        ExpRecord("x-9-synth-s3", "r", "base", "failed", "t", {"exemplars": 9}, {}),
    ]


CASES = {
    **{f"x-9-synth-s{r}": {"c1": 0.8 + 0.01 * r, "c2": 0.6} for r in range(3)},
    **{f"x-9-nosynth-s{r}": {"c1": 0.7, "c2": 0.65, "c3": 0.1} for r in range(3)},
    "a-9-nosynth": {"c1": 0.0, "c2": 0.0},
    "z-9-synth-s0": {"c1": 0.5, "c2": 0.3},
    "x-18-synth-s0": {"c1": 0.9},
}


def test_table_rows_pool_the_replicates_of_a_grid_point() -> None:
    rows = {r.point: r for r in table_rows(_pooled_records())}
    x = rows["x-9-synth"]
    assert x.experiments == ("x-9-synth-s0", "x-9-synth-s1", "x-9-synth-s2")  # failed s3 left out
    assert x.dsc.n == 3 and x.dsc.mean == pytest.approx(0.7) and x.dsc.sd == pytest.approx(0.1)
    assert x.hd95.mean == pytest.approx(12.0) and x.hd95.sd == pytest.approx(2.0)
    assert x.dsc_prompt_free.mean == pytest.approx(0.35) and x.dsc_prompt_free.n == 3
    off = rows["x-9-nosynth"]
    assert off.method == NO_SYNTH and off.dsc.mean == pytest.approx(0.55)
    assert off.dsc.sd == pytest.approx(0.05)
    assert rows["a-9-nosynth"].dsc == Stats(0.3, None, 1)
    assert x.diff is None  # no per-case reader given
    assert "x-9-synth-s0" not in rows


def test_table_rows_paired_difference_with_the_twin_of_the_same_prefix() -> None:
    read: list[str] = []

    def read_cases(record: ExpRecord) -> dict[str, float] | None:
        read.append(record.name)
        return CASES.get(record.name)

    rows = {r.point: r for r in table_rows(_pooled_records(), read_cases)}
    x = rows["x-9-synth"].diff
    assert x is not None
    # Per replicate r: c1 gives (0.8 + 0.01 r) - 0.7, c2 gives 0.6 - 0.65; c3 has no partner.
    # (0.10 + 0.11 + 0.12 - 3 * 0.05) / 6 = 0.03. Paired with a-9-nosynth it would be 0.7.
    assert x.n == 6 and x.mean == pytest.approx(0.03)
    assert x.low <= 0.03 <= x.high and x.low < x.high
    assert x.low >= -0.05 - 1e-12 and x.high <= 0.12 + 1e-12  # within the differences' range
    # Without a twin of its own prefix: the first row without synthesis at that count.
    z = rows["z-9-synth"].diff
    assert z is not None and z.n == 2 and z.mean == pytest.approx(0.4)
    assert rows["x-18-synth"].diff is None  # nothing without synthesis at 18 exemplars
    assert rows["x-9-nosynth"].diff is None and rows["a-9-nosynth"].diff is None
    assert "x-9-synth-s3" not in read  # the failed run is never read


def test_table_rows_without_per_case_files_have_no_difference() -> None:
    rows = table_rows(_pooled_records(), lambda record: None)
    assert all(r.diff is None for r in rows)


def test_markdown_shows_the_pooled_row_with_its_difference() -> None:
    rows = table_rows(_pooled_records(), lambda record: CASES.get(record.name))
    lines = markdown(rows).splitlines()
    assert lines[0].split(" | ")[4] == "HD95 (mm)"
    (x,) = [line for line in lines if line.endswith("| x-9-synth |")]
    diff = next(r for r in rows if r.point == "x-9-synth").diff
    assert diff is not None
    cells = [c.strip() for c in x.strip("|").split("|")]
    assert cells[:7] == [
        "Synapse",
        "fewsam",
        "9",
        "70.00 ± 10.00",
        "12.00 ± 2.00",
        "35.00 ± 5.00",
        "3",
    ]  # noqa: E501
    assert cells[7] == f"+3.00 [{100 * diff.low:+.2f}, {100 * diff.high:+.2f}]"


def _ablation_synth(params_dict: dict[str, Any], on: tuple[str, ...]) -> dict[str, Any]:
    """params.yaml's synth section with the probabilities of the components not `on` at 0."""
    synth = dict(params_dict["synth"], enabled=True)
    for name, keys in COMPONENTS.items():
        if name not in on:
            synth.update({key: 0.0 for key in keys})
    return synth


def _ablation_records(params_dict: dict[str, Any], geo_int: bool = False) -> list[ExpRecord]:
    geo = ("geometric",)
    full = ("geometric", "intensity", "pasting")
    records = [
        _record("x-1-exonly-s0", 0.55, exemplars=1, synth=_ablation_synth(params_dict, ())),
        _record("x-1-geo-s0", 0.6, exemplars=1, synth=_ablation_synth(params_dict, geo)),
        _record("x-1-synth-s0", 0.7, exemplars=1, synth=_ablation_synth(params_dict, full)),
        _record("x-1-synth-s1", 0.8, exemplars=1, synth=_ablation_synth(params_dict, full)),
        _record("x-1-nosynth-s0", 0.5, exemplars=1),
        _record("x-9-exonly-s0", 0.3, exemplars=9, synth=_ablation_synth(params_dict, ())),
        _record("y-1-synth", 0.65, exemplars=1),  # another prefix, no ablation of its own
    ]
    if geo_int:
        both = ("geometric", "intensity")
        records.append(
            _record("x-1-geo-int-s0", 0.65, exemplars=1, synth=_ablation_synth(params_dict, both))
        )
    return records


def test_ablation_rows_get_their_own_table(params_dict: dict[str, Any]) -> None:
    rows = table_rows(_ablation_records(params_dict))
    by_point = {r.point: r for r in rows}
    assert by_point["x-1-exonly"].variant == "exemplars only"
    assert by_point["x-1-geo"].variant == "+ geometric"
    assert by_point["x-1-synth"].variant == "+ pasting"
    assert by_point["x-1-nosynth"].variant == "w/o synthesis"
    main = markdown(rows)
    assert "exonly" not in main and "x-1-geo" not in main
    assert "| x-1-synth |" in main and "| x-1-nosynth |" in main and "| y-1-synth |" in main
    assert ablation_markdown(rows) == (
        "Synthesis components (x): DSC (%), mean ± sd (n)\n"
        "\n"
        "| Synthesis | 1 exemplar | 9 exemplars |\n"
        "|---|---:|---:|\n"
        "| w/o synthesis | 50.00 (1) | – |\n"
        "| exemplars only | 55.00 (1) | 30.00 (1) |\n"
        "| + geometric | 60.00 (1) | – |\n"
        "| + intensity | – | – |\n"
        "| + pasting | 75.00 ± 7.07 (2) | – |\n"
    )  # sd of 0.7 and 0.8: 0.1 / sqrt(2)
    assert ablation_markdown(table_rows(parse_show(show_sample()))) == ""


def test_ablation_table_with_the_intensity_variant_is_one_table(
    params_dict: dict[str, Any],
) -> None:
    text = ablation_markdown(table_rows(_ablation_records(params_dict, geo_int=True)))
    assert text.count("Synthesis components") == 1
    assert "| + intensity | 65.00 (1) | – |" in text


def test_write_report_adds_the_ablation_table_when_there_are_ablation_rows(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    rows = table_rows(_ablation_records(params_dict))
    table, plot = write_report(rows, tmp_path / "out")
    text = table.read_text()
    assert text == markdown(rows) + "\n" + ablation_markdown(rows)
    assert text.count("Synthesis components (x)") == 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(plot)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_plot_of_pooled_rows_is_a_png(tmp_path: Path) -> None:
    rows = table_rows(_pooled_records(), lambda record: CASES.get(record.name))
    _, plot = write_report(rows, tmp_path)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(plot).ndim == 3


# --- experiment files at their commit ----------------------------------------------------------


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def test_file_at_reads_a_file_of_a_commit(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "reports").mkdir()
    (tmp_path / PER_CASE).write_text(PER_CASE_TEXT)
    _git(tmp_path, "add", PER_CASE)
    _git(tmp_path, "commit", "-q", "-m", "scores")
    rev = _git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / PER_CASE).write_text("changed in the workspace\n")
    assert file_at(tmp_path, rev, PER_CASE) == PER_CASE_TEXT  # the commit's, not the workspace's
    assert file_at(tmp_path, rev, "reports/missing.csv") is None
    assert file_at(tmp_path, "0" * 40, PER_CASE) is None
    record = ExpRecord("x-9-synth", rev, "base", "success", "t")
    assert case_reader(tmp_path)(record) == pytest.approx({"c1": 0.7, "c2": 0.45})
    other = ExpRecord("x-9-synth", "0" * 40, "base", "success", "t")
    assert case_reader(tmp_path)(other) is None


def test_dvc_env_puts_the_current_directory_first_on_the_import_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONPATH", f"/some/where{os.pathsep}/else")
    assert dvc_env()["PYTHONPATH"] == os.pathsep.join([".", "/some/where", "/else"])
    monkeypatch.delenv("PYTHONPATH")
    assert dvc_env()["PYTHONPATH"] == "."
    monkeypatch.setenv("PYTHONPATH", "")
    assert dvc_env()["PYTHONPATH"] == "."
