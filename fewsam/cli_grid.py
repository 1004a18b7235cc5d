"""The top-level `grid` and `report` commands: parsing only.

They live outside `evaluate/` so that changing them does not change the evaluate stage's code
dependency (and re-run every evaluation).
"""

from __future__ import annotations

from pathlib import Path

import typer

from core.cli_support import expected_errors


@expected_errors
def grid(
    dataset: str | None = typer.Option(
        None,
        help="Protocol whose exemplar counts are used: synapse | brats (default: the params').",
    ),
    exemplars: list[int] = typer.Option(
        [], "--exemplars", help="Exemplar counts instead of the protocol's (repeat the option)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", "-S", help="Extra KEY=VALUE override for every experiment (repeatable)."
    ),
    prefix: str | None = typer.Option(None, help="Experiment name prefix (default: the dataset)."),
    seeds: int = typer.Option(
        1, min=1, help="Replicates per point (replicate 0..N-1; names end in -s<r> when N > 1)."
    ),
    ablation: bool = typer.Option(
        False, help="Queue the synthesis component ablation (2 smallest counts) instead."
    ),
    missing: bool = typer.Option(
        False, help="Queue only points without a finished experiment (completes a cut queue)."
    ),
    archive: Path | None = typer.Option(
        None,
        help="With --missing: experiments in this archive (fewsam report --archive) count too.",
    ),
    force: bool = typer.Option(False, help="Replace experiments that have the same names."),
    run: bool = typer.Option(False, "--run", help="Run the queue to its end and wait."),
    jobs: int = typer.Option(1, min=1, help="Experiments run at once with --run."),
    dry_run: bool = typer.Option(False, help="Print the `dvc exp run --queue` commands only."),
) -> None:
    """Queue the paper's grid as DVC experiments: exemplar counts x synthesis on/off + full set."""
    from fewsam import experiments

    options = experiments.GridOptions(seeds, ablation, missing, force, run, jobs, dry_run, archive)
    experiments.run(Path.cwd(), dataset, exemplars, set_, prefix, options, typer.echo)


@expected_errors
def report(
    out: Path = typer.Option(Path("reports"), help="Folder for the table and the plot."),
    all_commits: bool = typer.Option(False, help="Also experiments of other commits."),
    archive: Path | None = typer.Option(
        None, help="Merge finished experiments into this JSON archive and report all it holds."
    ),
    docs: bool = typer.Option(
        False,
        "--docs",
        help="Instead: regenerate the result tables of README.md, BENCHMARKS.md and docs/*.md "
        "(the blocks between `<!-- table:NAME:start -->` and `<!-- table:NAME:end -->`) from "
        "the committed records: docs/grid_cpu_records.json, docs/bench_refine_litemedsam.json, "
        "reports/metrics.json.",
    ),
    check: bool = typer.Option(
        False, "--check", help="With --docs: write nothing; exit 1 when a table is stale."
    ),
) -> None:
    """Collect finished DVC experiments into the paper's table and a DSC-vs-exemplars plot."""
    if docs:
        from fewsam import doc_tables

        stale = doc_tables.update(Path("."), check)
        for page in stale:
            typer.echo(f"{page}: {'stale' if check else 'updated'}")
        raise typer.Exit(1 if check and stale else 0)
    from fewsam import paper_report

    for path in paper_report.run(Path.cwd(), out, all_commits, archive):
        typer.echo(str(path))
