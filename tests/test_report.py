"""`fewsam report`: reading `dvc exp show --json`, the paper's table and plot, headline metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import FewsamError
from evaluate import reports
from evaluate.protocols import Summary
from fewsam.exp_records import DvcError, ExpRecord, parse_show, read_experiments
from fewsam.paper_report import (
    FEWSAM,
    NO_SYNTH,
    ZERO_SHOT,
    markdown,
    metric,
    table_rows,
    write_report,
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


def test_table_rows_newest_per_point_zero_shot_first_failed_skipped() -> None:
    rows = table_rows(parse_show(show_sample()))
    assert [(r.method, r.exemplars, r.experiment) for r in rows] == [
        (ZERO_SHOT, "", "synapse-all"),
        (NO_SYNTH, "9", "synapse-9-nosynth"),
        (FEWSAM, "9", "synapse-9-synth"),  # newer than old-9-synth
        (NO_SYNTH, "all", "synapse-all"),
    ]
    assert rows[0].dsc == 0.7454 and rows[0].hd95 == 20.0 and rows[0].dsc_prompt_free is None
    assert {r.dataset for r in rows} == {"Synapse"}


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
    assert lines[0].startswith("| Dataset | Method | Exemplars | DSC (%) | HD95 (voxel) |")
    assert lines[2] == "| Synapse | zero-shot SAM | – | 74.54 | 20.00 | – | synapse-all |"
    assert lines[4] == "| Synapse | fewsam | 9 | 79.08 | 12.50 | 50.00 | synapse-9-synth |"
    assert (
        lines[5] == "| Synapse | fewsam w/o synthesis | all | 85.95 | 12.50 | 50.00 | synapse-all |"
    )


def test_write_report_writes_table_and_plot(tmp_path: Path) -> None:
    table, plot = write_report(table_rows(parse_show(show_sample())), tmp_path / "reports")
    assert table.read_text().count("\n") == 6
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
