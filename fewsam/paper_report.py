"""The paper's table and plot from finished DVC experiments (`fewsam report`).

Rows (`fewsam.report_rows`), per dataset: zero-shot SAM with point prompts and with box prompts
(`evaluate.zero_shot_prompts`, scored in every evaluation by default; each taken from the newest
experiment that scored it), then for each exemplar count fewsam w/o synthesis, the U-Net w/o
synthesis, fewsam, the U-Net on the same (synthetic) data, then the full set (`exemplars: all`),
one row per grid point and method with its replicates pooled; U-Net rows exist only where the
baseline was scored. DSC is the mean Dice in percent and HD95 the mean HD95 of the row's model,
for the adapted model in its headline mode (`evaluate.reports.HEADLINE`, prompted like point
zero-shot SAM), each as mean ± sd over replicates with their number n; the prompt-free DSC is a
column of its own (for the U-Net, which takes no prompt, its DSC again). Rows with synthesis get
the paired per-case difference to the same count without synthesis, with its bootstrap 95%
interval. The column "Training" gives the budget of the row's model, mean over replicates:
`300 steps / 120 s` (steps: rows of its log; seconds: sum of the log's per-step wall seconds;
the adapter's log is reports/train_log.csv, the U-Net's reports/baseline_log.csv), "–" for
zero-shot rows and where no log was read; a log without rows (a disabled baseline) counts as none.

Writes `paper_table.md` (the table, then the component ablation's table when there are ablation
experiments) and `dsc_vs_exemplars.png` (DSC against the number of exemplars, one line per grid
prefix and method with ± sd bars, the U-Net with synthesis included, the zero-shot rows and
fewsam's full set as horizontal lines), both atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402

from core.atomic import atomic_path, write_text  # noqa: E402
from core.errors import FewsamError, InputError  # noqa: E402
from evaluate.reports import HEADLINE  # noqa: E402
from fewsam import exp_archive  # noqa: E402
from fewsam.ablation import VARIANTS  # noqa: E402
from fewsam.exp_records import ExpRecord, file_at, read_experiments  # noqa: E402
from fewsam.report_rows import (  # noqa: E402
    FEWSAM,
    NO_SYNTH,
    UNET,
    UNET_NO_SYNTH,
    ZERO_SHOT,
    ZERO_SHOT_ROWS,
    BudgetReader,
    CaseReader,
    Row,
    prefix_of,
    table_rows,
)
from fewsam.report_stats import Summary, case_dice, log_budget  # noqa: E402

TABLE, PLOT = "paper_table.md", "dsc_vs_exemplars.png"
PER_CASE = "reports/per_case.csv"
# Model (as in `ExpRecord.budget`) -> its training log, committed with each experiment.
TRAIN_LOGS = {"adapter": "reports/train_log.csv", "unet": "reports/baseline_log.csv"}


def _cell(s: Summary, scale: float = 1.0) -> str:
    if s.mean is None:
        return "–"
    if s.sd is None:
        return f"{s.mean * scale:.2f}"
    return f"{s.mean * scale:.2f} ± {s.sd * scale:.2f}"


def _diff(row: Row) -> str:
    d = row.diff
    if d is None:
        return "–"
    return f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _budget(row: Row) -> str:
    if row.budget is None:
        return "–"
    steps, seconds = row.budget
    return f"{steps:.0f} steps / {_seconds(seconds)} s"


def markdown(rows: Sequence[Row]) -> str:
    """The main table: DSC in percent, HD95 in the unit of the evaluation protocol."""
    units = {r.hd95_unit for r in rows if r.hd95_unit}
    hd95 = f"HD95 ({units.pop()})" if len(units) == 1 else "HD95"
    lines = [
        f"| Dataset | Method | Exemplars | DSC (%) | {hd95} | DSC prompt-free (%) | n | "
        "ΔDSC vs w/o synthesis [95% CI] | Training | Grid point |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.ablation_only:
            continue
        n = str(r.dsc.n) if r.method not in ZERO_SHOT_ROWS else "–"
        lines.append(
            f"| {r.dataset} | {r.method} | {r.exemplars or '–'} | {_cell(r.dsc, 100)} | "
            f"{_cell(r.hd95)} | {_cell(r.dsc_prompt_free, 100)} | {n} | {_diff(r)} | "
            f"{_budget(r)} | {r.point} |"
        )
    return "\n".join(lines) + "\n"


def ablation_markdown(rows: Sequence[Row]) -> str:
    """The component ablation: DSC (%) mean ± sd (n) per variant and exemplar count, for each
    prefix that ran one; empty when none did."""
    prefixes = sorted({prefix_of(r.point) for r in rows if r.ablation_only})
    out = []
    for prefix in prefixes:
        mine = [r for r in rows if prefix_of(r.point) == prefix and r.method not in ZERO_SHOT_ROWS]
        counts = sorted({r.exemplars for r in mine if r.ablation_only}, key=int)
        out += [
            f"Synthesis components ({prefix}): DSC (%), mean ± sd (n)",
            "",
            "| Synthesis | "
            + " | ".join(f"{c} exemplar{'' if c == '1' else 's'}" for c in counts)
            + " |",
            "|---|" + "---:|" * len(counts),
        ]
        for label in ("w/o synthesis", *(v[0] for v in VARIANTS)):
            cells = []
            for c in counts:
                hit = [r for r in mine if r.exemplars == c and r.variant == label]
                cells.append(f"{_cell(hit[0].dsc, 100)} ({hit[0].dsc.n})" if hit else "–")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def plot(rows: Sequence[Row], path: Path) -> None:
    """DSC (%) against the number of exemplars, one panel per dataset, written atomically."""
    rows = [r for r in rows if not r.ablation_only]
    datasets = sorted({r.dataset for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.0), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        # The U-Net without synthesis is left to the table: one baseline line per prefix.
        mine = [
            r
            for r in rows
            if r.dataset == dataset and r.dsc.mean is not None and r.method != UNET_NO_SYNTH
        ]
        counts: set[int] = set()
        series = sorted({(prefix_of(r.point), r.method) for r in mine if r.exemplars.isdigit()})
        for prefix, method in series:
            points = sorted(
                (int(r.exemplars), 100 * r.dsc.mean, 100 * (r.dsc.sd or 0.0))  # type: ignore[operator]
                for r in mine
                if r.method == method and r.exemplars.isdigit() and prefix_of(r.point) == prefix
            )
            counts.update(x for x, _, _ in points)
            xs, ys, sds = zip(*points, strict=True)
            style = {FEWSAM: "o-", UNET: "^-."}.get(method, "s--")
            ax.errorbar(xs, ys, yerr=sds, fmt=style, capsize=3, label=f"{method} ({prefix})")
        for r in mine:
            if r.method in ZERO_SHOT_ROWS:
                ls = ":" if r.method == ZERO_SHOT else "--"
                ax.axhline(100 * r.dsc.mean, color="grey", ls=ls, label=r.method)  # type: ignore[operator]
            elif r.exemplars == "all" and r.method != UNET:
                label = "full set" + (" (w/o synthesis)" if r.method == NO_SYNTH else "")
                ax.axhline(100 * r.dsc.mean, color="black", ls="-.", label=label)  # type: ignore[operator]
        if counts:
            ax.set_xscale("log")
            ax.set_xticks(sorted(counts), [str(c) for c in sorted(counts)])
            ax.minorticks_off()
        ax.set_xlabel("exemplars (labeled slices)")
        ax.set_ylabel("DSC (%), mean ± sd over replicates")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)


def write_report(rows: Sequence[Row], out: Path) -> tuple[Path, Path]:
    """Write the table(s) and the plot under `out`; returns their paths."""
    if not rows:
        raise FewsamError(
            "no finished experiment with metrics: run `fewsam grid --run` (or `dvc exp run`) first"
        )
    table, figure = out / TABLE, out / PLOT
    ablation = ablation_markdown(rows)
    write_text(table, markdown(rows) + ("\n" + ablation if ablation else ""))
    plot(rows, figure)
    return table, figure


def case_reader(root: Path) -> CaseReader:
    """Per-case headline Dice of an experiment, from the per_case.csv committed with it."""

    def read(record: ExpRecord) -> dict[str, float] | None:
        if record.cases is not None:
            return record.cases
        text = file_at(root, record.rev, PER_CASE)
        return case_dice(text, HEADLINE) if text else None

    return read


def budget_reader(root: Path) -> BudgetReader:
    """Training budget of an experiment, {model: [steps, seconds]}, from the training logs
    committed with it (TRAIN_LOGS); None when it has none with a row."""

    def read(record: ExpRecord) -> dict[str, list[float]] | None:
        if record.budget is not None:
            return record.budget
        budget: dict[str, list[float]] = {}
        for model, path in TRAIN_LOGS.items():
            text = file_at(root, record.rev, path)
            if text is None:
                continue
            try:
                steps, seconds = log_budget(text)
            except ValueError as e:
                raise InputError(
                    f"{record.rev[:7]}:{path}", f"{e} (experiment {record.name})"
                ) from None
            if steps:  # a disabled baseline writes a log without rows
                budget[model] = [steps, round(seconds, 3)]  # to the ms: a readable archive
        return budget or None

    return read


def run(
    root: Path, out: Path, all_commits: bool = False, archive: Path | None = None
) -> tuple[Path, Path]:
    """`fewsam report`: read the experiments of the project at `root`, write the report.

    With `archive`, the finished experiments are first merged into that file
    (`fewsam.exp_archive`) and the report covers everything it holds.
    """
    records = read_experiments(root, all_commits)
    reader, budgets = case_reader(root), budget_reader(root)
    if archive is not None:
        records = exp_archive.merge(exp_archive.load(archive), records, reader, budgets)
        exp_archive.save(archive, records)
    return write_report(table_rows(records, reader, budgets), out)
