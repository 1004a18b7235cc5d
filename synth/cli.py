"""Typer commands of the `data` and `synth` sub-apps: argument parsing only, work is in stages."""

from __future__ import annotations

from pathlib import Path

import typer

from synth.cli_support import PARAMS_OPTION, expected_errors, new_app, read_params

data_app = new_app("Datasets: write the phantom default, validate a dataset.")
app = new_app("Exemplars and exemplar-guided synthesis.")


@data_app.command("phantom")
@expected_errors
def data_phantom(
    params: Path = PARAMS_OPTION,
    out: Path = typer.Option(Path("data/phantom"), help="Folder for the phantom datasets."),
) -> None:
    """Write deterministic phantom scans in the Synapse and BraTS layouts."""
    from synth import phantom

    phantom.run(read_params(params), out)


@data_app.command("check")
@expected_errors
def data_check(
    params: Path = PARAMS_OPTION,
    root: Path | None = typer.Option(None, help="Dataset folder (default: dataset.root)."),
) -> None:
    """Validate the configured dataset; every problem is listed with its file."""
    from synth import check

    check.run(read_params(params), root)


@app.command("extract")
@expected_errors
def synth_extract(
    params: Path = PARAMS_OPTION,
    out: Path = typer.Option(Path("data/exemplars.h5"), help="Exemplars HDF5."),
    csv: Path = typer.Option(Path("data/exemplars.csv"), help="One row per exemplar."),
) -> None:
    """Stage 1: pick the labeled exemplar slices and the unlabeled background pool."""
    from synth import exemplars

    exemplars.run(read_params(params), out, csv)


@app.command("run")
@expected_errors
def synth_run(
    params: Path = PARAMS_OPTION,
    exemplars: Path = typer.Option(Path("data/exemplars.h5"), help="Exemplars HDF5 (stage 1)."),
    out: Path = typer.Option(Path("data/synthetic.h5"), help="Synthetic set HDF5."),
) -> None:
    """Stage 2: synthesize the labeled training set from the exemplars."""
    from synth import synthesize

    synthesize.run(read_params(params), exemplars, out)


@app.command("preview")
@expected_errors
def synth_preview(
    params: Path = PARAMS_OPTION,
    n: int = typer.Option(16, "--n", min=1, help="Number of samples shown."),
    out: Path = typer.Option(Path("reports/synth_preview.png"), help="PNG to write."),
    seed: int | None = typer.Option(
        None, help="Show n samples drawn with this seed instead of the first n."
    ),
    synthetic: Path = typer.Option(
        Path("data/synthetic.h5"), help="Synthetic set; synthesized on the fly when missing."
    ),
    exemplars: Path = typer.Option(Path("data/exemplars.h5"), help="Exemplars HDF5."),
) -> None:
    """Render synthetic samples next to their exemplars, labels overlaid, as a PNG grid."""
    from synth import preview

    written = preview.run(read_params(params), exemplars, synthetic, out, n, seed)
    typer.echo(f"wrote {written}")


@app.command("stats")
@expected_errors
def synth_stats(
    exemplars: Path = typer.Option(Path("data/exemplars.h5"), help="Exemplars HDF5."),
    synthetic: Path = typer.Option(Path("data/synthetic.h5"), help="Synthetic set HDF5."),
) -> None:
    """Per class: slices and pixels carrying it, in the exemplars and in the synthetic set."""
    from synth import stats

    typer.echo(stats.run(exemplars, synthetic))
