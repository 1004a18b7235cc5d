"""The rows of `fewsam report`, from experiment records: one row per grid point, replicates pooled.

A grid point is an experiment name without its replicate suffix (`synapse-9-synth-s2` belongs
to `synapse-9-synth`); per replicate name the newest experiment counts. A row holds mean ± sd
over the replicates of DSC, HD95 and the prompt-free DSC. A row with synthesis on gets the paired
difference to its twin without synthesis (`<prefix>-<n>-nosynth`, else any row without synthesis
at the same dataset and count) with a bootstrap interval (`fewsam.report_stats`).

The supervised baseline (a U-Net trained on the same training set, flat keys `unet_dsc` and
`unet_hd95`) gets a row of its own at each grid point where any replicate scored it: UNET for
points with synthesis, UNET_NO_SYNTH for points without; replicates from before the baseline
existed are left out of its n. It needs no prompt, so its DSC fills the prompt-free column too,
and it has no paired difference (its per-case Dice is not kept). Within an exemplar count the
order is METHOD_ORDER: fewsam w/o synthesis, U-Net w/o synthesis, fewsam, U-Net, each by point.

With a budget reader, each trained row gets its training budget: mean steps and mean seconds
over the replicates whose log was read, of the adapter for fewsam rows and of the U-Net for
U-Net rows.

Rows of the component ablation (`fewsam.ablation`: names ending in -exonly, -geo, -geo-int) are
kept apart for their own table and get no U-Net row; `-synth` rows are the full method and
appear in both.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewsam.ablation import VARIANTS, variant
from fewsam.exp_records import ExpRecord
from fewsam.report_stats import Interval, Summary, bootstrap_mean_ci, paired_differences, summarize

ZERO_SHOT, NO_SYNTH, FEWSAM = "zero-shot SAM", "fewsam w/o synthesis", "fewsam"
ZERO_SHOT_BOX = "zero-shot SAM (box)"
UNET, UNET_NO_SYNTH = "U-Net on the same data", "U-Net w/o synthesis"
# The order of the trained rows within one dataset and exemplar count.
METHOD_ORDER = (NO_SYNTH, UNET_NO_SYNTH, FEWSAM, UNET)
# Zero-shot row -> its flat (Dice, HD95) keys: point prompts (the row named plainly, as before box
# prompts existed), then box prompts.
ZERO_SHOT_ROWS = {
    ZERO_SHOT: ("zero_shot_dsc", "zero_shot_hd95"),
    ZERO_SHOT_BOX: ("zero_shot_box_dsc", "zero_shot_box_hd95"),
}
DATASET_NAMES = {"synapse": "Synapse", "synapse-npz": "Synapse", "brats": "BraTS 2018"}
# Flat metrics.json key -> the nested key it repeats (for experiments run before the flat keys).
FALLBACK = {
    "dsc": ("adapted", "prompted", "dice"),
    "hd95": ("adapted", "prompted", "hd95"),
    "dsc_prompt_free": ("adapted", "prompt_free", "dice"),
    "zero_shot_dsc": ("zero_shot", "dice"),
    "zero_shot_hd95": ("zero_shot", "hd95"),
    "zero_shot_box_dsc": ("zero_shot_box", "dice"),
    "zero_shot_box_hd95": ("zero_shot_box", "hd95"),
    "unet_dsc": ("methods", "unet", "dice"),
    "unet_hd95": ("methods", "unet", "hd95"),
}
_REPLICATE = re.compile(r"^(?P<point>.+)-s(?P<r>\d+)$")
_POINT = re.compile(
    r"^(?P<prefix>.+?)-(?:\d+-(?:nosynth|" + "|".join(v[1] for v in VARIANTS) + r")|all)$"
)
_PARTIAL = tuple(f"-{slug}" for _, slug, on in VARIANTS[:-1])
# Per-case Dice of one experiment, read from its commit: (experiment) -> {case: dice} or None.
CaseReader = Callable[[ExpRecord], dict[str, float] | None]
# Training budget of one experiment: (experiment) -> {model: [steps, seconds]} or None; models
# "adapter" (fewsam) and "unet" (the baseline), as `ExpRecord.budget`.
BudgetReader = Callable[[ExpRecord], dict[str, list[float]] | None]


def metric(metrics: dict[str, Any], key: str) -> float | None:
    """A headline number of one experiment's metrics.json, or None."""
    value: Any = metrics.get(key)
    if value is None and key in FALLBACK:
        value = metrics
        for part in FALLBACK[key]:
            value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def dataset_name(params: dict[str, Any]) -> str:
    """Synapse, BraTS 2018, or the folder name of a `nifti` dataset."""
    dataset = params.get("dataset") or {}
    fmt = str(dataset.get("format", "?"))
    return DATASET_NAMES.get(fmt) or Path(str(dataset.get("root", fmt))).name or fmt


