"""The paper's table and plot from finished DVC experiments (`fewsam report`).

Rows, per dataset: zero-shot SAM (scored in every evaluation; taken from the newest experiment),
then for each exemplar count fewsam without and with synthesis, then the full set
(`exemplars: all`). DSC is the mean Dice in percent and HD95 the mean HD95 of the adapted model
in its headline mode (`evaluate.reports.HEADLINE`, prompted like zero-shot SAM); the prompt-free
DSC is a column of its own. When several experiments share a row, the newest one counts.

Writes `paper_table.md` and `dsc_vs_exemplars.png` (DSC against the number of exemplars, with and
without synthesis, zero-shot SAM and the full set as horizontal lines), both atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402

from core.atomic import atomic_path, write_text  # noqa: E402
from core.errors import FewsamError  # noqa: E402
from fewsam.exp_records import ExpRecord, read_experiments  # noqa: E402

ZERO_SHOT, NO_SYNTH, FEWSAM = "zero-shot SAM", "fewsam w/o synthesis", "fewsam"
DATASET_NAMES = {"synapse": "Synapse", "synapse-npz": "Synapse", "brats": "BraTS 2018"}
TABLE, PLOT = "paper_table.md", "dsc_vs_exemplars.png"
# Flat metrics.json key -> the nested key it repeats (for experiments run before the flat keys).
FALLBACK = {
    "dsc": ("adapted", "prompted", "dice"),
    "hd95": ("adapted", "prompted", "hd95"),
    "dsc_prompt_free": ("adapted", "prompt_free", "dice"),
    "zero_shot_dsc": ("zero_shot", "dice"),
    "zero_shot_hd95": ("zero_shot", "hd95"),
}


@dataclass(frozen=True)
class Row:
    """One table row. exemplars: "" (zero-shot), "9", "all". Scores are fractions (Dice)."""

    dataset: str
    method: str
    exemplars: str
    dsc: float | None
    hd95: float | None
    dsc_prompt_free: float | None
    hd95_unit: str
    experiment: str


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


def _sort_key(row: Row) -> tuple[str, int, float, int]:
    if row.method == ZERO_SHOT:
        return (row.dataset, 0, 0.0, 0)
    count = float(row.exemplars) if row.exemplars.isdigit() else math.inf  # "all" last
    return (row.dataset, 1, count, 0 if row.method == NO_SYNTH else 1)


def table_rows(records: Sequence[ExpRecord]) -> list[Row]:
    """The table's rows from experiment records; unfinished or unscored experiments are skipped."""
    newest: dict[tuple[str, str, str], tuple[str, Row]] = {}
    zero_shot: dict[str, tuple[str, Row]] = {}
    for r in records:
        if r.state != "success" or metric(r.metrics, "dsc") is None:
            continue
        dataset = dataset_name(r.params)
        enabled = bool((r.params.get("synth") or {}).get("enabled", True))
        unit = str(r.metrics.get("hd95_unit", ""))
        row = Row(
            dataset=dataset,
            method=FEWSAM if enabled else NO_SYNTH,
            exemplars=str(r.params.get("exemplars", "?")),
            dsc=metric(r.metrics, "dsc"),
            hd95=metric(r.metrics, "hd95"),
            dsc_prompt_free=metric(r.metrics, "dsc_prompt_free"),
            hd95_unit=unit,
            experiment=r.name,
        )
        key = (dataset, row.method, row.exemplars)
        if key not in newest or r.timestamp >= newest[key][0]:
            newest[key] = (r.timestamp, row)
        if metric(r.metrics, "zero_shot_dsc") is not None:
            if dataset not in zero_shot or r.timestamp >= zero_shot[dataset][0]:
                zs = Row(
                    dataset,
                    ZERO_SHOT,
                    "",
                    metric(r.metrics, "zero_shot_dsc"),
                    metric(r.metrics, "zero_shot_hd95"),
                    None,
                    unit,
                    r.name,
                )
                zero_shot[dataset] = (r.timestamp, zs)
    rows = [row for _, row in newest.values()] + [row for _, row in zero_shot.values()]
    return sorted(rows, key=_sort_key)


def _cell(value: float | None, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value * scale:.2f}"


def markdown(rows: Sequence[Row]) -> str:
    """The Markdown table: DSC in percent, HD95 in the unit of the evaluation protocol."""
    units = {r.hd95_unit for r in rows if r.hd95_unit}
    hd95 = f"HD95 ({units.pop()})" if len(units) == 1 else "HD95"
    lines = [
        f"| Dataset | Method | Exemplars | DSC (%) | {hd95} | DSC prompt-free (%) | Experiment |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        unit = f" {r.hd95_unit}" if hd95 == "HD95" and r.hd95_unit and r.hd95 is not None else ""
        lines.append(
            f"| {r.dataset} | {r.method} | {r.exemplars or '–'} | {_cell(r.dsc, 100)} | "
            f"{_cell(r.hd95)}{unit} | {_cell(r.dsc_prompt_free, 100)} | {r.experiment} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Row], path: Path) -> None:
    """DSC (%) against the number of exemplars, one panel per dataset, written atomically."""
    datasets = sorted({r.dataset for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.0 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        mine = [r for r in rows if r.dataset == dataset and r.dsc is not None]
        counts: set[int] = set()
        for method, style in ((FEWSAM, "o-"), (NO_SYNTH, "s--")):
            points = sorted(
                (int(r.exemplars), 100 * r.dsc)  # type: ignore[operator]
                for r in mine
                if r.method == method and r.exemplars.isdigit()
            )
            if points:
                counts.update(x for x, _ in points)
                ax.plot(*zip(*points, strict=True), style, label=method)
        for r in mine:
            if r.method == ZERO_SHOT:
                ax.axhline(100 * r.dsc, color="grey", ls=":", label=ZERO_SHOT)  # type: ignore[operator]
            elif r.exemplars == "all":
                label = "full set" + (" (w/o synthesis)" if r.method == NO_SYNTH else "")
                ax.axhline(100 * r.dsc, color="black", ls="-.", label=label)  # type: ignore[operator]
        if counts:
            ax.set_xscale("log")
            ax.set_xticks(sorted(counts), [str(c) for c in sorted(counts)])
            ax.minorticks_off()
        ax.set_xlabel("exemplars (labeled slices)")
        ax.set_ylabel("DSC (%)")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)


def write_report(rows: Sequence[Row], out: Path) -> tuple[Path, Path]:
    """Write the table and the plot under `out`; returns their paths."""
    if not rows:
        raise FewsamError(
            "no finished experiment with metrics: run `fewsam grid --run` (or `dvc exp run`) first"
        )
    table, figure = out / TABLE, out / PLOT
    write_text(table, markdown(rows))
    plot(rows, figure)
    return table, figure


def run(root: Path, out: Path, all_commits: bool = False) -> tuple[Path, Path]:
    """`fewsam report`: read the experiments of the project at `root`, write the report."""
    return write_report(table_rows(read_experiments(root, all_commits)), out)
