"""Typer commands of `evaluate` and the top-level `predict`: parsing only."""

from __future__ import annotations

from pathlib import Path

import typer

from core.cli_support import PARAMS_OPTION, expected_errors, new_app, read_params

app = new_app("Score the adapted model and zero-shot SAM on the test volumes.")

ADAPTER_OPTION = typer.Option(Path("models/adapter"), help="Adapter folder (from `train run`).")


@app.command("run")
@expected_errors
def evaluate_run(
    params: Path = PARAMS_OPTION,
    adapter: Path = ADAPTER_OPTION,
    out: Path = typer.Option(Path("reports"), help="Folder for metrics, tables and overlays."),
) -> None:
    """Stage 4: Dice and HD95 per class on the test volumes, adapted and zero-shot."""
    from evaluate import run

    run.run(read_params(params), adapter, out)


@expected_errors
def predict(
    adapter: Path = ADAPTER_OPTION,
    input: Path = typer.Option(
        ..., "--input", "-i", help="A scan (.nii.gz, 3D or 4D), a case folder, or a folder of them."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="A .nii.gz file for one scan, else a folder."
    ),
    params: Path = PARAMS_OPTION,
    checkpoint: str | None = typer.Option(
        None, help="Base SAM weights, when not at the path the adapter recorded."
    ),
) -> None:
    """Segment new scans with a trained adapter; label maps keep the input's affine and header."""
    from evaluate import predict as predict_stage

    for path in predict_stage.run(read_params(params), adapter, input, output, checkpoint):
        typer.echo(str(path))