def prefix_of(point: str) -> str:
    """The grid prefix of a point: `synapse-9-geo-int` -> `synapse`; a name that is no grid
    point (a workspace experiment) is its own prefix."""
    m = _POINT.match(point)
    return m["prefix"] if m else point


def point_of(name: str) -> tuple[str, int]:
    """(grid point, replicate) of an experiment name: `a-9-synth-s2` -> (`a-9-synth`, 2)."""
    m = _REPLICATE.match(name)
    return (m["point"], int(m["r"])) if m else (name, 0)


@dataclass(frozen=True)
class Row:
    """One table row. exemplars: "" (zero-shot), "9", "all". Dice as fractions. budget: (mean
    steps, mean seconds) of training the row's model, None when unknown or not trained."""

    dataset: str
    method: str
    exemplars: str
    point: str
    variant: str
    dsc: Summary
    hd95: Summary
    dsc_prompt_free: Summary
    hd95_unit: str
    experiments: tuple[str, ...]
    diff: Interval | None = None
    budget: tuple[float, float] | None = None

    @property
    def model(self) -> str:
        """The key of the row's model in a budget: "unet" for U-Net rows, else "adapter"."""
        return "unet" if self.method in (UNET, UNET_NO_SYNTH) else "adapter"

    @property
    def ablation_only(self) -> bool:
        """A partial-synthesis row of the component ablation (not the method as published)."""
        return self.point.endswith(_PARTIAL)


def _newest_per_name(records: Sequence[ExpRecord]) -> list[ExpRecord]:
    newest: dict[str, ExpRecord] = {}
    for r in records:
        if r.state != "success" or metric(r.metrics, "dsc") is None:
            continue
        if r.name not in newest or r.timestamp >= newest[r.name].timestamp:
            newest[r.name] = r
    return list(newest.values())


def _synthesis_on(params: dict[str, Any]) -> bool:
    return bool((params.get("synth") or {}).get("enabled", True))


def _row(point: str, runs: list[ExpRecord]) -> Row:
    first = runs[0]
    synth = first.params.get("synth") or {}
    enabled = _synthesis_on(first.params)
    return Row(
        dataset=dataset_name(first.params),
        method=FEWSAM if enabled else NO_SYNTH,
        exemplars=str(first.params.get("exemplars", "?")),
        point=point,
        variant=variant(synth) if enabled else "w/o synthesis",
        dsc=summarize([metric(r.metrics, "dsc") for r in runs]),
        hd95=summarize([metric(r.metrics, "hd95") for r in runs]),
        dsc_prompt_free=summarize([metric(r.metrics, "dsc_prompt_free") for r in runs]),
        hd95_unit=str(first.metrics.get("hd95_unit", "")),
        experiments=tuple(sorted(r.name for r in runs)),
    )


def _unet_row(point: str, runs: list[ExpRecord]) -> Row | None:
    """The U-Net row of a grid point, None when no replicate scored the U-Net."""
    scored = [r for r in runs if metric(r.metrics, "unet_dsc") is not None]
    if not scored or point.endswith(_PARTIAL):
        return None
    first = scored[0]
    dsc = summarize([metric(r.metrics, "unet_dsc") for r in scored])
    return Row(
        dataset=dataset_name(first.params),
        method=UNET if _synthesis_on(first.params) else UNET_NO_SYNTH,
        exemplars=str(first.params.get("exemplars", "?")),
        point=point,
        variant="",
        dsc=dsc,
        hd95=summarize([metric(r.metrics, "unet_hd95") for r in scored]),
        dsc_prompt_free=dsc,  # the U-Net takes no prompt
        hd95_unit=str(first.metrics.get("hd95_unit", "")),
        experiments=tuple(sorted(r.name for r in scored)),
    )


