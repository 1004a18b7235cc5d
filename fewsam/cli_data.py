"""Typer commands of the `data` sub-app: argument parsing only."""

from __future__ import annotations

from pathlib import Path

import typer

from core.cli_support import PARAMS_OPTION, expected_errors, new_app, read_params

app = new_app("Datasets: write the phantom default, validate a dataset.")


@app.command("phantom")
@expected_errors
def data_phantom(
    params: Path = PARAMS_OPTION,
    out: Path = typer.Option(Path("data/phantom"), help="Folder for the phantom datasets."),
) -> None:
    """Write deterministic phantom scans in the Synapse and BraTS layouts."""
    from phantom import generate as phantom

    phantom.run(read_params(params), out)


@app.command("check")
@expected_errors
def data_check(
    params: Path = PARAMS_OPTION,
    root: Path | None = typer.Option(None, help="Dataset folder (default: dataset.root)."),
) -> None:
    """Validate the configured dataset; every problem is listed with its file."""
    from synth import check

    check.run(read_params(params), root)