def _zero_shot(records: Sequence[ExpRecord]) -> list[Row]:
    """Per dataset and prompt (point: ZERO_SHOT, box: ZERO_SHOT_BOX), zero-shot SAM from the
    newest experiment that scored it (it does not depend on the replicate: same base model, same
    test cases, same prompts)."""
    rows = []
    for method, (dsc_key, hd95_key) in ZERO_SHOT_ROWS.items():
        newest: dict[str, ExpRecord] = {}
        for r in records:
            if metric(r.metrics, dsc_key) is None:
                continue
            dataset = dataset_name(r.params)
            if dataset not in newest or r.timestamp >= newest[dataset].timestamp:
                newest[dataset] = r
        rows += [
            Row(
                dataset,
                method,
                "",
                r.name,
                "",
                summarize([metric(r.metrics, dsc_key)]),
                summarize([metric(r.metrics, hd95_key)]),
                Summary(None, None, 0),
                str(r.metrics.get("hd95_unit", "")),
                (r.name,),
            )
            for dataset, r in newest.items()
        ]
    return rows


def _twin(row: Row, rows: Sequence[Row]) -> Row | None:
    """The row without synthesis that `row` is compared with (see the module docstring)."""
    off = [r for r in rows if r.method == NO_SYNTH and (r.dataset, r.exemplars) == (
        row.dataset, row.exemplars)]  # fmt: skip
    named = [r for r in off if r.point == re.sub(r"-[a-z-]+$", "-nosynth", row.point)]
    return (named or sorted(off, key=lambda r: r.point) or [None])[0]


def _with_diff(row: Row, twin: Row, by_name: dict[str, ExpRecord], read_cases: CaseReader) -> Row:
    def cases(r: Row) -> dict[int, dict[str, float]]:
        out = {}
        for name in r.experiments:
            values = read_cases(by_name[name])
            if values:
                out[point_of(name)[1]] = values
        return out

    diffs = paired_differences(cases(row), cases(twin))
    if not diffs:
        return row
    return dataclasses.replace(row, diff=bootstrap_mean_ci(diffs))


def _with_budget(row: Row, budgets: dict[str, dict[str, list[float]] | None]) -> Row:
    """`row` with the mean budget of its model over the replicates that logged one."""
    logs = [b[row.model] for name in row.experiments if (b := budgets[name]) and row.model in b]
    if not logs:
        return row
    steps, seconds = (sum(values) / len(logs) for values in zip(*logs, strict=True))
    return dataclasses.replace(row, budget=(steps, seconds))


def _sort_key(row: Row) -> tuple[str, int, float, int, str]:
    if row.method in ZERO_SHOT_ROWS:  # point, then box
        return (row.dataset, 0, 0.0, list(ZERO_SHOT_ROWS).index(row.method), "")
    count = float(row.exemplars) if row.exemplars.isdigit() else math.inf  # "all" last
    return (row.dataset, 1, count, METHOD_ORDER.index(row.method), row.point)


def table_rows(
    records: Sequence[ExpRecord],
    read_cases: CaseReader | None = None,
    read_budget: BudgetReader | None = None,
) -> list[Row]:
    """Every row (zero-shot first per dataset, point then box, then by count in METHOD_ORDER);
    unfinished or unscored experiments are skipped. With `read_cases`, rows with synthesis on
    get their paired difference to their twin without synthesis; with `read_budget`, trained
    rows get their training budget."""
    runs = _newest_per_name(records)
    by_point: dict[str, list[ExpRecord]] = defaultdict(list)
    for r in runs:
        by_point[point_of(r.name)[0]].append(r)
    rows = [_row(point, group) for point, group in by_point.items()]
    rows += [u for point, group in by_point.items() if (u := _unet_row(point, group))]
    if read_cases is not None:
        by_name = {r.name: r for r in runs}
        rows = [
            _with_diff(row, twin, by_name, read_cases)
            if row.method == FEWSAM and (twin := _twin(row, rows)) is not None
            else row
            for row in rows
        ]
    if read_budget is not None:
        budgets = {r.name: read_budget(r) for r in runs}
        rows = [_with_budget(row, budgets) for row in rows]
    return sorted(rows + _zero_shot(runs), key=_sort_key)
